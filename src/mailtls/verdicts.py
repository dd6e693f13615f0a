"""Verdicts: what the events of one step and the user's answers mean (DESIGN §8). Pure.

``step_verdict(info, events, reports, loop_connections=N, loop_seconds=M)`` takes the step
(scenario, test case, state, whether a two_phase step was activated), the events of the
connections bound to it plus those of connections bound elsewhere (or not at all) that presented
the run's code, and the user's reports; it returns a ``StepResult``: the verdict, a reason, the
findings (tags with event ids as evidence) and one verdict per protocol.

Rules, per protocol, from the connections whose accept-time binding is this step:
- FAIL (cases beyond T1-T4, from the policy the connection got): ``credentials_before_530`` /
  ``ignored_logindisabled`` (a secret sent in the clear although the server said STARTTLS is
  required), ``preauth_plaintext`` (mailbox commands in a PREAUTH session without TLS),
  ``response_injection`` (a login inside TLS that followed the forged answer),
  ``accepted_bad_certificate`` (a secret sent inside TLS with a ``cert_*`` certificate; a
  refused handshake there is the secure ``rejected_bad_certificate``), ``version_fallback`` (a
  secret sent under TLS 1.0/1.1 after ``tls_fallback`` alerted the first ClientHello; a retry
  that offers less without ``TLS_FALLBACK_SCSV`` is the finding ``fallback_without_scsv``, a
  client that never retries lower is the secure outcome). NOT_APPLICABLE
  ``testcase_not_applicable`` for a protocol the step's case does not apply to (unless FAIL).
- FAIL: the run's password (``auth`` with ``secret_in_clear`` and ``proof``) sent without TLS.
  FAIL always wins, whatever
  else happened (a skipped step, a prompt, a later TLS login). A login with another run's code
  is that run's evidence (its ``binding_mismatch``), not this step's.
- INCONCLUSIVE ``binding_mismatch``: a login with the run's code on a connection bound elsewhere
  or not at all (a cleartext credential there is reported as a finding of the mode it got).
- Only connections where the attack was active count for PASS or FAIL (two_phase: accepted after
  activation). None: INCONCLUSIVE ``not_exercised``.
- PASS: a secret was sent inside TLS there. Otherwise INCONCLUSIVE ``loop`` (>= N connections
  within M s after a disruption, no secret sent), ``aborted_after_downgrade`` (the attack showed,
  the client went no further: the secure outcome), or ``not_exercised``.
Only the run's password is evidence (the username travels in the clear, and anyone who reads a
dedicated port can connect to it): an ``auth`` event with ``proof`` false (a wrong password for
the run's username, or a username that names no run) is never FAIL, PASS, ``binding_mismatch`` or
``report_contradicts_events``; the run manager hands the wrong passwords for the run's username
in as ``misuses`` and they become the finding ``username_misused`` (count and times, no
address). Events journalled before ``proof`` existed count as proven.
Step level: the user's reports add WARN (prompt shown) and NOT_APPLICABLE (could not connect); no
connection and no report is INCONCLUSIVE ``never_connected``; the verdict is the worst in the order
FAIL > WARN > INCONCLUSIVE > NOT_APPLICABLE > PASS > SKIPPED. A skipped step is SKIPPED unless FAIL.

No I/O, no clock: time comes from the events' ``ts``. Imports only ``mailtls.testcases``; never
the store, net or web.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailtls.testcases import TESTCASES, VALID_CERTIFICATE, ImplicitTls

Event = Mapping[str, Any]


class Verdict(enum.StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"
    WARN = "WARN"
    NOT_APPLICABLE = "NOT_APPLICABLE"
    SKIPPED = "SKIPPED"


SEVERITY: dict[Verdict, int] = {
    Verdict.FAIL: 5,
    Verdict.WARN: 4,
    Verdict.INCONCLUSIVE: 3,
    Verdict.NOT_APPLICABLE: 2,
    Verdict.PASS: 1,
    Verdict.SKIPPED: 0,
}

# the order findings are listed in
TAGS = (
    "version_fallback",
    "accepted_bad_certificate",
    "credentials_before_530",
    "ignored_logindisabled",
    "preauth_plaintext",
    "response_injection",
    "plaintext_auth",
    "starttls_not_attempted",
    "username_plaintext",
    "username_misused",
    "binding_mismatch",
    "loop",
    "starttls_disrupted",
    "fallback_without_scsv",
    "pipelined_after_starttls",
    "tls_auth",
    "rejected_bad_certificate",
    "user_prompt",
    "user_cannot_connect",
    "report_contradicts_events",
)


@dataclass(frozen=True, slots=True)
class StepInfo:
    run_id: str
    n: int
    scenario: str  # "immediate" | "two_phase"
    testcase: str
    state: str  # "pending" | "active" | "finished" | "skipped"
    code: str  # the run's session code
    activated: bool = False  # two_phase: the activating TLS login happened


@dataclass(frozen=True, slots=True)
class UserReports:
    """The user's answers for a step; ``record_id`` is the journal record that holds them."""

    prompt_shown: bool = False
    cannot_connect: bool = False
    record_id: int | None = None


