"""The mail listeners: every configured service on every listen address, and their connections.

``MailServer`` owns the listening sockets, the registry of open connections (so the run manager
can close a run's connections: ``kick_run``), connection admission (per-address and total
limits, accept rate, refusals recorded with a cap) and the current TLS context (``reload_tls``
on SIGHUP: new connections use the new certificate, open ones keep theirs).

Must not import the web app or the protocol cores: cores come in as factories by protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import secrets
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from mailtls.net.attack_certs import AttackCertificates, ensure_attack_certificates
from mailtls.net.connection import Listener, MailConnection
from mailtls.net.limits import AddressBudget, ConnectionLimiter, RefusalThrottle, TokenBucket
from mailtls.net.pki import (
    PkiError,
    ServerCertificates,
    allow_legacy_versions,
    server_ssl_context,
)
from mailtls.net.types import Binder, CoreFactory, ListenerSpec, Sink
from mailtls.protocols.base import Authenticator, PortRole
from mailtls.settings import Ports, Settings
from mailtls.testcases import VALID_CERTIFICATE

log = logging.getLogger("mailtls.net")

SHUTDOWN_REASON = "server shutting down"
FALLBACK_KEYS = 4096  # tls_fallback: (run, step, client, port) whose first offer is kept


def standard_specs(ports: Ports) -> list[ListenerSpec]:
    """The standard services from ``Settings.ports``; a port of 0 disables its listener."""
    table = [
        ("smtp_mx", "smtp", PortRole.MX, ports.smtp_mx, False),
        ("smtp_submission", "smtp", PortRole.SUBMISSION, ports.smtp_submission, False),
        ("smtp_tls", "smtp", PortRole.SUBMISSION, ports.smtp_tls, True),
        ("imap", "imap", PortRole.IMAP, ports.imap, False),
        ("imap_tls", "imap", PortRole.IMAP, ports.imap_tls, True),
        ("pop3", "pop3", PortRole.POP3, ports.pop3, False),
        ("pop3_tls", "pop3", PortRole.POP3, ports.pop3_tls, True),
    ]
    return [ListenerSpec(*row) for row in table if row[3]]


def raise_nofile_limit() -> int:
    """Raise the soft open-file limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("cannot raise the open-file limit above %d", soft)
    return soft


