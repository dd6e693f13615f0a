"""The HTTP server hardened like a public one: read deadlines and connection caps.

``guarded_h11(...)`` returns uvicorn's h11 protocol with:
- a header deadline: a request's headers must be complete within ``header_seconds`` of the
  connection opening (or of its first byte on a kept-alive connection), else the connection is
  closed: a client that trickles headers (slowloris) holds a descriptor for that long at most;
- a body deadline: the body must be complete within ``body_seconds`` after the headers;
- caps on open connections per client address (an IPv6 address by its prefix) and in total:
  beyond them the connection gets a one-line ``503`` and is closed. The total keeps the web
  side's descriptors apart from the mail listeners' (``serve`` sizes both below the open-file
  limit). A trusted proxy's own address is exempt from the per-address cap: behind it,
  ``RequestCap`` limits the requests in flight per address the proxy reports.
Idle kept-alive connections are closed by uvicorn's own ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import h11
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from mailtls.runs.binding import address_key
from mailtls.settings import Settings
from mailtls.web.clientaddr import Network, client_address, is_trusted, parse_networks

REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class AddressCounter:
    """Open things per client address (IPv6 by prefix) and in total; trusted hops exempt."""

    def __init__(
        self, per_ip: int, total: int, trusted: Sequence[Network] = (), ipv6_prefix: int = 64
    ) -> None:
        self.per_ip = per_ip
        self.total = total
        self.trusted = tuple(trusted)
        self.ipv6_prefix = ipv6_prefix
        self.by_ip: dict[str, int] = {}
        self.count = 0

    def _key(self, ip: str) -> str:
        return ip if ":" not in ip else address_key(ip, self.ipv6_prefix) or ip

    def admit(self, ip: str, *, exempt: bool = False) -> bool:
        if self.total > 0 and self.count >= self.total:
            return False
        key = self._key(ip)
        n = self.by_ip.get(key, 0)
        if self.per_ip > 0 and n >= self.per_ip and not exempt:
            return False
        self.by_ip[key] = n + 1
        self.count += 1
        return True

    def release(self, ip: str) -> None:
        key = self._key(ip)
        n = self.by_ip.get(key, 0) - 1
        if n > 0:
            self.by_ip[key] = n
        else:
            self.by_ip.pop(key, None)
        self.count = max(0, self.count - 1)


def guarded_h11(
    counter: AddressCounter, header_seconds: float, body_seconds: float
) -> type[H11Protocol]:
    class GuardedH11Protocol(H11Protocol):
        _ip = ""
        _counted = False
        _timer: asyncio.TimerHandle | None = None
        _in_body = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._ip = self.client[0] if self.client else ""
            exempt = bool(counter.trusted) and is_trusted(self._ip, counter.trusted)
            if not counter.admit(self._ip, exempt=exempt):
                transport.write(REFUSED)
                transport.close()
                return
            self._counted = True
            self._arm(header_seconds)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._counted:
                self._counted = False
                counter.release(self._ip)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            state = self.conn.their_state
            if state is h11.IDLE:
                if self._timer is None:  # the first bytes of a next request
                    self._in_body = False
                    self._arm(header_seconds)
            elif state is h11.SEND_BODY:
                if not self._in_body:
                    self._in_body = True
                    self._arm(body_seconds)
            else:  # the request is complete: the app has it
                self._disarm()

        def _arm(self, seconds: float) -> None:
            self._disarm()
            if seconds > 0:
                self._timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self) -> None:
            self._timer = None
            if (
                self.conn.their_state in (h11.IDLE, h11.SEND_BODY)
                and not self.transport.is_closing()
            ):
                self.transport.close()  # too slow: the request never completed in time

    return GuardedH11Protocol


class RequestCap:
    """Behind trusted proxies: at most ``per_ip`` requests in flight per client address the
    proxy reports (429 beyond). Direct clients are capped per connection instead."""

    def __init__(self, app: ASGIApp, per_ip: int, trusted: Sequence[Network]) -> None:
        self.app = app
        self.counter = AddressCounter(per_ip, 0, trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trusted = self.counter.trusted
        peer = scope.get("client") or ("", 0)
        if scope["type"] != "http" or not trusted or not is_trusted(str(peer[0]), trusted):
            await self.app(scope, receive, send)
            return
        forwarded = _header(scope, b"x-forwarded-for")
        ip = client_address(str(peer[0]), forwarded, trusted)
        if not self.counter.admit(ip):
            await send({"type": "http.response.start", "status": 429, "headers": []})
            await send({"type": "http.response.body", "body": b"too many requests"})
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.counter.release(ip)


def _header(scope: Scope, name: bytes) -> str | None:
    values: list[Any] = [v for k, v in scope["headers"] if k == name]
    return ", ".join(v.decode("latin-1") for v in values) if values else None


def guarded_protocol(settings: Settings) -> type[H11Protocol]:
    """The protocol class ``mailtls serve`` gives uvicorn (``[web]`` settings)."""
    web = settings.web
    counter = AddressCounter(
        web.per_ip,
        web.total,
        parse_networks(settings.trusted_proxies),
        settings.binding.ipv6_prefix,
    )
    return guarded_h11(counter, web.header_seconds, web.body_seconds)


def http_cap(app: ASGIApp, settings: Settings) -> ASGIApp:
    """``app`` behind ``RequestCap`` when there are trusted proxies."""
    trusted = parse_networks(settings.trusted_proxies)
    return RequestCap(app, settings.web.per_ip, trusted) if trusted else app