@dataclass(frozen=True, slots=True)
class Misuse:
    """A login with the run's username and a secret that is not the run's password: when, its
    event id, and whether its connection was bound to the run (then maybe the user's own client
    with a mistyped password). Never the address."""

    at: float
    event: int | None = None
    bound: bool = False


MAX_MISUSE_TIMES = 10  # times listed in the finding's detail (the count is complete)


@dataclass(frozen=True, slots=True)
class StepFinding:
    tag: str
    evidence: tuple[int, ...]
    detail: str
    protocol: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "evidence": list(self.evidence),
            "detail": self.detail,
            "protocol": self.protocol,
        }


@dataclass(frozen=True, slots=True)
class ProtocolResult:
    verdict: Verdict
    reason: str
    connections: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": str(self.verdict),
            "reason": self.reason,
            "connections": self.connections,
        }


@dataclass(frozen=True, slots=True)
class StepResult:
    verdict: Verdict
    reason: str
    findings: tuple[StepFinding, ...] = ()
    protocols: Mapping[str, ProtocolResult] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": str(self.verdict),
            "reason": self.reason,
            "findings": [f.as_dict() for f in self.findings],
            "protocols": {p: r.as_dict() for p, r in self.protocols.items()},
        }

    def tags(self) -> set[str]:
        return {f.tag for f in self.findings}


def worst(verdicts: Iterable[Verdict]) -> Verdict | None:
    return max(verdicts, key=SEVERITY.__getitem__, default=None)