class MailServer:
    """All mail listeners of one process. ``await start()``, ``await close()``."""

    def __init__(
        self,
        settings: Settings,
        *,
        binder: Binder,
        authenticator: Authenticator,
        sink: Sink,
        core_factories: Mapping[str, CoreFactory],
        certs: ServerCertificates | None = None,
        ssl_context: Callable[[], ssl.SSLContext] | None = None,
        attack_certs: AttackCertificates | None = None,
        specs: Iterable[ListenerSpec] | None = None,
        exempt: Iterable[str] = (),
    ) -> None:
        """``certs`` (files, reread by ``reload_tls``) or ``ssl_context`` (a provider called at
        start and on reload) gives the TLS context. ``specs`` defaults to the standard services
        from ``settings.ports``; ``exempt`` networks skip the per-address limit."""
        if ssl_context is None:
            if certs is None:
                raise ValueError("MailServer needs certs or an ssl_context provider")
            cert, key = certs.cert, certs.key

            def ssl_context() -> ssl.SSLContext:
                return server_ssl_context(cert, key)

        exempt = tuple(exempt)
        self.settings = settings
        self.binder = binder
        self.authenticator = authenticator
        self.sink = sink
        self._provider = ssl_context
        self._context: ssl.SSLContext | None = None
        self._certs = certs
        self._attack = attack_certs
        self._attack_contexts: dict[str, ssl.SSLContext] = {}
        self._legacy_context: ssl.SSLContext | None = None
        # tls_fallback: per (run, step, client, listener): the first attempt's highest version
        # and the number of attempts (bounded, least recently used dropped first)
        self._fallback: OrderedDict[tuple[str, int, str, str], list[int]] = OrderedDict()
        self._specs = list(specs) if specs is not None else standard_specs(settings.ports)
        missing = {s.protocol for s in self._specs} - set(core_factories)
        if missing:
            raise ValueError(f"no core factory for {', '.join(sorted(missing))}")
        self._factories = dict(core_factories)
        conf = settings.connections
        self._limiter = ConnectionLimiter(
            conf.per_ip, conf.total, exempt, settings.binding.ipv6_prefix
        )
        rec = settings.recording
        self._budget = AddressBudget(
            rec.address_records,
            rec.address_bytes,
            rec.address_window,
            exempt,
            settings.binding.ipv6_prefix,
        )
        self._rates: dict[str, TokenBucket] = {}
        self._refusals = RefusalThrottle()
        self._conns: set[MailConnection] = set()
        self._by_run: dict[str, set[MailConnection]] = {}
        self._servers: list[tuple[ListenerSpec, asyncio.Server]] = []
        self._listeners: dict[str, Listener] = {}
        self._prefix = secrets.token_hex(4)
        self._counter = 0

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._context is None:
            self._context = self._provider()
        loop = asyncio.get_running_loop()
        try:
            for spec in self._specs:
                listener = Listener(spec, self._factories[spec.protocol], self)
                self._listeners[spec.name] = listener
                rate = self.settings.connections.accept_rate
                self._rates[spec.name] = TokenBucket(rate, max(1.0, rate))
                for host in self.settings.listen:
                    server = await loop.create_server(
                        listener, host=host, port=spec.port, reuse_address=True, backlog=1024
                    )
                    self._servers.append((spec, server))
        except BaseException:
            await self._stop_listening()
            raise

    async def close(self, grace: float = 2.0) -> None:
        """Stop listening, tell open sessions the server goes away, abort what is left."""
        await self._stop_listening()
        self.kick_all(SHUTDOWN_REASON)
        deadline = time.monotonic() + grace
        while self._conns and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self._conns):
            conn.abort()
        await asyncio.sleep(0)

    async def _stop_listening(self) -> None:
        servers, self._servers = self._servers, []
        for _, server in servers:
            server.close()
        for _, server in servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    def reload_tls(self) -> None:
        """Load the certificate again; new connections use it. Raises (keeping the old one)."""
        self._context = self._provider()
        self._attack_contexts.clear()
        self._legacy_context = None

    def listener(self, name: str) -> Listener:
        """The listener of a standard service; the runs' own sockets of that kind share it
        (``net.endpoints.RunListeners``): same core, limits and records."""
        return self._listeners[name]

    def addresses(self) -> list[str]:
        """One line per listening socket: name, address, security, role."""
        lines = []
        for spec, server in self._servers:
            security = "implicit TLS" if spec.implicit_tls else "STARTTLS"
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                lines.append(f"{spec.name:<16} {where:<22} {security} ({spec.role})")
        return lines

    def bound(self) -> dict[str, list[tuple[str, int]]]:
        """Listener name -> its bound (address, port) pairs."""
        out: dict[str, list[tuple[str, int]]] = {}
        for spec, server in self._servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                out.setdefault(spec.name, []).append((str(host), int(port)))
        return out

    def port(self, name: str) -> int:
        """The first bound port of a listener (tests and banners)."""
        return self.bound()[name][0][1]

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    # --- run control ------------------------------------------------------------------------------

    def kick_run(self, run_id: str, reason: str) -> int:
        """Close every open connection bound to ``run_id`` (protocol goodbye, then close)."""
        conns = list(self._by_run.get(run_id, ()))
        for conn in conns:
            conn.kick(reason)
        return len(conns)

    def kick_all(self, reason: str) -> int:
        conns = list(self._conns)
        for conn in conns:
            conn.kick(reason)
        return len(conns)

    # --- Host: what connections ask -------------------------------------------------------------

    def ssl_context(
        self, certificate: str = VALID_CERTIFICATE, *, legacy: bool = False
    ) -> ssl.SSLContext:
        """The server's TLS context, or one presenting an attacker's certificate (``cert_*``
        test cases: ``net.attack_certs``, created next to the server certificate if needed).
        ``legacy``: the server's certificate, TLS 1.0 to 1.3 (``tls_fallback``)."""
        if legacy:
            if self._legacy_context is None:
                legacy_context = self._provider()
                if legacy_context is self._context:  # a provider that shares one context
                    raise PkiError("the TLS context provider must give a new context")
                if not allow_legacy_versions(legacy_context):
                    log.warning(
                        "the local OpenSSL has no TLS 1.0/1.1: tls_fallback serves TLS 1.2 at "
                        "the lowest (its TLS 1.0/1.1 part is not testable here)"
                    )
                self._legacy_context = legacy_context
            return self._legacy_context
        if certificate == VALID_CERTIFICATE:
            if self._context is None:
                self._context = self._provider()
            return self._context
        context = self._attack_contexts.get(certificate)
        if context is None:
            if self._attack is None:
                if self._certs is None:
                    raise PkiError("no certificate files to create the attack certificates")
                key = self._certs.cert.parent / "ca.key"
                self._attack = ensure_attack_certificates(self._certs, key)
            context = self._attack_contexts[certificate] = self._attack.ssl_context(certificate)
        return context

    def fallback_attempt(self, conn: MailConnection, highest: int) -> tuple[int, int]:
        """``tls_fallback``: count one ClientHello of ``conn``'s client on its port in its step;
        returns the attempt's number (1 for the first) and the first attempt's highest version."""
        binding = conn.binding
        run, step = (binding.run_id, binding.step) if binding is not None else ("", 0)
        key = (run, step, conn.client, conn.listener.spec.name)
        entry = self._fallback.get(key)
        if entry is None:
            entry = self._fallback[key] = [highest, 0]
            if len(self._fallback) > FALLBACK_KEYS:
                self._fallback.popitem(last=False)
        else:
            self._fallback.move_to_end(key)
        entry[1] += 1
        return entry[1], entry[0]

    def next_conn_id(self) -> str:
        self._counter += 1
        return f"{self._prefix}-{self._counter:x}"

    def admit(self, conn: MailConnection) -> str | None:
        bucket = self._rates.get(conn.listener.spec.name)
        if bucket is not None and not bucket.take(time.monotonic()):
            return "accept_rate"
        return self._limiter.admit(conn.client)

    def address_over(self, conn: MailConnection) -> str | None:
        """Whether the connection's address is past its budget for this window."""
        return self._budget.over(conn.client, time.monotonic())

    def charge(
        self, conn: MailConnection, records: int, nbytes: int
    ) -> tuple[str, int, bool] | None:
        """Charge a connection's records and journal bytes to its address (see
        ``AddressBudget.charge``); the first time an address passes its budget in a window is
        logged."""
        over = self._budget.charge(conn.client, records, nbytes, time.monotonic())
        if over is not None and over[2]:
            log.warning(
                "%s: past its budget of %d %s per %g s; answering its connections with the "
                "protocol's goodbye until the window ends",
                conn.client,
                over[1],
                over[0],
                self._budget.window,
            )
        return over

    def allow_refusal_record(self) -> bool:
        allowed = self._refusals.allow(time.monotonic())
        if not allowed and self._refusals.suppressed % 1000 == 1:
            log.warning("connection refusals: %d not recorded", self._refusals.suppressed)
        return allowed

    def register(self, conn: MailConnection) -> None:
        self._conns.add(conn)
        if conn.binding is not None:
            self._by_run.setdefault(conn.binding.run_id, set()).add(conn)

    def unregister(self, conn: MailConnection) -> None:
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        self._limiter.release(conn.client)
        if conn.binding is not None:
            run = self._by_run.get(conn.binding.run_id)
            if run is not None:
                run.discard(conn)
                if not run:
                    del self._by_run[conn.binding.run_id]
