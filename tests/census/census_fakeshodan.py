"""A local fake of Shodan's ``/shodan/host/count`` for the census tests (127.0.0.1 only).

It holds a small corpus of synthetic banners and *evaluates* the subset of Shodan's query
language the census uses (``port:N``, ``product:"X"``, quoted phrases, ``-"phrase"``), so counts
and facets are computed, not canned: a wrong query or wrong arithmetic in the census shows up as a
wrong number. Phrases match as consecutive word tokens, case-insensitively (``"AUTH=PLAIN"`` is the
tokens ``auth plain``), which is how a full-text index treats banner text. Replies can be
overridden per request (a script), per query, or for every request, to produce error statuses,
slow answers, oversized or malformed bodies.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Banner:
    port: int
    data: str
    product: str = ""
    country: str = "DE"
    org: str = "Example Hosting"
    asn: str = "AS64500"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes | None = None  # None: the computed count
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0  # before the answer
    drip: float = 0.0  # between 16-byte pieces of the body (a slow-drip server)


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _has_phrase(text: str, phrase: str) -> bool:
    hay, needle = _tokens(text), _tokens(phrase)
    if not needle:
        return True
    return any(hay[i : i + len(needle)] == needle for i in range(len(hay) - len(needle) + 1))


_TERM = re.compile(r'-?(?:[a-z_.]+:)?(?:"[^"]*"|[^\s"]+)')


def matches(banner: Banner, query: str) -> bool:
    for term in _TERM.findall(query):
        negate = term.startswith("-")
        term = term.lstrip("-")
        if term.startswith("port:"):
            ok = banner.port in {int(p) for p in term[5:].split(",")}
        elif term.startswith("product:"):
            ok = _has_phrase(banner.product, term[8:].strip('"'))
        elif term.startswith('"') and term.endswith('"'):
            ok = _has_phrase(banner.data, term[1:-1])
        else:
            raise ValueError(f"fake Shodan does not understand {term!r}")
        if ok == negate:
            return False
    return True


def count_response(corpus: list[Banner], query: str, facets: str) -> dict[str, Any]:
    hits = [b for b in corpus if matches(b, query)]
    out: dict[str, Any] = {"total": len(hits), "matches": []}
    if facets:
        out["facets"] = {}
        for spec in facets.split(","):
            name, _, size = spec.partition(":")
            counter = Counter(str(getattr(b, name)) for b in hits if getattr(b, name))
            top = counter.most_common(int(size or 10))
            out["facets"][name] = [{"count": c, "value": v} for v, c in top]
    return out


@dataclass
class FakeShodan:
    corpus: list[Banner]
    script: deque[Reply] = field(default_factory=deque)
    by_query: dict[str, Reply] = field(default_factory=dict)
    always: Reply | None = None
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    def reply_for(self, path: str, params: dict[str, str]) -> tuple[int, bytes, list[Any], Reply]:
        self.requests.append({"path": path, **params})
        reply = (
            (self.script.popleft() if self.script else None)
            or self.by_query.get(params.get("query", ""))
            or self.always
            or Reply()
        )
        if path != "/shodan/host/count":
            return 404, b'{"error": "No information available"}', [], Reply()
        body = reply.body
        if body is None:
            doc = count_response(self.corpus, params.get("query", ""), params.get("facets", ""))
            body = json.dumps(doc).encode()
        return reply.status, body, list(reply.headers), reply

    @property
    def queries(self) -> list[str]:
        return [r.get("query", "") for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        status, body, headers, reply = self.server.fake.reply_for(parts.path, params)
        if reply.delay:
            time.sleep(reply.delay)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            if not reply.drip:
                self.wfile.write(body)
            for i in range(0, len(body), 16) if reply.drip else ():
                self.wfile.write(body[i : i + 16])
                self.wfile.flush()
                time.sleep(reply.drip)
        except OSError:
            pass  # the client gave up (timeout tests)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request line holds the key: the fake must not print it either


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeShodan


@contextmanager
def serve(corpus: list[Banner]) -> Iterator[FakeShodan]:
    fake = FakeShodan(list(corpus))
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = fake
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------- the corpus used by the tests

SMTP_587 = [
    Banner(587, "220 a ESMTP Postfix\r\n250-a\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 DSN",
           "Postfix smtpd", "DE", "Hoster A", "AS64500"),
    Banner(587, "220 b ESMTP Postfix\r\n250-b\r\n250-STARTTLS\r\n250 DSN",
           "Postfix smtpd", "DE", "Hoster A", "AS64500"),
    Banner(587, "220 c ESMTP Exim 4.96\r\n250-c\r\n250-AUTH LOGIN\r\n250 HELP",
           "Exim smtpd", "US", "Hoster B", "AS64501"),
    Banner(587, "220 d Microsoft ESMTP MAIL Service ready\r\n250-d\r\n250 SIZE",
           "Microsoft Exchange smtpd", "US", "Hoster B", "AS64501"),
    Banner(587, "220 e ESMTP Sendmail\r\n250-e\r\n250-AUTH LOGIN PLAIN\r\n250 STARTTLS",
           "Sendmail", "FR", "Hoster C", "AS64502"),
]  # fmt: skip
SMTP_25 = [
    Banner(25, "220 f ESMTP Postfix\r\n250-f\r\n250-STARTTLS\r\n250 DSN", "Postfix smtpd"),
    Banner(25, "220 g ESMTP Exim\r\n250-g\r\n250-AUTH PLAIN\r\n250 HELP", "Exim smtpd", "US"),
    Banner(25, "HTTP/1.1 400 Bad Request\r\nServer: nginx", "nginx", "US"),  # not SMTP
]
SMTP_465 = [Banner(465, "220 h ESMTP Postfix\r\n250-h\r\n250 AUTH PLAIN", "Postfix smtpd")]
IMAP_143 = [
    Banner(143, "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] Dovecot ready.",
           "Dovecot imapd", "DE"),
    Banner(143, "* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN AUTH=LOGIN] Dovecot ready.",
           "Dovecot imapd", "DE"),
    Banner(143, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] Courier-IMAP ready.",
           "Courier Imapd", "US"),
    Banner(143, "* OK [CAPABILITY IMAP4rev1 LITERAL+] Cyrus IMAP server ready",
           "Cyrus imapd", "FR"),
]  # fmt: skip
IMAP_993 = [Banner(993, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] Dovecot ready.", "Dovecot imapd")]
POP3_110 = [
    Banner(110, "+OK Dovecot ready.\r\n+OK\r\nCAPA\r\nTOP\r\nSTLS\r\nUSER\r\nSASL PLAIN\r\n.",
           "Dovecot pop3d", "DE"),
    Banner(110, "+OK Dovecot ready.\r\n+OK\r\nCAPA\r\nTOP\r\nSTLS\r\nSASL\r\n.",
           "Dovecot pop3d", "DE"),
    Banner(110, "+OK POP3 ready\r\n+OK\r\nCAPA\r\nUSER\r\nUIDL\r\n.", "Courier pop3d", "US"),
]  # fmt: skip
POP3_995 = [Banner(995, "+OK Dovecot ready.", "Dovecot pop3d")]

CORPUS = SMTP_587 + SMTP_25 + SMTP_465 + IMAP_143 + IMAP_993 + POP3_110 + POP3_995
