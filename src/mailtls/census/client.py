"""The only code that talks to Shodan: ``shodan.Shodan.count`` made polite, bounded and secret-safe.

The ``shodan`` library (1.31) sends the API key in the query string, has no timeout, reads
bodies without a size bound, and folds HTTP statuses into message strings. This wrapper:

- mounts a transport adapter on the library's ``requests`` session that sets connect/read
  timeouts, reads at most ``max_bytes`` of a body, and records the real HTTP status;
- waits between requests (one per second by default) and retries timeouts, 5xx and 429 a bounded
  number of times with exponential backoff (``Retry-After`` honoured up to a cap);
- maps failures to :class:`~mailtls.census.model.Failure` kinds with messages free of the key;
- installs a logging filter on the ``urllib3``/``requests``/``shodan`` loggers that replaces the
  key (and any ``key=...`` query parameter) in log records, for as long as the client is open;
- raises its own :class:`CensusApiError` outside any ``except`` block, so no exception chain
  carries a URL with the key.

The base URL comes from ``SHODAN_API_URL`` (read by the library) or the ``api_url`` argument.
Must not import: rich, matplotlib, the CLI.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import requests
import shodan
import urllib3
from requests.adapters import HTTPAdapter

from mailtls.census.model import Count, Failure, MalformedResponse, parse_count
from mailtls.termsafe import escape_terminal

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = (10.0, 60.0)  # connect, read (seconds); facet counts can be slow
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
MAX_RETRY_AFTER = 60.0
_LOGGERS = (
    "urllib3",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
    "requests",
    "shodan",
)
_KEY_PARAM = re.compile(r"(?i)(\bkey=)[^&\s'\"#]+")


class CensusApiError(Exception):
    """A query that got no count; ``str()`` never contains the key."""

    def __init__(self, failure: Failure, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message
        self.status = status


class Redactor:
    """Replace secrets and any ``key=`` query parameter in text."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = tuple(s for s in secrets if s)

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "[REDACTED]")
        return _KEY_PARAM.sub(r"\1[REDACTED]", text)


