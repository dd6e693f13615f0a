"""Per-port orchestration and ``probe_host``: the few connections the probe makes to each port.

For a STARTTLS port: (1) a plaintext session: greeting, capabilities, the dummy login, and for
SMTP ``MAIL FROM:<>`` (is TLS required?); (2) a TLS session: STARTTLS with an injected second
command, handshake with chain verification (again without verification when the chain fails, to
go on), listen for an unasked answer, capabilities after TLS; (3) one connection per legacy
version (TLS 1.0, 1.1) the local OpenSSL can offer. An implicit-TLS port skips (1) and the
injection. Ports run in parallel threads; each has its own deadline. Every failure becomes a
per-port status, never an exception out of ``probe_host`` (except DNS: ``ProbeFailure('dns')``).
Imports the dialogues, ``conn``, ``tlscheck``, ``injection`` and ``checks``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
import ssl
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from mailtls.findings import Finding
from mailtls.probe.classify import Caps
from mailtls.probe.conn import Conn, Deadline, ProbeFailure, resolve
from mailtls.probe.dialogue import Dialogue, DummyCredentials, LoginResult, StarttlsReply
from mailtls.probe.imap import ImapDialogue
from mailtls.probe.injection import InjectionResult, starttls_with_injection
from mailtls.probe.pop3 import Pop3Dialogue
from mailtls.probe.smtp import SmtpDialogue
from mailtls.probe.targets import Target, normalise
from mailtls.probe.tlscheck import (
    LEGACY_VERSIONS,
    CertFacts,
    Legacy,
    can_offer,
    cert_facts,
    legacy_context,
    lenient_context,
    verifying_context,
)

DIALOGUES: dict[str, Callable[[], Dialogue]] = {
    "smtp": SmtpDialogue,
    "imap": ImapDialogue,
    "pop3": Pop3Dialogue,
}
LOGIN_WAIT_MIN = 16.0  # Dovecot delays failed logins by up to 15 s
INJECTION_WAIT_MAX = 1.5
MAX_PARALLEL = 32  # (address, port) pairs probed at once


@dataclass(frozen=True)
class TlsResult:
    mode: str  # starttls | implicit
    established: bool
    version: str = ""
    cipher: str = ""
    error: str | None = None
    starttls_reply: str | None = None
    verify_error: str | None = None
    cert: CertFacts | None = None
    caps_after: Caps | None = None
    legacy: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Session:
    """What one TLS connection showed."""

    reply: StarttlsReply | None = None
    injection: InjectionResult | None = None
    established: bool = False
    version: str = ""
    cipher: str = ""
    der: bytes | None = None
    caps_after: Caps | None = None
    error: str | None = None


@dataclass(frozen=True)
class PortResult:
    target: Target
    address: str
    status: str  # ok | refused | timeout | tls | closed | protocol | network
    error: str | None = None
    banner: str = ""
    caps_before: Caps | None = None
    login: LoginResult | None = None
    tls_required: bool | None = None
    tls: TlsResult | None = None
    injection: InjectionResult | None = None
    source_is_target: bool = False
    transcript: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        addr = f"[{self.address}]" if ":" in self.address else self.address
        return f"{addr}:{self.target.port}"


@dataclass(frozen=True)
class ProbeResult:
    host: str
    addresses: tuple[str, ...]
    ports: tuple[PortResult, ...]
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = ()

    @property
    def reachable(self) -> int:
        return sum(1 for p in self.ports if p.status == "ok")


@dataclass(frozen=True)
class Options:
    host: str
    timeout: float
    cafile: str | None
    login_attempt: bool

    @property
    def sni(self) -> str | None:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return self.host
        return None

    @property
    def login_wait(self) -> float:
        return max(self.timeout, LOGIN_WAIT_MIN)

    @property
    def port_budget(self) -> float:
        return 6 * self.timeout + self.login_wait


def dummy_credentials() -> DummyCredentials:
    return DummyCredentials(f"mailtls-probe-{secrets.token_hex(4)}", secrets.token_urlsafe(18))


class PortProbe:
    """The connections made to one (address, port); collects facts into a ``PortResult``."""

    def __init__(self, opts: Options, family: int, address: str, target: Target) -> None:
        self.opts = opts
        self.family = family
        self.address = address
        self.target = target
        self.deadline = Deadline.after(opts.port_budget)
        self.transcript: list[str] = []
        self.notes: list[str] = []
        self.source_is_target = False
        self.banner = ""

    def connect(self) -> Conn:
        conn = Conn.open(
            (self.address, self.target.port), self.family, self.deadline, self.opts.timeout
        )
        conn.transcript = self.transcript
        conn.note(f"-- connected to {self.address} port {self.target.port}")
        if conn.local_address() == conn.peer_address():
            self.source_is_target = True
        return conn

    def dialogue(self) -> Dialogue:
        return DIALOGUES[self.target.protocol]()

    def run(self) -> PortResult:
        base = PortResult(self.target, self.address, "ok")
        try:
            if self.target.implicit_tls:
                result = self.run_implicit(base)
            else:
                result = self.run_starttls(base)
        except ProbeFailure as exc:
            result = PortResult(self.target, self.address, exc.kind, error=exc.message)
        return replace(
            result,
            source_is_target=self.source_is_target,
            transcript=tuple(self.transcript),
            notes=tuple(self.notes),
        )

    # --- STARTTLS ports ----------------------------------------------------------------------
    def run_starttls(self, base: PortResult) -> PortResult:
        conn = self.connect()  # a failure here is the port's status
        dlg = self.dialogue()
        login: LoginResult | None = None
        required: bool | None = None
        try:
            banner = dlg.greet(conn)
            caps = dlg.capabilities(conn)
        except ProbeFailure:
            conn.close()
            raise
        try:
            if self.opts.login_attempt:
                login = dlg.login(conn, caps, dummy_credentials(), self.opts.login_wait)
            required = dlg.requires_tls(conn)
            dlg.quit(conn)
        except ProbeFailure as exc:
            self.notes.append(f"plaintext session ended early: {exc.message}")
        finally:
            conn.close()
        tls: TlsResult | None = None
        injection: InjectionResult | None = None
        if caps.starttls:
            tls, injection = self.tls_session(starttls=True)
        return replace(
            base,
            banner=banner,
            caps_before=caps,
            login=login,
            tls_required=required,
            tls=tls,
            injection=injection,
        )

    # --- implicit TLS ports ------------------------------------------------------------------
    def run_implicit(self, base: PortResult) -> PortResult:
        tls, _ = self.tls_session(starttls=False)
        return replace(base, banner=self.banner, tls=tls)

    # --- the TLS session ---------------------------------------------------------------------
    def tls_session(self, starttls: bool) -> tuple[TlsResult, InjectionResult | None]:
        mode = "starttls" if starttls else "implicit"
        try:
            session, verify_error = self._attempt(starttls, inject=starttls)
            injection = session.injection
            if injection is not None and injection.aborted:
                session, verify_error = self._attempt(starttls, inject=False)
                if not session.established:
                    injection = replace(injection, tested=False)
        except ProbeFailure as exc:
            if exc.connecting and not starttls:
                raise
            return TlsResult(mode, False, error=exc.message), None
        except OSError as exc:  # e.g. a bad --cafile found late
            return TlsResult(mode, False, error=str(exc)), None
        reply = session.reply
        if not session.established:
            error = "STARTTLS refused" if reply is not None and not reply.accepted else "failed"
            return TlsResult(
                mode,
                False,
                error=session.error or error,
                starttls_reply=reply.reply if reply else None,
                verify_error=verify_error,
            ), injection
        der = session.der
        facts = cert_facts(der, self.opts.host, dt.datetime.now(dt.UTC)) if der else None
        legacy = {name: self.legacy(starttls, ver).value for name, ver in LEGACY_VERSIONS.items()}
        tls = TlsResult(
            mode,
            True,
            session.version,
            session.cipher,
            starttls_reply=reply.reply if reply else None,
            verify_error=verify_error,
            cert=facts,
            caps_after=session.caps_after,
            legacy=legacy,
        )
        return tls, injection

    def _attempt(self, starttls: bool, inject: bool) -> tuple[_Session, str | None]:
        """One TLS session with chain verification; again without it when the chain fails."""
        try:
            return self._tls_once(starttls, verifying_context(self.opts.cafile), inject), None
        except ssl.SSLCertVerificationError as exc:
            verify_error = str(exc.verify_message or exc.reason or exc)
        self.transcript.append(f"-- certificate not trusted: {verify_error}; again without")
        try:
            return self._tls_once(starttls, lenient_context(), inject), verify_error
        except ssl.SSLCertVerificationError as exc:  # cannot happen without verification
            raise ProbeFailure("tls", str(exc)) from None
        except ProbeFailure as exc:
            if exc.connecting:
                raise
            return _Session(error=exc.message), verify_error

    def _tls_once(self, starttls: bool, ctx: ssl.SSLContext, inject: bool) -> _Session:
        conn = self.connect()
        dlg = self.dialogue()
        try:
            reply: StarttlsReply | None = None
            injection: InjectionResult | None = None
            if starttls:
                dlg.greet(conn)
                dlg.capabilities(conn)
                if inject:
                    wait = min(self.opts.timeout, INJECTION_WAIT_MAX)
                    reply, injection = starttls_with_injection(conn, dlg, ctx, self.opts.sni, wait)
                    if injection.aborted:
                        return _Session(reply, injection)
                else:
                    reply = dlg.starttls(conn, inject=False)
                    if reply.accepted:
                        conn.upgrade(ctx, self.opts.sni)
                if not reply.accepted:
                    return _Session(reply)
            else:
                conn.upgrade(ctx, self.opts.sni)
                self.banner = dlg.greet(conn)
            session = _Session(
                reply,
                injection,
                established=True,
                version=conn.tls_version(),
                cipher=conn.tls_cipher(),
                der=conn.peer_certificate(),
            )
            try:
                session = replace(session, caps_after=dlg.capabilities(conn))
                dlg.quit(conn)
            except ProbeFailure as exc:
                self.notes.append(f"after TLS: {exc.message}")
            return session
        finally:
            conn.close()

    def legacy(self, starttls: bool, version: ssl.TLSVersion) -> Legacy:
        if not can_offer(version):
            return Legacy.NOT_TESTED
        try:
            conn = self.connect()
        except ProbeFailure:
            return Legacy.NOT_TESTED
        dlg = self.dialogue()
        try:
            if starttls:
                dlg.greet(conn)
                dlg.capabilities(conn)
                if not dlg.starttls(conn, inject=False).accepted:
                    return Legacy.NOT_TESTED
            conn.upgrade(legacy_context(version), self.opts.sni)
            ok = conn.tls_version() == version.name.replace("_", ".")
            return Legacy.ACCEPTED if ok else Legacy.REFUSED
        except ProbeFailure as exc:
            return Legacy.REFUSED if exc.kind in ("tls", "closed") else Legacy.NOT_TESTED
        except ssl.SSLError:
            return Legacy.REFUSED
        finally:
            conn.close()


def probe_host(
    host: str,
    ports: Sequence[Target | int | str] | None = None,
    timeout: float = 10.0,
    cafile: str | None = None,
    login_attempt: bool = True,
) -> ProbeResult:
    """Probe ``host`` on ``ports`` (default: the seven well-known mail ports).

    Raises ``ProbeFailure('dns', ...)`` when the name does not resolve and ``ValueError`` for a
    bad port specification; every per-port failure is a ``PortResult`` status instead."""
    from mailtls.probe.checks import findings_for, host_notes
    from mailtls.probe.targets import DEFAULT_PORTS, parse_ports

    targets = parse_ports(DEFAULT_PORTS) if ports is None else normalise(ports)
    opts = Options(host, timeout, cafile, login_attempt)
    addresses = resolve(host)
    jobs = [PortProbe(opts, fam, addr, t) for fam, addr in addresses for t in targets]
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(jobs))) as pool:
        results = list(pool.map(lambda job: job.run(), jobs))
    findings: list[Finding] = []
    for r in results:
        findings.extend(findings_for(r, host))
    return ProbeResult(
        host,
        tuple(a for _, a in addresses),
        tuple(results),
        tuple(findings),
        tuple(host_notes(results)),
    )