# --- connections ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Conn:
    """The events of one connection, with what it got at accept time."""

    conn: str
    protocol: str
    bound: bool  # accept-time binding is this step
    testcase: str
    active: bool
    opened: float
    opened_id: int
    events: list[Event]

    @property
    def mode(self) -> str:
        if not self.bound:
            return f"{self.testcase}, not bound to this step"
        return self.testcase if self.active else f"{self.testcase}, before activation"

    def of_type(self, *types: str) -> list[Event]:
        return [e for e in self.events if e.get("type") in types]


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _float(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0


def _proven(event: Event) -> bool:
    """The login presented the run's password (events written before ``proof`` existed count)."""
    return event.get("proof") is not False


def _binding_of(event: Event) -> tuple[Any, Any]:
    binding = event.get("binding")
    if isinstance(binding, Mapping):
        return binding.get("run"), binding.get("step")
    return event.get("run"), event.get("step")


def _group(info: StepInfo, events: Sequence[Event]) -> list[_Conn]:
    by_conn: dict[str, list[Event]] = {}
    for event in events:
        conn = event.get("conn")
        if isinstance(conn, str | int) and not isinstance(conn, bool):
            by_conn.setdefault(str(conn), []).append(event)
    conns = []
    for conn, evs in by_conn.items():
        evs.sort(key=lambda e: _int(e.get("id")))
        first = evs[0]
        run, step = _binding_of(first)
        opened = next((e for e in evs if e.get("type") == "connection_opened"), first)
        raw = first.get("binding")
        binding: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        testcase = opened.get("testcase", binding.get("testcase", "baseline"))
        active = opened.get("active", binding.get("active", False))
        conns.append(
            _Conn(
                conn=conn,
                protocol=str(first.get("protocol") or "unknown"),
                bound=run == info.run_id and step == info.n,
                testcase=str(testcase),
                active=bool(active),
                opened=_float(opened.get("ts")),
                opened_id=_int(opened.get("id")),
                events=evs,
            )
        )
    conns.sort(key=lambda c: (c.opened, c.opened_id))
    return conns


# --- per protocol --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Evidence:
    """Findings of one protocol: (tag, detail) -> event ids."""

    protocol: str
    items: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def add(self, tag: str, detail: str, events: Iterable[Event]) -> None:
        self.add_ids(tag, detail, [_int(e.get("id")) for e in events])

    def add_ids(self, tag: str, detail: str, ids: list[int]) -> None:
        if ids:
            self.items.setdefault((tag, detail), []).extend(ids)

    def findings(self) -> list[StepFinding]:
        return [
            StepFinding(tag, tuple(sorted(set(ids))), detail, self.protocol)
            for (tag, detail), ids in self.items.items()
        ]


def _is_attack_event(event: Event) -> bool:
    kind = event.get("type")
    if kind in (
        "starttls_disrupted",
        "implicit_tls_blocked",
        "preauth_greeted",
        "response_injected",
    ):
        return True
    if kind == "starttls_refused":
        return event.get("reason") in ("testcase", "not_advertised")
    if kind == "client_hello_offered":
        return event.get("answer") == "alert"
    if kind == "capabilities_sent":
        return not event.get("starttls_offered") and not event.get("tls")
    return False


LEGACY = ("SSLv3", "TLSv1", "TLSv1.1")  # the versions below TLS 1.2


def _tls_version(conn: _Conn) -> str:
    """The version of the connection's TLS session (one per connection), or ``""``."""
    started = conn.of_type("tls_established")
    return str(started[-1].get("version") or "") if started else ""


def _bad_certificate(conn: _Conn) -> bool:
    """The connection presented a certificate an attacker could present (``cert_*``)."""
    policy = TESTCASES.get(conn.testcase)
    return conn.active and policy is not None and policy.certificate() != VALID_CERTIFICATE


def _implicit_tls_open(conn: _Conn) -> bool:
    if not conn.active:
        return True  # baseline behaviour: implicit-TLS ports accept
    policy = TESTCASES.get(conn.testcase)
    return policy is not None and policy.implicit_tls() is ImplicitTls.ACCEPT


def _tls_was_available(conn: _Conn, before_id: int) -> bool:
    """STARTTLS was advertised before ``before_id``, or implicit TLS was open in this mode."""
    offered = any(
        e.get("starttls_offered") and _int(e.get("id")) < before_id
        for e in conn.of_type("capabilities_sent")
    )
    return offered or _implicit_tls_open(conn)


def _starttls_tried(conn: _Conn, before_id: int) -> bool:
    """STARTTLS was requested, or TLS was up (implicit TLS), before ``before_id``."""
    tried = conn.of_type("starttls_requested", "tls_established")
    return any(_int(e.get("id")) < before_id for e in tried)


class _ProtocolJudge:
    """Judges one protocol's connections of a step and collects its findings."""

    def __init__(self, info: StepInfo, protocol: str, conns: list[_Conn]) -> None:
        self.info = info
        self.protocol = protocol
        self.bound = [c for c in conns if c.bound]
        self.others = [c for c in conns if not c.bound]
        self.found = _Evidence(protocol)
        self.mismatched: list[Event] = []

    def _ours(self, event: Event) -> bool:
        code = event.get("code")
        return (code is None or code == self.info.code) and _proven(event)

    def _logins(self, conn: _Conn, *types: str) -> list[Event]:
        if conn.bound:
            return [e for e in conn.of_type(*types) if self._ours(e)]
        code = self.info.code
        return [e for e in conn.of_type(*types) if e.get("code") == code and _proven(e)]

    def _collect_cleartext(self, conns: list[_Conn]) -> list[Event]:
        """Cleartext findings of ``conns``; returns the secret-carrying messages sent in clear."""
        found = []
        for conn in conns:
            clear = [e for e in self._logins(conn, "auth") if e.get("secret_in_clear")]
            self.found.add("plaintext_auth", f"credentials sent without TLS ({conn.mode})", clear)
            missed = [
                e
                for e in clear
                if _tls_was_available(conn, _int(e.get("id")))
                and not _starttls_tried(conn, _int(e.get("id")))
            ]
            self.found.add(
                "starttls_not_attempted",
                f"TLS was available and the client logged in without trying it ({conn.mode})",
                missed,
            )
            users = [e for e in self._logins(conn, "username_sent") if not e.get("tls")]
            self.found.add("username_plaintext", f"username sent without TLS ({conn.mode})", users)
            found.extend(clear)
        return found

    def judge(self, loop_connections: int, loop_seconds: float) -> ProtocolResult:
        cleartext = self._collect_cleartext(self.bound)
        # DESIGN §5: in two_phase, PASS/FAIL come only from connections accepted after
        # activation; a cleartext login before it stays a finding (plaintext_auth,
        # starttls_not_attempted: the client is configured without encryption), not the verdict.
        active_conns = {c.conn for c in self.bound if c.active}
        failed = [e for e in cleartext if e.get("conn") in active_conns]
        self._collect_cleartext(
            self.others
        )  # reported as findings of the mode those connections got
        self._collect_bound_findings()
        self.mismatched = [e for c in self.others for e in self._logins(c, "auth", "username_sent")]
        self.found.add(
            "binding_mismatch",
            "the run's account was used on a connection not bound to this step",
            self.mismatched,
        )
        count = len(self.bound)
        case_failure = self._case_failures()
        if case_failure is not None:
            return ProtocolResult(Verdict.FAIL, case_failure, count)
        if failed:
            return ProtocolResult(Verdict.FAIL, "plaintext_auth", count)
        if self.mismatched:
            return ProtocolResult(Verdict.INCONCLUSIVE, "binding_mismatch", count)
        return self._judge_active(loop_connections, loop_seconds)

    def _case_failures(self) -> str | None:
        """The FAILs of the cases beyond T1-T4, on the active connections of this step (the
        policy a connection got is its recorded test case); returns the first one's tag."""
        found: list[str] = []
        for conn in self.bound:
            policy = TESTCASES.get(conn.testcase)
            if not conn.active or policy is None:
                continue
            tag = policy.cleartext_finding.get(self.protocol)
            if tag is not None:
                clear = [e for e in self._logins(conn, "auth") if e.get("secret_in_clear")]
                detail = CASE_DETAIL[tag]
                if clear:
                    self.found.add(tag, detail, clear)
                    found.append(tag)
            if policy.preauth():
                used = [e for e in conn.of_type("preauth_used") if not e.get("tls")]
                if used:
                    self.found.add("preauth_plaintext", CASE_DETAIL["preauth_plaintext"], used)
                    found.append("preauth_plaintext")
            if policy.certificate() != VALID_CERTIFICATE:
                accepted = [
                    e for e in self._logins(conn, "auth") if e.get("tls") and e.get("secret_sent")
                ]
                if accepted:
                    detail = CASE_DETAIL["accepted_bad_certificate"]
                    self.found.add("accepted_bad_certificate", detail, accepted)
                    found.append("accepted_bad_certificate")
            if policy.tls_fallback():
                fell = [
                    e
                    for e in self._logins(conn, "auth")
                    if e.get("tls") and e.get("secret_sent") and _tls_version(conn) in LEGACY
                ]
                if fell:
                    self.found.add("version_fallback", CASE_DETAIL["version_fallback"], fell)
                    found.append("version_fallback")
            if policy.inject_response():
                used = self._injection_used(conn)
                if used:
                    self.found.add("response_injection", CASE_DETAIL["response_injection"], used)
                    found.append("response_injection")
        return min(found, key=TAGS.index) if found else None

    def _injection_used(self, conn: _Conn) -> list[Event]:
        """``inject``: logins that show the forged answer was used: inside TLS a PLAIN login
        (only the forged answer offered PLAIN) or (SMTP) a login without the client's own EHLO
        inside TLS; or a secret sent in the clear after it (the forged bytes broke the client's
        handshake and it went on in plaintext)."""
        injected = [_int(e.get("id")) for e in conn.of_type("response_injected")]
        if not injected:
            return []
        after = min(injected)
        starts = [_int(e.get("id")) for e in conn.of_type("tls_established")]
        start = min(starts) if starts else None
        greeted = [_int(e.get("id")) for e in conn.of_type("client_identified")]
        used = []
        for auth in self._logins(conn, "auth"):
            at = _int(auth.get("id"))
            if at < after:
                continue
            if auth.get("secret_in_clear"):
                used.append(auth)
            elif auth.get("tls") and start is not None and at > start:
                plain = auth.get("mechanism") == "PLAIN"
                no_ehlo = self.protocol == "smtp" and not any(start < g < at for g in greeted)
                if plain or no_ehlo:
                    used.append(auth)
        return used

    def _collect_bound_findings(self) -> None:
        for conn in self.bound:
            tls = [e for e in self._logins(conn, "auth") if e.get("tls") and e.get("secret_sent")]
            self.found.add("tls_auth", f"credentials sent inside TLS ({conn.mode})", tls)
            self.found.add(
                "starttls_disrupted",
                f"the TLS negotiation was disrupted ({conn.mode})",
                conn.of_type("starttls_disrupted"),
            )
            if _bad_certificate(conn):
                for failed in conn.of_type("tls_failed"):
                    reason = str(failed.get("reason") or "no reason given")[:200]
                    self.found.add(
                        "rejected_bad_certificate",
                        f"the client refused the certificate ({reason})",
                        [failed],
                    )
                if not any(e.get("secret_sent") for e in conn.of_type("auth")):
                    # a client that checks the name after the handshake just leaves
                    self.found.add(
                        "rejected_bad_certificate",
                        "the client completed the handshake, then left without logging in",
                        conn.of_type("tls_established"),
                    )
            for offer in conn.of_type("client_hello_offered"):
                if offer.get("fallback") and not offer.get("fallback_scsv"):
                    highest = str(offer.get("highest") or "?")[:20]
                    self.found.add(
                        "fallback_without_scsv",
                        f"after the alert the client retried with {highest} at most, without "
                        "TLS_FALLBACK_SCSV",
                        [offer],
                    )
            self.found.add(
                "pipelined_after_starttls",
                "the client sent commands after STARTTLS without waiting for the reply",
                conn.of_type("pipelined_after_starttls"),
            )

    def _judge_active(self, loop_connections: int, loop_seconds: float) -> ProtocolResult:
        count = len(self.bound)
        two_phase_idle = self.info.scenario == "two_phase" and not self.info.activated
        active = [] if two_phase_idle else [c for c in self.bound if c.active]
        if not active:
            return ProtocolResult(Verdict.INCONCLUSIVE, "not_exercised", count)
        secrets_sent = [e for c in active for e in self._logins(c, "auth") if e.get("secret_sent")]
        if any(e.get("tls") for e in secrets_sent):
            return ProtocolResult(Verdict.PASS, "tls_auth", count)
        attacks = [
            e
            for c in active
            for e in c.events
            if _is_attack_event(e)
            or (e.get("type") in ("tls_failed", "tls_established") and _bad_certificate(c))
        ]
        looping = self._loop(active, attacks, loop_connections, loop_seconds)
        if looping and not secrets_sent:
            self.found.add_ids(
                "loop",
                f"{len(looping)} connections within {loop_seconds:g} s after a disruption",
                looping,
            )
            return ProtocolResult(Verdict.INCONCLUSIVE, "loop", count)
        if attacks:
            return ProtocolResult(Verdict.INCONCLUSIVE, "aborted_after_downgrade", count)
        return ProtocolResult(Verdict.INCONCLUSIVE, "not_exercised", count)

    @staticmethod
    def _loop(
        active: list[_Conn], attacks: list[Event], threshold: int, seconds: float
    ) -> list[int]:
        """Opening ids of >= ``threshold`` connections within ``seconds`` after a disruption."""
        for attack in sorted(attacks, key=lambda e: _int(e.get("id"))):
            start, after = _float(attack.get("ts")), _int(attack.get("id"))
            window = [c for c in active if c.opened_id > after and c.opened <= start + seconds]
            if threshold > 0 and len(window) >= threshold:
                return [c.opened_id for c in window]
        return []


# --- step ----------------------------------------------------------------------------------------


def _report_findings(
    reports: UserReports, conns: list[_Conn], info: StepInfo
) -> tuple[list[StepFinding], list[tuple[Verdict, str]]]:
    findings: list[StepFinding] = []
    verdicts: list[tuple[Verdict, str]] = []
    evidence = () if reports.record_id is None else (reports.record_id,)
    if reports.prompt_shown:
        findings.append(
            StepFinding("user_prompt", evidence, "the user saw a security warning or prompt")
        )
        verdicts.append((Verdict.WARN, "user_prompt"))
    if reports.cannot_connect:
        findings.append(
            StepFinding(
                "user_cannot_connect", evidence, "the user reports the client could not connect"
            )
        )
        verdicts.append((Verdict.NOT_APPLICABLE, "user_cannot_connect"))
        logins = [
            _int(e.get("id"))
            for c in conns
            for e in c.of_type("auth")
            if (e.get("code") == info.code or (c.bound and e.get("code") is None)) and _proven(e)
        ]
        if logins:
            findings.append(
                StepFinding(
                    "report_contradicts_events",
                    evidence + tuple(sorted(logins)),
                    "reported as unable to connect, but the client reached the login",
                )
            )
    return findings, verdicts


# what the findings of the cases beyond T1-T4 mean, for the finding's detail
CASE_DETAIL = {
    "version_fallback": (
        "after an alert to its first attempt the client fell back to TLS 1.0/1.1 and sent its "
        "password there"
    ),
    "accepted_bad_certificate": (
        "the client sent its password inside TLS with a certificate an attacker could present"
    ),
    "credentials_before_530": (
        "the client sent its password with AUTH before the server could answer that STARTTLS "
        "is required (530)"
    ),
    "ignored_logindisabled": "the client logged in although the server said LOGINDISABLED",
    "preauth_plaintext": (
        "the client used a PREAUTH session without TLS (an attacker reads and writes its mail)"
    ),
    "response_injection": (
        "the client used a forged answer injected in the clear after the STARTTLS go-ahead"
    ),
}


def _misuse_finding(misuses: Sequence[Misuse]) -> list[StepFinding]:
    if not misuses:
        return []
    times = sorted(m.at for m in misuses)
    shown = ", ".join(
        dt.datetime.fromtimestamp(t, dt.UTC).strftime("%H:%M:%S") for t in times[:MAX_MISUSE_TIMES]
    )
    more = f" and {len(times) - MAX_MISUSE_TIMES} more" if len(times) > MAX_MISUSE_TIMES else ""
    where = (
        " (some on a connection attached to this test: maybe your app with a mistyped password)"
        if any(m.bound for m in misuses)
        else ""
    )
    detail = (
        f"someone else used your test username with a wrong password: {len(times)} "
        f"time{'s' if len(times) != 1 else ''}, at {shown}{more} UTC{where}; not counted as "
        "your app's result"
    )
    evidence = tuple(sorted(m.event for m in misuses if m.event is not None))
    return [StepFinding("username_misused", evidence, detail)]


def step_verdict(
    info: StepInfo,
    events: Sequence[Event],
    reports: UserReports | None,
    *,
    loop_connections: int,
    loop_seconds: float,
    misuses: Sequence[Misuse] = (),
) -> StepResult:
    """The verdict of one step (see the module docstring for the rules)."""
    reports = reports or UserReports()
    conns = _group(info, events)
    protocols: dict[str, ProtocolResult] = {}
    findings: list[StepFinding] = []
    for protocol in sorted({c.protocol for c in conns}):
        judge = _ProtocolJudge(info, protocol, [c for c in conns if c.protocol == protocol])
        result = judge.judge(loop_connections, loop_seconds)
        policy = TESTCASES.get(info.testcase)
        not_applicable = policy is not None and protocol not in policy.protocols
        if not_applicable and result.verdict is not Verdict.FAIL:
            # the honest baseline served this protocol: nothing about the case to judge
            result = ProtocolResult(
                Verdict.NOT_APPLICABLE, "testcase_not_applicable", len(judge.bound)
            )
        if judge.bound or judge.mismatched:
            protocols[protocol] = result
        findings.extend(judge.found.findings())
    extra, report_verdicts = _report_findings(reports, conns, info)
    findings.extend(extra)
    findings.extend(_misuse_finding(misuses))
    findings.sort(
        key=lambda f: (TAGS.index(f.tag) if f.tag in TAGS else len(TAGS), f.protocol or "")
    )

    candidates = [(r.verdict, r.reason) for r in protocols.values()]
    if info.state == "skipped":
        failed = [c for c in candidates if c[0] is Verdict.FAIL]
        verdict, reason = failed[0] if failed else (Verdict.SKIPPED, "skipped")
        return StepResult(verdict, reason, tuple(findings), protocols)
    candidates += report_verdicts
    if not candidates:
        candidates = [(Verdict.INCONCLUSIVE, "never_connected")]
    verdict, reason = max(candidates, key=lambda c: SEVERITY[c[0]])
    return StepResult(verdict, reason, tuple(findings), protocols)