class RedactingFilter(logging.Filter):
    """Rewrite a log record's message (and traceback text) without the secrets."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep only the template
            message = str(record.msg)
        record.msg = self._redact(message)
        record.args = None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = self._redact(text)
        return True


@dataclass
class _Observed:
    """What the transport saw for the last request (the library hides it)."""

    status: int | None = None
    failure: Failure | None = None
    detail: str = ""
    retry_after: float | None = None
    server_message: str = ""

    def reset(self) -> None:
        self.status, self.failure, self.detail = None, None, ""
        self.retry_after, self.server_message = None, ""


class _BoundedAdapter(HTTPAdapter):
    """Timeouts, a body size bound and status capture for every request of the session."""

    def __init__(self, observed: _Observed, timeout: tuple[float, float], max_bytes: int) -> None:
        super().__init__(max_retries=0)
        self._observed = observed
        self._timeout = timeout
        self._max_bytes = max_bytes

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, stream: bool = False, **kwargs: Any
    ) -> requests.Response:
        obs = self._observed
        obs.reset()
        kwargs["timeout"] = self._timeout
        try:
            resp = super().send(request, stream=True, **kwargs)
        except requests.Timeout:
            obs.failure, obs.detail = Failure.TIMEOUT, "the request timed out"
            raise
        except requests.RequestException as exc:
            obs.failure, obs.detail = Failure.UNREACHABLE, _describe_connection_error(exc)
            raise
        obs.status = resp.status_code
        obs.retry_after = _retry_after(resp.headers.get("Retry-After"))
        try:
            body = self._read_body(resp)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            timed_out = isinstance(exc, urllib3.exceptions.ReadTimeoutError | TimeoutError)
            obs.failure = Failure.TIMEOUT if timed_out else Failure.UNREACHABLE
            obs.detail = "the response was cut off"
            raise requests.ConnectionError("reading the response failed") from None
        finally:
            resp.close()
        if len(body) > self._max_bytes:
            obs.failure = Failure.BAD_RESPONSE
            obs.detail = f"the response is larger than {self._max_bytes} bytes"
            raise requests.ConnectionError("response too large")
        resp._content = body  # the body is already read: hand it to requests
        resp._content_consumed = True
        if resp.status_code != 200:
            obs.server_message = _error_field(body)
        return resp

    def _read_body(self, resp: requests.Response) -> bytes:
        """At most ``max_bytes + 1`` bytes, within a whole-body deadline (not just per read)."""
        deadline = time.monotonic() + 2 * self._timeout[1]
        chunks: list[bytes] = []
        size = 0
        while size <= self._max_bytes:
            if time.monotonic() > deadline:
                raise TimeoutError("the response took too long")
            chunk = resp.raw.read(min(65536, self._max_bytes + 1 - size), decode_content=True)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)


def _describe_connection_error(exc: BaseException) -> str:
    """A short, key-free description of why a connection failed."""
    text = str(exc).lower()
    for needle, reason in (
        ("connection refused", "connection refused"),
        ("name or service not known", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("temporary failure in name resolution", "host name not found"),
        ("network is unreachable", "network is unreachable"),
        ("no route to host", "no route to host"),
        ("certificate verify failed", "TLS certificate verification failed"),
        ("ssl", "TLS handshake failed"),
        ("reset by peer", "connection reset"),
        ("remote end closed", "connection closed by the server"),
    ):
        if needle in text:
            return reason
    return "cannot connect"


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER) if seconds == seconds else None


def _error_field(body: bytes) -> str:
    try:
        doc = json.loads(body[:65536])
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ""
    error = doc.get("error") if isinstance(doc, dict) else None
    return error if isinstance(error, str) else ""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3  # retries after the first try
    base_delay: float = 2.0
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self.max_delay, self.base_delay * (2.0**attempt))
        return max(backoff, retry_after or 0.0)


@dataclass
class RateLimiter:
    """At most one request per ``1 / rate`` seconds (``rate`` <= 0: no limit)."""

    rate: float = 1.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _last: float | None = field(default=None, init=False)

    def wait(self) -> None:
        if self.rate > 0 and self._last is not None:
            remaining = self._last + 1.0 / self.rate - self.clock()
            if remaining > 0:
                self.sleep(remaining)
        self._last = self.clock()


def _retryable(err: CensusApiError) -> bool:
    """Timeouts, 5xx and 429 (Shodan's per-second rate limit) may pass; 402/403 will not."""
    return err.failure in (Failure.TIMEOUT, Failure.SERVER_ERROR) or err.status == 429


def check_api_url(url: str) -> str:
    """Accept https URLs, and plain http only to a loopback address (the key is in the URL)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the API URL must be an http:// or https:// URL")
    if parts.scheme == "http" and not (
        parts.hostname in ("localhost", "::1") or parts.hostname.startswith("127.")
    ):
        raise ValueError("plain http would send the API key unencrypted: use https")
    return url.rstrip("/")


class ShodanCounter:
    """``count(query, facets)`` against Shodan with politeness, bounds and redaction.

    Use as a context manager: the logging filter is removed on exit.
    """

    def __init__(
        self,
        key: str,
        *,
        api_url: str | None = None,
        rate: float = 1.0,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redact = Redactor([key])
        self._api = shodan.Shodan(key)
        self._api.api_rate_limit = 0  # our RateLimiter paces requests, retries included
        if api_url is not None:
            self._api.base_url = api_url
        self._api.base_url = check_api_url(self._api.base_url)
        self._observed = _Observed()
        adapter = _BoundedAdapter(self._observed, timeout, max_bytes)
        session = self._api._session
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.max_redirects = 0
        self._limiter = RateLimiter(rate, clock=clock, sleep=sleep)
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._filter = RedactingFilter(self.redact)
        self._filtered: list[logging.Logger] = []
        self.requests_sent = 0

    @property
    def api_url(self) -> str:
        return str(self._api.base_url)

    def __enter__(self) -> ShodanCounter:
        names = set(_LOGGERS)
        names.update(
            n
            for n in logging.root.manager.loggerDict
            if n.split(".")[0] in ("urllib3", "requests", "shodan")
        )
        for name in sorted(names):
            logger = logging.getLogger(name)
            logger.addFilter(self._filter)
            self._filtered.append(logger)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for logger in self._filtered:
            logger.removeFilter(self._filter)
        self._filtered.clear()
        self._api._session.close()

    def count(self, query: str, facets: Mapping[str, int] | None = None) -> Count:
        """One ``host/count``; retries transient failures, raises :class:`CensusApiError`."""
        facet_list = [(name, top) for name, top in (facets or {}).items()]
        attempt = 0
        while True:
            outcome = self._attempt(query, facet_list)
            if isinstance(outcome, Count):
                return outcome
            if not _retryable(outcome) or attempt >= self._retry.attempts:
                raise outcome
            delay = self._retry.delay(attempt, self._observed.retry_after)
            log.info(
                "census: %s, retrying in %.1f s (%d/%d)",
                outcome.message,
                delay,
                attempt + 1,
                self._retry.attempts,
            )
            self._sleep(delay)
            attempt += 1

    def _attempt(self, query: str, facets: list[tuple[str, int]]) -> Count | CensusApiError:
        self._limiter.wait()
        self._observed.reset()
        self.requests_sent += 1
        raw: Any = None
        library_message = ""
        try:
            raw = self._api.count(query, facets=facets or None)
        except shodan.APIError as exc:
            library_message = str(exc.value) if isinstance(exc.value, str) else "API error"
        # decided outside the except block: nothing here chains the library's exception
        failure = self._classify(library_message)
        if failure is not None:
            return failure
        try:
            return parse_count(raw, [name for name, _ in facets])
        except MalformedResponse as exc:
            return CensusApiError(Failure.BAD_RESPONSE, f"unexpected response: {exc}", 200)

    def _classify(self, library_message: str) -> CensusApiError | None:
        obs = self._observed
        status = obs.status
        if obs.failure is not None:
            return CensusApiError(obs.failure, obs.detail, status)
        if status is None:  # the library failed before any response
            return CensusApiError(Failure.UNREACHABLE, "cannot connect", None)
        said = self._clean(obs.server_message or library_message)
        suffix = f": {said}" if said else ""
        if status == 401:
            message = f"the API key was refused (401){suffix}"
            return CensusApiError(Failure.INVALID_KEY, message, 401)
        if status in (402, 403, 429):
            what = {402: "payment required", 403: "access denied", 429: "too many requests"}
            return CensusApiError(
                Failure.LIMIT, f"plan or quota limit ({status} {what[status]}){suffix}", status
            )
        if status >= 500:
            return CensusApiError(Failure.SERVER_ERROR, f"server error {status}{suffix}", status)
        if status >= 300:
            kind = Failure.REJECTED if 400 <= status < 500 else Failure.BAD_RESPONSE
            return CensusApiError(kind, f"HTTP {status}{suffix}", status)
        if library_message:
            return CensusApiError(Failure.BAD_RESPONSE, f"the API answered: {said}", status)
        return None

    def _clean(self, text: str) -> str:
        """A server-supplied message, key-free, control characters escaped, bounded."""
        text = escape_terminal(self.redact(text)).strip()
        return text if len(text) <= 200 else text[:200] + "…"
