"""One mail connection: an ``asyncio.BufferedProtocol`` that drives one sans-IO protocol core.

Bytes from the socket become core events; ``apply`` is the only place that turns the core's
commands into I/O (writes inside or outside TLS, the TLS handshake, the ClientHello read, timers,
close and reset, journal records). The records and the writes of one read (or of the accept,
or of the close) are corked: at the end of the callback the records go to the sink together
(``Store.append_many``: one journal write), then the replies leave in one socket write, so a
record always reaches the kernel before the reply that follows it in the command list.

Bounds: each read is at most ``READ_BYTES`` (one shared scratch buffer: the loop is single
threaded); TLS gets at most 32 KiB before its handshake completes and has a deadline; reading
pauses while the socket's write buffer is above ``WRITE_HIGH`` and the connection is aborted
beyond ``WRITE_HARD_LIMIT`` (a peer that never reads). Anything a peer sends ends as a core
event; only a bug (or a failing sink) reaches the broad handler, which logs and aborts.

Cost: a connection bound to no run is recorded compactly (``recording.CompactRecorder``: one
summary at its close); every connection has a budget of observations and journal bytes, and the
unbound ones charge their address's budget after each read (``Host.charge``); past a budget the
core is told ``Kicked`` (its goodbye: SMTP 421, IMAP BYE, POP3 -ERR).

This module knows nothing of listeners or the server: it asks its ``Host`` (implemented by
``listeners.MailServer``) for what it needs. It never imports the protocol cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, cast

from mailtls import observations as obs
from mailtls.net.recording import CompactRecorder, ConnectionBudget
from mailtls.net.tlsengine import TlsEngine
from mailtls.net.types import Binder, CoreFactory, ListenerSpec, Sink
from mailtls.observations import Observation
from mailtls.protocols.base import (
    Authenticator,
    ClientHelloReceived,
    Close,
    Closed,
    Command,
    Connected,
    Core,
    DataReceived,
    Event,
    Kicked,
    ReadClientHello,
    Record,
    Send,
    SendRaw,
    SessionContext,
    SetTimer,
    StartTls,
    Timeout,
    TlsEstablished,
    TlsFailed,
    TlsInfo,
)
from mailtls.protocols.tlsrecord import (
    ClientHelloRead,
    ClientHelloReader,
    parse_client_hello,
    version_name,
)
from mailtls.runs.types import Binding
from mailtls.settings import Settings
from mailtls.testcases import (
    BASELINE,
    TESTCASES,
    VALID_CERTIFICATE,
    BlockStyle,
    ImplicitTls,
    TestCase,
)

log = logging.getLogger("mailtls.net")

READ_BYTES = 32 * 1024
WRITE_HIGH = 64 * 1024
WRITE_HARD_LIMIT = 1024 * 1024
# After the server's last line, how long a closing connection keeps reading (and discarding)
# what the peer still sends: closing a socket with unread input makes the kernel answer with a
# reset, and a client that is still sending (a flooder, a pipelining client) would lose the
# goodbye line (SMTP 421, IMAP BYE, POP3 -ERR) that says why.
LINGER_SECONDS = 1.0
_READ_BUFFER = bytearray(READ_BYTES)
_READ_VIEW = memoryview(_READ_BUFFER)

# reasons to pause reading (bit flags)
_PAUSE_HOLD = 1  # a delayed Send holds the following commands
_PAUSE_WRITE = 2  # the transport's write buffer is above its high-water mark
_PAUSE_TURN = 4  # a full read was handled: let the other connections (and accepts) go first
_PEER_GONE = ("client", "error")
CONNECTION_OVER_BUDGET = "too many commands on this connection"
ADDRESS_OVER_BUDGET = "too many commands from your address; try again later"
# tls_fallback: the alert a middlebox answers the first ClientHello with (fatal handshake_failure)
FALLBACK_ALERT = b"\x15\x03\x01\x00\x02\x02\x28"
_FLAT_TYPES = ("str", "int", "bool", "float", "str | None", "int | None", "tuple[str, ...]")


class Host(Protocol):
    """What a connection needs from its server."""

    settings: Settings
    binder: Binder
    authenticator: Authenticator
    sink: Sink

    def ssl_context(
        self, certificate: str = VALID_CERTIFICATE, *, legacy: bool = False
    ) -> ssl.SSLContext: ...

    def fallback_attempt(self, conn: MailConnection, highest: int) -> tuple[int, int]: ...

    def next_conn_id(self) -> str: ...

    def admit(self, conn: MailConnection) -> str | None: ...

    def allow_refusal_record(self) -> bool: ...

    def address_over(self, conn: MailConnection) -> str | None: ...

    def charge(
        self, conn: MailConnection, records: int, nbytes: int
    ) -> tuple[str, int, bool] | None: ...

    def register(self, conn: MailConnection) -> None: ...

    def unregister(self, conn: MailConnection) -> None: ...


class Listener:
    """Shared by the connections of one listening socket: spec, core factory, host."""

    __slots__ = ("_contexts", "core_factory", "host", "sink_many", "spec")

    def __init__(self, spec: ListenerSpec, core_factory: CoreFactory, host: Host) -> None:
        self.spec = spec
        self.core_factory = core_factory
        self.host = host
        self._contexts: dict[str, SessionContext] = {}
        self.sink_many = batch_sink(host.sink)

    def context(self, policy: TestCase) -> SessionContext:
        """Session contexts are immutable: one per policy is shared by all connections."""
        ctx = self._contexts.get(policy.name)
        if ctx is None:
            s = self.host.settings
            ctx = SessionContext(
                policy=policy,
                role=self.spec.role,
                hostname=s.hostname,
                domain=s.domain,
                authenticator=self.host.authenticator,
                implicit_tls=self.spec.implicit_tls,
                limits=s.limits,
            )
            self._contexts[policy.name] = ctx
        return ctx

    def __call__(self) -> MailConnection:
        return MailConnection(self)


def batch_sink(sink: Sink) -> Callable[[list[dict[str, Any]]], object]:
    """The sink for the records of one read: ``owner.append_many`` when ``sink`` is the bound
    ``append`` of an object that has one (``Store``: one journal write for all of them), else
    ``sink`` called for each record in turn."""
    owner = getattr(sink, "__self__", None)
    many = getattr(owner, "append_many", None)
    if getattr(sink, "__name__", "") == "append" and callable(many):
        return cast(Callable[[list[dict[str, Any]]], object], many)

    def each(records: list[dict[str, Any]]) -> None:
        for record in records:
            sink(record)

    return each


def policy_for(binding: Binding | None, protocol: str) -> TestCase:
    """The policy of an accepted connection: its step's test case where that applies to the
    protocol (``TestCase.serving``), else the honest baseline."""
    if binding is not None and binding.active:
        return TESTCASES.get(binding.testcase, BASELINE).serving(protocol)
    return BASELINE


_FIELD_NAMES: dict[type[Observation], tuple[str, ...] | None] = {}


def _field_names(cls: type[Observation]) -> tuple[str, ...] | None:
    """Field names of a flat dataclass observation that keeps ``Observation.as_fields``, whose
    ``as_fields()`` (``dataclasses.asdict``) is then the same as reading the fields; else None."""
    try:
        return _FIELD_NAMES[cls]
    except KeyError:
        pass
    names: tuple[str, ...] | None = None
    if cls.as_fields is Observation.as_fields and dataclasses.is_dataclass(cls):
        fields = dataclasses.fields(cls)
        if all(f.type in _FLAT_TYPES for f in fields):
            names = tuple(f.name for f in fields)
    _FIELD_NAMES[cls] = names
    return names


def observation_fields(o: Observation) -> dict[str, Any]:
    """``o.as_fields()``, fast for flat dataclass observations (same result)."""
    names = _field_names(type(o))
    if names is None:
        return o.as_fields()
    return {name: getattr(o, name) for name in names}


SINK_FAILURE_LOG_SECONDS = 60.0
_sink_failure_logged = -SINK_FAILURE_LOG_SECONDS


def _discard(records: object) -> None:
    """The sink of a connection whose records can no longer be written."""


class MailConnection(asyncio.BufferedProtocol):
    __slots__ = (
        "_budget",
        "_charged",
        "_compact",
        "_envelope",
        "_cause",
        "_closed_by",
        "_closing",
        "_connected",
        "_core",
        "_deadline",
        "_engine",
        "_held",
        "_hello",
        "_loop",
        "_out",
        "_paused",
        "_pending",
        "_recs",
        "_sink",
        "_sink_many",
        "_started",
        "_timer",
        "_timer_at",
        "_timer_when",
        "_throttled",
        "_tls_fields",
        "_transport",
        "binding",
        "bytes_in",
        "bytes_out",
        "client",
        "conn_id",
        "cport",
        "listener",
        "local",
        "mode",
        "policy",
        "tls",
    )

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.conn_id = ""
        self.client = ""
        self.cport = 0
        self.local: tuple[str, int] = ("", 0)
        self.binding: Binding | None = None
        self.policy: TestCase = BASELINE
        self.tls: TlsInfo | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.mode = "plain"  # plain | tls | hello | fallback | blocked
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._core: Core | None = None
        self._engine: TlsEngine | None = None
        self._hello: ClientHelloReader | None = None
        self._connected = False  # Connected was given to the core
        self._closing = False
        self._closed_by = ""
        self._cause = "server"  # who a Close applied now is attributed to
        self._paused = 0
        self._held: deque[Command] | None = None
        self._pending: deque[tuple[Event, str]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._timer_when = 0.0
        self._deadline: asyncio.TimerHandle | None = None
        self._tls_fields: dict[str, str] | None = None
        self._envelope: dict[str, Any] = {}
        self._sink = listener.host.sink
        self._sink_many = listener.sink_many
        self._out: list[bytes] | None = None  # corked writes while one read is processed
        # records of one read, handed to the sink together right before the corked writes
        self._recs: list[dict[str, Any]] | None = None
        self._started = 0.0
        # what the connection costs (see ``recording``): set up once it is admitted
        self._compact: CompactRecorder | None = None  # bound to no run: recorded compactly
        self._budget = ConnectionBudget(0, 0)
        self._charged = [0, 0]  # records and bytes not yet charged to the address
        self._throttled = False  # its address is over budget: nothing more is recorded

    # --- asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._started = time.monotonic()
        self._out = []
        self._recs = []
        try:
            self._open(transport)
            self._uncork()
        except OSError as exc:
            self._cannot_record(exc)
        except Exception:
            log.exception("connection setup failed")
            self._abort("error")
        finally:
            self._out = self._recs = None

    def _open(self, transport: asyncio.Transport) -> None:
        host = self.listener.host
        spec = self.listener.spec
        peer = transport.get_extra_info("peername") or ("", 0)
        sock = transport.get_extra_info("sockname") or ("", 0)
        self.client, self.cport = str(peer[0]), int(peer[1])
        self.local = (str(sock[0]), int(sock[1]))
        self.conn_id = host.next_conn_id()
        self.binding = host.binder(self.client, self.local)
        self._make_envelope()
        refusal = host.admit(self)
        if refusal is not None:
            self._closing = True
            self._closed_by = "refused"
            if host.allow_refusal_record():
                self._record(obs.ConnectionRefused(refusal))
            transport.abort()
            return
        host.register(self)
        rec = host.settings.recording
        if self.binding is None:
            self._compact = CompactRecorder(rec.sample_lines)
            self._budget = ConnectionBudget(rec.unbound_records, rec.unbound_bytes)
            self._throttled = host.address_over(self) is not None
        else:
            self._budget = ConnectionBudget(rec.bound_records, rec.bound_bytes)
        self.policy = policy_for(self.binding, spec.protocol)
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        self._record(
            obs.ConnectionOpened(
                security="tls" if spec.implicit_tls else "starttls",
                testcase=self.policy.name,
                active=self.binding is not None and self.binding.active,
            )
        )
        if spec.implicit_tls and self.policy.implicit_tls() is ImplicitTls.BLOCK:
            self._block(host.settings.tls.blocked_style)
            return
        self._core = self.listener.core_factory(self.listener.context(self.policy))
        if spec.implicit_tls:
            self._start_tls()
        else:
            self._connected = True
            self._dispatch(Connected(), "server")
        if self._throttled:
            self.kick(ADDRESS_OVER_BUDGET)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        self.bytes_in += nbytes
        if self._closing:
            return
        # cork: the records of one read go to the sink together, then its replies in one write
        self._out = []
        self._recs = []
        try:
            self._received(_READ_VIEW[:nbytes])
            self._check_budgets()
            self._uncork()
            if nbytes == READ_BYTES and self._loop is not None and not self._closing:
                # more is probably waiting: read it on the next loop turn (uvloop would read
                # again at once, so a pipelining peer could hold the loop for seconds)
                self._pause(_PAUSE_TURN)
                self._loop.call_soon(self._resume, _PAUSE_TURN)
        except OSError as exc:
            self._cannot_record(exc)
        except Exception:
            log.exception("connection %s failed", self.conn_id)
            self._abort("error")
        finally:
            self._out = self._recs = None

    def _check_budgets(self) -> None:
        """After a read: past its own budget, or its address past its budget (connections bound
        to no run), the connection gets the protocol's goodbye (SMTP 421, IMAP BYE, POP3 -ERR).
        The connection that takes its address past the budget records that (once per window)
        and keeps its summary; the address's other connections record nothing more."""
        goodbye = None
        compact = self._compact
        if (
            compact is not None
            and not compact.promoted
            and not self._throttled
            and self._charged[0]
        ):
            records, nbytes = self._charged
            self._charged = [0, 0]
            over = self.listener.host.charge(self, records, nbytes)
            if over is not None:
                what, limit, first = over
                if first:
                    self._emit(self._build(obs.BudgetExceeded("address", what, limit)))
                else:
                    self._throttled = True
                goodbye = ADDRESS_OVER_BUDGET
        passed = self._budget.passed()
        if passed is not None:
            self._record(obs.BudgetExceeded("connection", *passed))
            goodbye = CONNECTION_OVER_BUDGET
        if goodbye is not None and not self._closing:
            self.kick(goodbye)

    def _cannot_record(self, exc: OSError) -> None:
        """The sink cannot record (the store raises an ``OSError`` such as ENOSPC when the disk
        is full): the client gets the protocol's temporary-failure goodbye (SMTP 421, IMAP
        BYE, POP3 -ERR) instead of a bare close, and nothing more is recorded for it."""
        global _sink_failure_logged
        now = time.monotonic()
        if now - _sink_failure_logged >= SINK_FAILURE_LOG_SECONDS:
            _sink_failure_logged = now
            log.error("cannot record mail connections (%s); answering a temporary failure", exc)
        self._sink = self._sink_many = _discard
        self._out, self._recs = [], []
        if self._core is None or not self._connected or self._closing:
            self._abort("error")
            return
        try:
            self._dispatch(Kicked("cannot record now (disk full); try again later"), "error")
            self._uncork()
        except Exception:
            log.exception("connection %s failed", self.conn_id)
            self._abort("error")

    def _flush_records(self) -> None:
        """Hand the corked records to the sink (a subscriber may add more: loop)."""
        recs = self._recs
        while recs:
            self._recs = []
            if len(recs) == 1:
                self._sink(recs[0])
            else:
                self._sink_many(recs)
            recs = self._recs

    def _uncork(self) -> None:
        """Records first, then the corked writes (a record precedes the reply it explains).
        Reads stay corked (lists left empty) until the end of the callback."""
        self._flush_records()
        out = self._out
        if out:
            self._out = None
            self._write(out[0] if len(out) == 1 else b"".join(out))
            self._out = []

    def eof_received(self) -> bool:
        try:
            self._peer_eof()
        except Exception:
            log.exception("connection %s failed at EOF", self.conn_id)
            self._abort("error")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._recs = []
        try:
            self._lost(exc)
            self._flush_records()
            if self._compact is not None and not self._throttled and self._closed_by != "refused":
                self.listener.host.charge(self, *self._charged)  # its summary counts too
                self._charged = [0, 0]
        except OSError:  # the sink cannot record (disk full): already said, once
            pass
        except Exception:
            log.exception("connection %s failed when closed", self.conn_id)
        finally:
            self._recs = None

    def pause_writing(self) -> None:
        self._pause(_PAUSE_WRITE)

    def resume_writing(self) -> None:
        self._resume(_PAUSE_WRITE)

    # --- from the server ------------------------------------------------------------------

    def kick(self, reason: str) -> None:
        """The server closes this connection (run activation, step start, shutdown)."""
        if self._closing:
            return
        try:
            if self._core is None or not self._connected:
                self._close(False, "kick")
            else:
                self._dispatch(Kicked(reason), "kick")
        except Exception:
            log.exception("connection %s failed when kicked", self.conn_id)
            self._abort("error")

    def abort(self) -> None:
        self._abort("kick")

    @property
    def closing(self) -> bool:
        return self._closing

    # --- input ------------------------------------------------------------------------------

    def _received(self, data: memoryview) -> None:
        mode = self.mode
        if mode == "plain":
            self._dispatch(DataReceived(bytes(data)), "server")
        elif mode == "tls":
            self._tls_received(data)
        elif mode == "hello":
            self._hello_received(bytes(data))
        elif mode == "fallback":
            self._fallback_received(bytes(data))
        elif mode == "blocked" and self._engine is not None:
            self._tls_received(data)
        # blocked without TLS: the silent attacker discards everything

    def _tls_received(self, data: memoryview) -> None:
        engine = self._engine
        assert engine is not None
        out = engine.receive(data)
        if out.outgoing:
            self._write(out.outgoing)
        if out.established is not None:
            self._tls_up(out.established)
        if out.failure is not None:
            self._tls_failed(out.failure, "server")
            return
        if out.plaintext and self._engine is not None and not self._closing:
            self._dispatch(DataReceived(out.plaintext), "server")
        if out.eof and not self._closing:  # close_notify: the core sees Closed when it is gone
            self._close(False, "client")

    def _tls_up(self, info: TlsInfo) -> None:
        self._cancel_deadline()
        self.tls = info
        self._tls_fields = {"version": info.version, "cipher": info.cipher}
        if self.mode == "blocked":  # handshake_then_close
            self._record(obs.TlsStarted(info.version, info.cipher, implicit=True))
            self._close(False, "server")
        elif not self._connected:  # implicit TLS: the core starts after the handshake
            self._connected = True
            self._dispatch(Connected(tls=info), "server")
        else:
            self._dispatch(TlsEstablished(info), "server")

    def _tls_failed(self, reason: str, cause: str) -> None:
        engine = self._engine
        self._engine = None
        self._cancel_deadline()
        if engine is not None and engine.established:  # broken session: treat as gone
            self.tls = None
            self._tls_fields = None
            self._dispatch(Closed(), "error")
            self._close(False, "error")
        elif self._connected:  # STARTTLS: the core decides (records, closes)
            self.mode = "plain"
            self._dispatch(TlsFailed(reason), cause)
        else:  # implicit TLS or handshake_then_close: no core session to tell
            self._record(obs.TlsHandshakeFailed(reason))
            self._close(False, cause)

    def _hello_received(self, data: bytes) -> None:
        reader = self._hello
        assert reader is not None
        result = reader.feed(data)
        if result is not None:
            self._hello_done(result.nbytes, result.looks_like_tls, result.rest)

    def _hello_done(self, nbytes: int, looks_like_tls: bool, rest: bytes) -> None:
        self._hello = None
        self._cancel_deadline()
        self.mode = "plain"
        self._dispatch(ClientHelloReceived(nbytes, looks_like_tls), "server")
        if rest and not self._closing:
            self._dispatch(DataReceived(rest), "server")

    def _fallback_received(self, data: bytes) -> None:
        """``tls_fallback``: the ClientHello is read before any TLS engine sees it."""
        reader = self._hello
        assert reader is not None
        result = reader.feed(data)
        if result is not None:
            self._fallback_hello(result)

    def _fallback_hello(self, result: ClientHelloRead) -> None:
        """The client's first ClientHello on this port in this step gets a TLS alert, as a
        middlebox would, and so do its retries that offer as much; one that offers less is
        served by a context that allows TLS 1.0 to 1.3 (OpenSSL picks the highest offered and
        refuses a ``TLS_FALLBACK_SCSV`` below its own highest: ``inappropriate_fallback``)."""
        self._hello = None
        offer = parse_client_hello(result.record) if result.looks_like_tls else None
        if offer is None:  # not a ClientHello: the engine fails on it as usual
            self._engine = TlsEngine(self.listener.host.ssl_context(self.policy.certificate()))
            self.mode = "tls"
            self._tls_received(memoryview(result.record + result.rest))
            return
        attempt, first = self.listener.host.fallback_attempt(self, offer.highest)
        fallback = offer.highest < first
        self._record(
            obs.ClientHelloOffered(
                attempt=attempt,
                highest=version_name(offer.highest),
                versions=tuple(version_name(v) for v in offer.versions),
                fallback_scsv=offer.fallback_scsv,
                fallback=fallback,
                answer="served" if fallback else "alert",
            )
        )
        if not fallback:
            self._write(FALLBACK_ALERT)
            self._tls_failed("fallback_alert_sent", "server")
            self._close(False, "server")
            return
        self._engine = TlsEngine(self.listener.host.ssl_context(legacy=True))
        self.mode = "tls"
        self._tls_received(memoryview(result.record + result.rest))

    def _hello_finish(self, reason: str, cause: str) -> None:
        """No more bytes will come for the ClientHello being read (deadline, end of stream)."""
        reader = self._hello
        assert reader is not None
        r = reader.finish()
        if self.mode == "fallback":  # an incomplete ClientHello: a failed handshake
            self._hello = None
            self._tls_failed(reason, cause)
        else:
            self._hello_done(r.nbytes, r.looks_like_tls, r.rest)

    def _peer_eof(self) -> None:
        """The peer finished sending: finish what waits for input, then the core sees Closed."""
        if self._closing:
            return
        if self._hello is not None:
            self._hello_finish("connection_closed", "client")
        elif self._engine is not None and not self._engine.established and self._connected:
            self._tls_failed("connection_closed", "client")
        self._closed_by = "client"

    def _lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._cancel_deadline()
        self._closing = True
        if not self._closed_by:
            # a reset or broken pipe is the peer leaving; anything else is our failure
            self._closed_by = "client" if exc is None or isinstance(exc, OSError) else "error"
        if self._closed_by == "refused":
            return
        self._held = None
        self._pending.clear()
        if self._core is not None and self._connected and self._closed_by in _PEER_GONE:
            # the peer went away (not a server close): only the core's records are applied
            for cmd in self._core.handle(Closed()):
                if type(cmd) is Record:
                    self._record(cmd.observation)
        self.listener.host.unregister(self)
        self._record(
            obs.ConnectionClosed(
                by=self._closed_by,
                bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
                duration=round(time.monotonic() - self._started, 3),
            )
        )
        self._core = None
        self._engine = None
        self._transport = None

    # --- events to the core -------------------------------------------------------------

    def _dispatch(self, event: Event, cause: str) -> None:
        """Give the core one event and apply its commands (queued while commands are held)."""
        if self._held is not None:
            self._pending.append((event, cause))
            return
        core = self._core
        if core is None or self._closing:
            return
        self._cause = cause
        self.apply(core.handle(event))

    def apply(self, commands: Iterable[Command]) -> None:
        """Turn commands into I/O, in order. The only place that writes, closes or records."""
        it = iter(commands)
        for cmd in it:
            kind = type(cmd)
            if kind is Record:
                self._record(cast(Record, cmd).observation)
            elif self._closing:
                continue
            elif kind is Send:
                send = cast(Send, cmd)
                if send.delay > 0:
                    self._hold(send.delay, [Send(send.data), *it])
                    return
                self._send(send.data)
            elif kind is SetTimer:
                self._set_timer(cast(SetTimer, cmd).seconds)
            elif kind is SendRaw:
                self._send_raw(cast(SendRaw, cmd).data)
            elif kind is StartTls:
                self._start_tls()
            elif kind is ReadClientHello:
                self._read_client_hello()
            elif kind is Close:
                self._close(cast(Close, cmd).reset, self._cause)
            else:
                raise TypeError(f"unknown command {cmd!r}")

    # --- commands -----------------------------------------------------------------------------

    def _record(self, o: Observation) -> None:
        """Hand one event to the sink (compactly for a connection bound to no run, nothing when
        its address is over budget; counted against the connection's budget either way)."""
        record = self._build(o)
        budget = self._budget
        budget.observed()
        if self._throttled:
            return  # its address is over budget: counted there, not recorded
        compact = self._compact
        if compact is None or compact.promoted:
            budget.wrote(record)
            self._emit(record)
            return
        self._charged[0] += 1
        for out in compact.take(record):
            self._charged[1] += budget.wrote(out)
            self._emit(out)

    def _build(self, o: Observation) -> dict[str, Any]:
        """The event: the connection's envelope plus the observation's fields (which win on a
        name clash, as in ``{**envelope, **fields}``)."""
        record = self._envelope.copy()
        record["ts"] = _now()
        record["tls"] = self._tls_fields
        record["type"] = o.TYPE
        cls = type(o)
        names = _FIELD_NAMES[cls] if cls in _FIELD_NAMES else _field_names(cls)
        if names is None:
            record.update(o.as_fields())
        else:
            for name in names:
                record[name] = getattr(o, name)
        return record

    def _emit(self, record: dict[str, Any]) -> None:
        recs = self._recs
        if recs is None:
            self._sink(record)
        else:
            recs.append(record)

    def _make_envelope(self) -> None:
        binding = self.binding
        spec = self.listener.spec
        self._envelope = {
            "ts": 0.0,
            "conn": self.conn_id,
            "protocol": spec.protocol,
            "listener": spec.name,
            "port": self.local[1],
            "client": self.client,
            "cport": self.cport,
            "tls": None,
            "run": binding.run_id if binding is not None else None,
            "step": binding.step if binding is not None else None,
            "binding": binding.as_fields() if binding is not None else None,
            "type": "",
        }

    def _send(self, data: bytes) -> None:
        engine = self._engine
        if engine is None:
            self._write(data)
        elif engine.established:
            self._write(engine.encrypt(data))
        else:
            log.debug("connection %s: Send during a TLS handshake dropped", self.conn_id)

    def _send_raw(self, data: bytes) -> None:
        """Write outside TLS. An established TLS session is abandoned: what the peer sends
        afterwards reaches the core as raw TCP bytes (alerts, plaintext commands)."""
        if self._engine is not None:
            self._engine = None
            self.tls = None
            self._tls_fields = None
            self.mode = "plain"
        self._write(data)

    def _write(self, data: bytes) -> None:
        if self._out is not None:
            if data:
                self._out.append(data)
            return
        transport = self._transport
        if transport is None or not data:
            return
        self.bytes_out += len(data)
        transport.write(data)
        if self._paused & _PAUSE_WRITE and transport.get_write_buffer_size() > WRITE_HARD_LIMIT:
            log.info("connection %s: peer does not read, aborting", self.conn_id)
            self._abort("error")

    def _start_tls(self) -> None:
        if self.policy.tls_fallback() and self.mode != "blocked":
            self._hello = ClientHelloReader()  # answered by _fallback_hello
            self.mode = "fallback"
        else:
            self._engine = TlsEngine(self.listener.host.ssl_context(self.policy.certificate()))
            if self.mode != "blocked":
                self.mode = "tls"
        self._arm_deadline()

    def _read_client_hello(self) -> None:
        self._hello = ClientHelloReader()
        self.mode = "hello"
        self._arm_deadline()

    def _close(self, reset: bool, by: str) -> None:
        if self._closing:
            return
        self._closing = True
        self._closed_by = self._closed_by or by
        self._cancel_timer()
        self._cancel_deadline()
        transport = self._transport
        if transport is None:
            return
        if reset:
            if self._out is not None:
                self._out = []  # nothing queued is sent on a reset
            self._flush_records()
            _set_linger_zero(transport)
            transport.abort()
            return
        engine = self._engine
        if engine is not None and engine.established:
            self._write(engine.close_notify())
        self._uncork()
        if self._loop is None or not transport.can_write_eof():
            transport.close()
            return
        try:
            transport.write_eof()  # FIN after the last line; input is read and dropped meanwhile
        except OSError:  # the peer is gone already (ENOTCONN): nothing to linger for
            transport.close()
            return
        self._loop.call_later(LINGER_SECONDS, transport.close)

    def _abort(self, by: str) -> None:
        if self._out is not None:
            self._out = []  # nothing queued is sent
        recs, self._recs = self._recs, None
        if recs:  # what was observed is still recorded (unless the sink itself failed)
            try:
                self._sink_many(recs)
            except Exception:
                log.exception("connection %s: records lost", self.conn_id)
        if not self._closed_by:
            self._closed_by = by
        self._closing = True
        self._cancel_timer()
        self._cancel_deadline()
        if self._transport is not None:
            self._transport.abort()

    def _block(self, style: BlockStyle) -> None:
        self.mode = "blocked"
        self._record(obs.ImplicitTlsBlocked(str(style)))
        if style is BlockStyle.CLOSE:
            self._close(False, "server")
        elif style is BlockStyle.RESET:
            self._close(True, "server")
        elif style is BlockStyle.HANDSHAKE_THEN_CLOSE:
            self._start_tls()
        else:  # silence: send nothing, discard input, close after the bound
            self._cause = "timeout"
            self._set_timer(self.listener.host.settings.tls.blocked_seconds)

    # --- delayed sends (ordering preserved) ----------------------------------------------------

    def _hold(self, delay: float, rest: Sequence[Command]) -> None:
        assert self._loop is not None
        self._held = deque(rest)
        self._pause(_PAUSE_HOLD)
        cause = self._cause
        self._loop.call_later(delay, self._release, cause)

    def _release(self, cause: str) -> None:
        held = self._held
        self._held = None
        if held is None or self._closing:
            return
        try:
            self._cause = cause
            self.apply(held)
            while self._held is None and self._pending and not self._closing:
                event, event_cause = self._pending.popleft()
                self._dispatch(event, event_cause)
            if self._held is None:
                self._resume(_PAUSE_HOLD)
        except Exception:
            log.exception("connection %s failed", self.conn_id)
            self._abort("error")

    def _pause(self, bit: int) -> None:
        if not self._paused and self._transport is not None and not self._closing:
            self._transport.pause_reading()
        self._paused |= bit

    def _resume(self, bit: int) -> None:
        if not self._paused & bit:
            return
        self._paused &= ~bit
        if not self._paused and self._transport is not None and not self._closing:
            self._transport.resume_reading()

    # --- timers ----------------------------------------------------------------------------------

    def _set_timer(self, seconds: float | None) -> None:
        """Re-arm the single timer lazily: a later deadline only moves ``_timer_at``; the
        handle re-schedules itself when it fires early (cheap for per-reply idle timers)."""
        if seconds is None:
            self._timer_at = None
            return
        assert self._loop is not None
        at = self._loop.time() + seconds
        self._timer_at = at
        if self._timer is None or self._timer_when > at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(at, self._on_timer)
            self._timer_when = at

    def _on_timer(self) -> None:
        self._timer = None
        at = self._timer_at
        if at is None or self._closing or self._loop is None:
            return
        if self._loop.time() < at - 0.001:
            self._timer = self._loop.call_at(at, self._on_timer)
            self._timer_when = at
            return
        self._timer_at = None
        try:
            if self._core is None:  # blocked silence
                self._close(False, "timeout")
            else:
                self._dispatch(Timeout(), "timeout")
        except Exception:
            log.exception("connection %s failed on timeout", self.conn_id)
            self._abort("error")

    def _cancel_timer(self) -> None:
        self._timer_at = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm_deadline(self) -> None:
        assert self._loop is not None
        self._cancel_deadline()
        seconds = self.listener.host.settings.tls.handshake_seconds
        self._deadline = self._loop.call_later(seconds, self._on_deadline)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_deadline(self) -> None:
        """The TLS handshake or the ClientHello did not complete in time."""
        self._deadline = None
        if self._closing:
            return
        try:
            if self._hello is not None:
                self._hello_finish("handshake_timeout", "timeout")
            elif self._engine is not None and not self._engine.established:
                self._tls_failed("handshake_timeout", "timeout")
        except Exception:
            log.exception("connection %s failed on deadline", self.conn_id)
            self._abort("error")


_LINGER_ZERO = struct.pack("ii", 1, 0)
_now = time.time


def _set_linger_zero(transport: asyncio.BaseTransport) -> None:
    """SO_LINGER with timeout 0: closing the socket sends a TCP reset."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
