"""Table tests of the pure verdict function (DESIGN §8): one row per rule."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from mailtls.verdicts import (
    SEVERITY,
    Misuse,
    StepInfo,
    StepResult,
    UserReports,
    Verdict,
    step_verdict,
    worst,
)

RUN = "run-under-test"
CODE = "abcdefghjk"
OTHER_CODE = "zzzzzzzzzz"


@dataclass
class Log:
    """Builds connection events the way the I/O shell writes them."""

    events: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 1

    def conn(
        self,
        name: str,
        *,
        testcase: str = "t1",
        active: bool = True,
        bound: bool = True,
        protocol: str = "imap",
        ts: float = 100.0,
        step: int = 1,
        run: str | None = RUN,
    ) -> Conn:
        if not bound:
            run, step_or_none = None, None
        else:
            step_or_none = step
        binding = (
            None
            if run is None
            else {
                "run": run,
                "step": step_or_none,
                "testcase": testcase,
                "scenario": "x",
                "source": "address",
                "active": active,
            }
        )
        c = Conn(self, name, protocol, run, step_or_none, binding, ts)
        c.add("connection_opened", security="starttls", testcase=testcase, active=active)
        return c


@dataclass
class Conn:
    log: Log
    name: str
    protocol: str
    run: str | None
    step: int | None
    binding: dict[str, Any] | None
    ts: float

    def add(self, kind: str, /, *, dt: float = 0.0, **fields: Any) -> int:
        self.ts += dt
        event = {
            "id": self.log.next_id,
            "ts": self.ts,
            "conn": self.name,
            "protocol": self.protocol,
            "listener": self.protocol,
            "port": 2143,
            "client": "192.0.2.1",
            "cport": 40000,
            "tls": None,
            "run": self.run,
            "step": self.step,
            "binding": self.binding,
            "type": kind,
            **fields,
        }
        self.log.next_id += 1
        self.log.events.append(event)
        return int(event["id"])

    # shorthands
    def caps(self, starttls: bool, tls: bool = False) -> int:
        mechs = ["PLAIN", "LOGIN"]
        return self.add(
            "capabilities_sent", starttls_offered=starttls, auth_mechanisms=mechs, tls=tls
        )

    def starttls(self) -> int:
        return self.add("starttls_requested", advertised=True)

    def auth(
        self, *, tls: bool, code: str | None = CODE, outcome: str = "success", proof: bool = True
    ) -> int:
        return self.add(
            "auth",
            mechanism="PLAIN",
            username=f"test-{code}@mailtls.test" if code else "h:0011223344556677",
            code=code,
            tls=tls,
            secret_sent=True,
            secret_in_clear=not tls,
            outcome=outcome,
            proof=proof and code is not None,
        )

    def disrupted(self, stage: str = "handshake", dt: float = 0.0) -> int:
        return self.add(
            "starttls_disrupted",
            dt=dt,
            stage=stage,
            client_hello_bytes=300,
            looks_like_tls=True,
            reply="* BAD TLS not available due to temporary reason",
        )

    def close(self) -> int:
        return self.add("connection_closed", by="client", bytes_in=1, bytes_out=1, duration=1.0)


def info(
    testcase: str = "t1",
    scenario: str = "immediate",
    state: str = "finished",
    activated: bool = False,
) -> StepInfo:
    return StepInfo(RUN, 1, scenario, testcase, state, CODE, activated)


def judge(
    log: Log,
    step: StepInfo | None = None,
    reports: UserReports | None = None,
    n: int = 5,
    m: float = 60.0,
) -> StepResult:
    return step_verdict(step or info(), log.events, reports, loop_connections=n, loop_seconds=m)


def finding(result: StepResult, tag: str) -> list[int]:
    ids: list[int] = []
    for f in result.findings:
        if f.tag == tag:
            ids.extend(f.evidence)
    return sorted(ids)


# --- the table ---------------------------------------------------------------------------------

Builder = Callable[[Log], None]


def t1_plaintext(log: Log) -> None:
    c = log.conn("c1")
    c.caps(starttls=False)
    c.auth(tls=False)


def baseline_plaintext_without_starttls(log: Log) -> None:
    c = log.conn("c1", testcase="baseline")
    c.caps(starttls=True)
    c.auth(tls=False)


def tls_login_under(testcase: str) -> Builder:
    """STARTTLS offered and used, then a login inside TLS."""

    def build(log: Log) -> None:
        c = log.conn("c1", testcase=testcase)
        c.caps(starttls=True)
        c.starttls()
        c.add("tls_established", version="TLSv1.3", cipher="x", implicit=False)
        c.auth(tls=True)

    return build


baseline_tls = tls_login_under("baseline")


def t4_tls_then_disrupted(log: Log) -> None:
    c = log.conn("c1", testcase="t4")
    c.caps(starttls=True)
    c.starttls()
    c.auth(tls=True, outcome="disrupted")
    c.disrupted("session")
    c.add("data_after_disruption", nbytes=7, tls_alert=True, verb="")


def t4_tls_then_plaintext(log: Log) -> None:
    c = log.conn("c1", testcase="t4")
    c.caps(starttls=True)
    c.starttls()
    c.auth(tls=True, outcome="disrupted")
    c.disrupted("session")
    c.auth(tls=False, outcome="disrupted")


def t2_reconnect_then_plaintext(log: Log) -> None:
    """fetchmail under t2: disrupted handshake, reconnects by itself, logs in without TLS."""
    c1 = log.conn("c1", testcase="t2")
    c1.caps(starttls=True)
    c1.starttls()
    c1.disrupted()
    c1.close()
    c2 = log.conn("c2", testcase="t2", ts=103.0)
    c2.caps(starttls=True)
    c2.auth(tls=False)


def t1_aborted(log: Log) -> None:
    c = log.conn("c1")
    c.caps(starttls=False)
    c.close()


def t2_loop(log: Log) -> None:
    c = log.conn("c0", testcase="t2")
    c.caps(starttls=True)
    c.starttls()
    c.disrupted()
    for i in range(5):
        r = log.conn(f"r{i}", testcase="t2", ts=101.0 + i * 5)
        r.caps(starttls=True)
        r.starttls()
        r.disrupted()


def t2_four_reconnects(log: Log) -> None:
    c = log.conn("c0", testcase="t2")
    c.caps(starttls=True)
    c.starttls()
    c.disrupted()
    for i in range(3):
        r = log.conn(f"r{i}", testcase="t2", ts=101.0 + i * 5)
        r.caps(starttls=True)
        r.starttls()
        r.disrupted()


def t2_slow_reconnects(log: Log) -> None:
    c = log.conn("c0", testcase="t2")
    c.caps(starttls=True)
    c.starttls()
    c.disrupted()
    for i in range(6):
        r = log.conn(f"r{i}", testcase="t2", ts=130.0 + i * 30)
        r.caps(starttls=True)
        r.starttls()
        r.disrupted()


def nothing(log: Log) -> None:
    return None


def mismatch_plaintext(log: Log) -> None:
    bound = log.conn("c1")
    bound.caps(starttls=False)
    bound.close()
    other = log.conn("u1", bound=False, testcase="baseline", active=False)
    other.caps(starttls=True)
    other.auth(tls=False)


def mismatch_blocks_pass(log: Log) -> None:
    baseline_tls(log)
    other = log.conn("u1", bound=False, testcase="baseline", active=False)
    other.starttls()
    other.auth(tls=True)


def mismatch_bound_to_other_step(log: Log) -> None:
    bound = log.conn("c1")
    bound.caps(starttls=False)
    other = log.conn("o1", step=7)
    other.auth(tls=True)


def fail_beats_mismatch(log: Log) -> None:
    t1_plaintext(log)
    other = log.conn("u1", bound=False, testcase="baseline", active=False)
    other.auth(tls=True)


def two_phase_not_activated(log: Log) -> None:
    c = log.conn("c1", active=False)
    c.caps(starttls=True)
    c.starttls()
    c.auth(tls=True)


def two_phase_activated_then_plaintext(log: Log) -> None:
    two_phase_not_activated(log)
    c = log.conn("c2", ts=110.0)
    c.caps(starttls=False)
    c.auth(tls=False)


def two_phase_activated_then_aborted(log: Log) -> None:
    two_phase_not_activated(log)
    c = log.conn("c2", ts=110.0)
    c.caps(starttls=False)
    c.close()


def two_phase_pre_activation_plaintext(log: Log) -> None:
    c = log.conn("c1", active=False, testcase="t1")
    c.caps(starttls=True)
    c.auth(tls=False)


def pop3_user_only(log: Log) -> None:
    c = log.conn("c1", protocol="pop3")
    c.caps(starttls=False)
    c.add("username_sent", username=f"test-{CODE}@mailtls.test", code=CODE, tls=False)
    c.close()


def pipelined(log: Log) -> None:
    c = log.conn("c1", testcase="baseline")
    c.caps(starttls=True)
    c.starttls()
    c.add("pipelined_after_starttls", bytes_discarded=12)
    c.auth(tls=True)


def t3_not_tried(log: Log) -> None:
    c = log.conn("c1", testcase="t3", protocol="smtp")
    c.caps(starttls=True)
    c.auth(tls=False)


def t3_refused_then_plaintext(log: Log) -> None:
    c = log.conn("c1", testcase="t3", protocol="smtp")
    c.caps(starttls=True)
    c.starttls()
    c.add("starttls_refused", reason="testcase", reply="454 4.7.0 TLS not available")
    c.auth(tls=False)


def t3_refused_and_gave_up(log: Log) -> None:
    c = log.conn("c1", testcase="t3", protocol="smtp")
    c.caps(starttls=True)
    c.starttls()
    c.add("starttls_refused", reason="testcase", reply="454 4.7.0 TLS not available")
    c.close()


def blind_starttls_under_t1(log: Log) -> None:
    """mutt's default: STARTTLS even when not advertised; refused; it stops."""
    c = log.conn("c1")
    c.add("starttls_requested", advertised=False)
    c.add("starttls_refused", reason="not_advertised", reply="a1 BAD")
    c.close()


def other_runs_code_on_bound(log: Log) -> None:
    c = log.conn("c1")
    c.caps(starttls=False)
    c.auth(tls=False, code=OTHER_CODE)


def legacy_login_without_proof(log: Log) -> None:
    c = log.conn("c1")
    c.caps(starttls=False)
    event = c.auth(tls=False)
    del log.events[event - 1]["proof"]


def unknown_user_on_bound(log: Log) -> None:
    c = log.conn("c1")
    c.caps(starttls=False)
    c.auth(tls=False, code=None)


def baseline_no_login(log: Log) -> None:
    c = log.conn("c1", testcase="baseline")
    c.caps(starttls=True)
    c.close()


def smtp_fail_imap_pass(log: Log) -> None:
    i = log.conn("i1", testcase="t4")
    i.starttls()
    i.auth(tls=True, outcome="disrupted")
    i.disrupted("session")
    s = log.conn("s1", testcase="t4", protocol="smtp")
    s.caps(starttls=True)
    s.auth(tls=False)


def imap_pass_pop3_aborted(log: Log) -> None:
    i = log.conn("i1", testcase="t4")
    i.starttls()
    i.auth(tls=True, outcome="disrupted")
    p = log.conn("p1", testcase="t4", protocol="pop3")
    p.starttls()
    p.disrupted("session")
    p.close()


def implicit_blocked(log: Log) -> None:
    c = log.conn("c1")
    c.add("implicit_tls_blocked", style="silence")
    c.close()


def t1_wrong_password_on_the_users_address(log: Log) -> None:
    c = log.conn("c1")
    c.caps(starttls=False)
    c.auth(tls=False, outcome="failure", proof=False)


def wrong_password_from_elsewhere(log: Log) -> None:
    c = log.conn("s1", bound=False)
    c.auth(tls=False, outcome="failure", proof=False)


# --- the cases beyond T1-T4 ---------------------------------------------------------------


def logindisabled_ignored(log: Log) -> None:
    c = log.conn("c1", testcase="starttls_required")
    c.add("capabilities_sent", starttls_offered=False, auth_mechanisms=[], tls=False)
    c.auth(tls=False, outcome="refused")
    c.close()


def logindisabled_honoured(log: Log) -> None:
    c = log.conn("c1", testcase="starttls_required")
    c.add("capabilities_sent", starttls_offered=False, auth_mechanisms=[], tls=False)
    c.close()


def credentials_before_530(log: Log) -> None:
    c = log.conn("c1", testcase="starttls_required", protocol="smtp")
    c.caps(starttls=False)
    c.auth(tls=False, outcome="refused")
    c.close()


def waited_for_530(log: Log) -> None:
    c = log.conn("c1", testcase="starttls_required", protocol="smtp")
    c.caps(starttls=False)
    c.add(
        "auth",
        mechanism="LOGIN",
        username="",
        code=None,
        tls=False,
        secret_sent=False,
        secret_in_clear=False,
        outcome="refused",
    )
    c.close()


def pop3_under_starttls_required(log: Log) -> None:
    """POP3 has no equivalent: the connection got the baseline and logged in over TLS."""
    c = log.conn("c1", testcase="baseline", protocol="pop3")
    c.caps(starttls=True)
    c.starttls()
    c.add("tls_established", version="TLSv1.3", cipher="x", implicit=False)
    c.auth(tls=True)


def pop3_plaintext_under_starttls_required(log: Log) -> None:
    c = log.conn("c1", testcase="baseline", protocol="pop3")
    c.caps(starttls=True)
    c.auth(tls=False)


def preauth_used(log: Log) -> None:
    c = log.conn("c1", testcase="preauth")
    c.add("preauth_greeted")
    c.add("capabilities_sent", starttls_offered=False, auth_mechanisms=[], tls=False)
    c.add("preauth_used", verb="SELECT", tls=False)
    c.close()


def preauth_disconnected(log: Log) -> None:
    c = log.conn("c1", testcase="preauth")
    c.add("preauth_greeted")
    c.add("capabilities_sent", starttls_offered=False, auth_mechanisms=[], tls=False)
    c.add("starttls_requested", advertised=False)
    c.close()


def injected_then(mechanism: str, protocol: str = "imap", ehlo: bool = True) -> Builder:
    def build(log: Log) -> None:
        c = log.conn("c1", testcase="inject", protocol=protocol)
        c.caps(starttls=True)
        c.starttls()
        c.add("starttls_accepted")
        c.add("response_injected", nbytes=40)
        c.add("tls_established", version="TLSv1.3", cipher="x", implicit=False)
        if ehlo:
            c.add("client_identified", kind="ehlo", value="client.example")
        c.add(
            "auth",
            mechanism=mechanism,
            username=f"test-{CODE}",
            code=CODE,
            tls=True,
            secret_sent=True,
            secret_in_clear=False,
            outcome="success",
        )

    return build


def injected_then_plaintext(log: Log) -> None:
    c = log.conn("c1", testcase="inject")
    c.caps(starttls=True)
    c.starttls()
    c.add("response_injected", nbytes=63)
    c.add("tls_failed", reason="wrong version number")
    c.auth(tls=False, outcome="disrupted")


bad_certificate_accepted = tls_login_under("cert_selfsigned")


def bad_certificate_rejected(log: Log) -> None:
    c = log.conn("c1", testcase="cert_expired")
    c.caps(starttls=True)
    c.starttls()
    c.add("tls_failed", reason="SSLV3_ALERT_CERTIFICATE_EXPIRED")
    c.close()


def bad_certificate_left_after_handshake(log: Log) -> None:
    c = log.conn("c1", testcase="cert_wronghost")
    c.caps(starttls=True)
    c.starttls()
    c.add("tls_established", version="TLSv1.3", cipher="x", implicit=False)
    c.close()


def bad_certificate_rejected_then_plaintext(log: Log) -> None:
    bad_certificate_rejected(log)
    c = log.conn("c2", testcase="cert_expired", ts=101.0)
    c.auth(tls=False)


def fallback_attempts(
    log: Log, *retries: tuple[str, bool], served: str | None = None, login: bool = True
) -> None:
    """``tls_fallback``: the first ClientHello (TLS 1.3) alerted, then ``retries`` (highest
    version, SCSV) on new connections; the last one is ``served`` at that version (and logs
    in), else alerted or refused."""
    c = log.conn("c1", testcase="tls_fallback")
    c.caps(starttls=True)
    c.starttls()
    c.add(
        "client_hello_offered",
        attempt=1,
        highest="TLSv1.3",
        versions=["TLSv1.3", "TLSv1.2"],
        fallback_scsv=False,
        fallback=False,
        answer="alert",
    )
    c.add("tls_failed", reason="fallback_alert_sent")
    c.close()
    for n, (highest, scsv) in enumerate(retries, start=2):
        c = log.conn(f"c{n}", testcase="tls_fallback", ts=100.0 + n)
        c.caps(starttls=True)
        c.starttls()
        lower = highest != "TLSv1.3"
        c.add(
            "client_hello_offered",
            attempt=n,
            highest=highest,
            versions=[highest],
            fallback_scsv=scsv,
            fallback=lower,
            answer="served" if lower else "alert",
        )
        if lower and served is not None and n == len(retries) + 1:
            c.add("tls_established", version=served, cipher="x", implicit=False)
            if login:
                c.auth(tls=True)
        else:
            reason = "inappropriate_fallback" if lower else "fallback_alert_sent"
            c.add("tls_failed", reason=reason)
        c.close()


def fallback_to(
    highest: str, scsv: bool = False, served: str | None = None, login: bool = True
) -> Builder:
    def build(log: Log) -> None:
        fallback_attempts(log, (highest, scsv), served=served, login=login)

    return build


@dataclass(frozen=True)
class Row:
    name: str
    build: Builder
    verdict: Verdict
    reason: str
    tags: frozenset[str] = frozenset()
    absent: frozenset[str] = frozenset()
    step: StepInfo = field(default_factory=info)
    reports: UserReports | None = None


ROWS = [
    Row(
        "tls_fallback: the client fell back to TLS 1.0 without SCSV and logged in there",
        fallback_to("TLSv1", served="TLSv1"),
        Verdict.FAIL,
        "version_fallback",
        frozenset({"version_fallback", "fallback_without_scsv", "tls_auth"}),
        step=info("tls_fallback"),
    ),
    Row(
        "tls_fallback: fell back to TLS 1.1 and left without logging in (a finding only)",
        fallback_to("TLSv1.1", served="TLSv1.1", login=False),
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        frozenset({"fallback_without_scsv"}),
        frozenset({"version_fallback"}),
        step=info("tls_fallback"),
    ),
    Row(
        "tls_fallback: a TLS 1.3 client retried with TLS 1.2 without SCSV: PASS with the finding",
        fallback_to("TLSv1.2", served="TLSv1.2"),
        Verdict.PASS,
        "tls_auth",
        frozenset({"fallback_without_scsv", "tls_auth"}),
        frozenset({"version_fallback"}),
        step=info("tls_fallback"),
    ),
    Row(
        "tls_fallback: the retry carried TLS_FALLBACK_SCSV and was refused (secure)",
        fallback_to("TLSv1", scsv=True),
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        absent=frozenset({"fallback_without_scsv", "version_fallback"}),
        step=info("tls_fallback"),
    ),
    Row(
        "tls_fallback: the client retried with the same version only (secure)",
        fallback_to("TLSv1.3"),
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        absent=frozenset({"fallback_without_scsv", "version_fallback"}),
        step=info("tls_fallback"),
    ),
    Row(
        "t1: the run's username with a wrong password in the clear is not the user's FAIL",
        t1_wrong_password_on_the_users_address,
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        absent=frozenset({"plaintext_auth", "starttls_not_attempted", "binding_mismatch"}),
    ),
    Row(
        "a wrong password from a connection bound elsewhere is no mismatch",
        wrong_password_from_elsewhere,
        Verdict.INCONCLUSIVE,
        "never_connected",
        absent=frozenset({"plaintext_auth", "binding_mismatch"}),
    ),
    Row(
        "t1 plaintext login",
        t1_plaintext,
        Verdict.FAIL,
        "plaintext_auth",
        frozenset({"plaintext_auth"}),
        frozenset({"starttls_not_attempted", "tls_auth"}),
    ),
    Row(
        "baseline: STARTTLS offered, not tried",
        baseline_plaintext_without_starttls,
        Verdict.FAIL,
        "plaintext_auth",
        frozenset({"plaintext_auth", "starttls_not_attempted"}),
        step=info("baseline"),
    ),
    Row(
        "baseline TLS login",
        baseline_tls,
        Verdict.PASS,
        "tls_auth",
        frozenset({"tls_auth"}),
        frozenset({"plaintext_auth"}),
        step=info("baseline"),
    ),
    Row(
        "t4: login inside TLS, then silence",
        t4_tls_then_disrupted,
        Verdict.PASS,
        "tls_auth",
        frozenset({"tls_auth", "starttls_disrupted"}),
        step=info("t4"),
    ),
    Row(
        "t4: TLS login then plaintext after disruption",
        t4_tls_then_plaintext,
        Verdict.FAIL,
        "plaintext_auth",
        frozenset({"tls_auth", "plaintext_auth"}),
        step=info("t4"),
    ),
    Row(
        "t2: reconnects by itself, plaintext",
        t2_reconnect_then_plaintext,
        Verdict.FAIL,
        "plaintext_auth",
        frozenset({"plaintext_auth", "starttls_disrupted"}),
        step=info("t2"),
    ),
    Row(
        "t1: gives up",
        t1_aborted,
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        absent=frozenset({"plaintext_auth"}),
    ),
    Row(
        "t1: blind STARTTLS refused, gives up",
        blind_starttls_under_t1,
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
    ),
    Row(
        "t1: implicit port blocked",
        implicit_blocked,
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
    ),
    Row("t2: loop", t2_loop, Verdict.INCONCLUSIVE, "loop", frozenset({"loop"}), step=info("t2")),
    Row(
        "t2: too few reconnects for a loop",
        t2_four_reconnects,
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        absent=frozenset({"loop"}),
        step=info("t2"),
    ),
    Row(
        "t2: reconnects too slow for a loop",
        t2_slow_reconnects,
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        absent=frozenset({"loop"}),
        step=info("t2"),
    ),
    Row("nothing seen", nothing, Verdict.INCONCLUSIVE, "never_connected"),
    Row(
        "login on an unbound connection",
        mismatch_plaintext,
        Verdict.INCONCLUSIVE,
        "binding_mismatch",
        frozenset({"binding_mismatch", "plaintext_auth", "starttls_not_attempted"}),
    ),
    Row(
        "mismatch is never PASS",
        mismatch_blocks_pass,
        Verdict.INCONCLUSIVE,
        "binding_mismatch",
        frozenset({"binding_mismatch", "tls_auth"}),
        step=info("baseline"),
    ),
    Row(
        "bound to another step of the run",
        mismatch_bound_to_other_step,
        Verdict.INCONCLUSIVE,
        "binding_mismatch",
        frozenset({"binding_mismatch"}),
    ),
    Row(
        "FAIL beats mismatch",
        fail_beats_mismatch,
        Verdict.FAIL,
        "plaintext_auth",
        frozenset({"plaintext_auth", "binding_mismatch"}),
    ),
    Row(
        "two_phase never activated",
        two_phase_not_activated,
        Verdict.INCONCLUSIVE,
        "not_exercised",
        frozenset({"tls_auth"}),
        step=info(scenario="two_phase"),
    ),
    Row(
        "two_phase: plaintext after activation",
        two_phase_activated_then_plaintext,
        Verdict.FAIL,
        "plaintext_auth",
        frozenset({"plaintext_auth", "tls_auth"}),
        step=info(scenario="two_phase", activated=True),
    ),
    Row(
        "two_phase: aborted after activation",
        two_phase_activated_then_aborted,
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        step=info(scenario="two_phase", activated=True),
    ),
    Row(
        "two_phase: activated, no later connection",
        two_phase_not_activated,
        Verdict.INCONCLUSIVE,
        "not_exercised",
        step=info(scenario="two_phase", activated=True),
    ),
    Row(
        # DESIGN §5: PASS/FAIL only from connections after activation; the leak stays a finding
        "two_phase: plaintext before activation",
        two_phase_pre_activation_plaintext,
        Verdict.INCONCLUSIVE,
        "not_exercised",
        frozenset({"plaintext_auth", "starttls_not_attempted"}),
        step=info(scenario="two_phase"),
    ),
    Row(
        "prompt, no plaintext",
        t1_aborted,
        Verdict.WARN,
        "user_prompt",
        frozenset({"user_prompt"}),
        reports=UserReports(prompt_shown=True, record_id=900),
    ),
    Row(
        "prompt and plaintext",
        t1_plaintext,
        Verdict.FAIL,
        "plaintext_auth",
        frozenset({"user_prompt", "plaintext_auth"}),
        reports=UserReports(prompt_shown=True, record_id=900),
    ),
    Row(
        "cannot connect, nothing seen",
        nothing,
        Verdict.NOT_APPLICABLE,
        "user_cannot_connect",
        frozenset({"user_cannot_connect"}),
        frozenset({"report_contradicts_events"}),
        reports=UserReports(cannot_connect=True, record_id=900),
    ),
    Row(
        "cannot connect, but a login was seen",
        baseline_tls,
        Verdict.NOT_APPLICABLE,
        "user_cannot_connect",
        frozenset({"user_cannot_connect", "report_contradicts_events"}),
        step=info("baseline"),
        reports=UserReports(cannot_connect=True, record_id=900),
    ),
    Row(
        "cannot connect after the client refused: aborted wins",
        t1_aborted,
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        reports=UserReports(cannot_connect=True, record_id=900),
    ),
    Row("skipped", nothing, Verdict.SKIPPED, "skipped", step=info(state="skipped")),
    Row(
        "skipped with a plaintext login",
        t1_plaintext,
        Verdict.FAIL,
        "plaintext_auth",
        step=info(state="skipped"),
    ),
    Row(
        "username only",
        pop3_user_only,
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        frozenset({"username_plaintext"}),
        frozenset({"plaintext_auth"}),
    ),
    Row(
        "pipelined after STARTTLS",
        pipelined,
        Verdict.PASS,
        "tls_auth",
        frozenset({"pipelined_after_starttls", "tls_auth"}),
        step=info("baseline"),
    ),
    Row(
        "t3: STARTTLS not tried",
        t3_not_tried,
        Verdict.FAIL,
        "plaintext_auth",
        frozenset({"starttls_not_attempted"}),
        step=info("t3"),
    ),
    Row(
        "t3: refused, continued in plaintext",
        t3_refused_then_plaintext,
        Verdict.FAIL,
        "plaintext_auth",
        frozenset({"plaintext_auth"}),
        frozenset({"starttls_not_attempted"}),
        step=info("t3"),
    ),
    Row(
        "t3: refused, gave up",
        t3_refused_and_gave_up,
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        step=info("t3"),
    ),
    Row(
        "another run's code on a bound connection",
        other_runs_code_on_bound,
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        absent=frozenset({"plaintext_auth"}),
    ),
    Row(
        "unknown username on a bound connection: not the run's password, no evidence",
        unknown_user_on_bound,
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        absent=frozenset({"plaintext_auth"}),
    ),
    Row(
        "an event journalled before proof existed counts as the run's",
        legacy_login_without_proof,
        Verdict.FAIL,
        "plaintext_auth",
    ),
    Row(
        "baseline without login",
        baseline_no_login,
        Verdict.INCONCLUSIVE,
        "not_exercised",
        step=info("baseline"),
    ),
    Row(
        "worst over protocols: FAIL",
        smtp_fail_imap_pass,
        Verdict.FAIL,
        "plaintext_auth",
        step=info("t4"),
    ),
    Row(
        "worst over protocols: INCONCLUSIVE > PASS",
        imap_pass_pop3_aborted,
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        step=info("t4"),
    ),
    Row(
        "starttls_required: IMAP LOGIN although LOGINDISABLED",
        logindisabled_ignored,
        Verdict.FAIL,
        "ignored_logindisabled",
        frozenset({"ignored_logindisabled", "plaintext_auth"}),
        step=info("starttls_required"),
    ),
    Row(
        "starttls_required: LOGINDISABLED honoured",
        logindisabled_honoured,
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        absent=frozenset({"ignored_logindisabled", "plaintext_auth"}),
        step=info("starttls_required"),
    ),
    Row(
        "starttls_required: SMTP AUTH with the secret before the 530",
        credentials_before_530,
        Verdict.FAIL,
        "credentials_before_530",
        frozenset({"credentials_before_530", "plaintext_auth"}),
        step=info("starttls_required"),
    ),
    Row(
        "starttls_required: SMTP AUTH without the secret, gave up after the 530",
        waited_for_530,
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        absent=frozenset({"credentials_before_530", "plaintext_auth"}),
        step=info("starttls_required"),
    ),
    Row(
        "starttls_required: POP3 is not applicable",
        pop3_under_starttls_required,
        Verdict.NOT_APPLICABLE,
        "testcase_not_applicable",
        frozenset({"tls_auth"}),
        step=info("starttls_required"),
    ),
    Row(
        "starttls_required: a POP3 password in the clear still fails",
        pop3_plaintext_under_starttls_required,
        Verdict.FAIL,
        "plaintext_auth",
        frozenset({"plaintext_auth", "starttls_not_attempted"}),
        step=info("starttls_required"),
    ),
    Row(
        "preauth: mailbox commands without TLS",
        preauth_used,
        Verdict.FAIL,
        "preauth_plaintext",
        frozenset({"preauth_plaintext"}),
        step=info("preauth"),
    ),
    Row(
        "preauth: the client disconnected",
        preauth_disconnected,
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        absent=frozenset({"preauth_plaintext"}),
        step=info("preauth"),
    ),
    Row(
        "inject: PLAIN login inside TLS (only the forged answer offered it)",
        injected_then("PLAIN"),
        Verdict.FAIL,
        "response_injection",
        frozenset({"response_injection", "tls_auth"}),
        step=info("inject"),
    ),
    Row(
        "inject: SMTP login inside TLS without its own EHLO",
        injected_then("LOGIN", "smtp", ehlo=False),
        Verdict.FAIL,
        "response_injection",
        frozenset({"response_injection"}),
        step=info("inject"),
    ),
    Row(
        "inject: the forged bytes broke the handshake, the client went on in plaintext",
        injected_then_plaintext,
        Verdict.FAIL,
        "response_injection",
        frozenset({"response_injection", "plaintext_auth"}),
        step=info("inject"),
    ),
    Row(
        "cert_*: password sent inside TLS with a bad certificate",
        bad_certificate_accepted,
        Verdict.FAIL,
        "accepted_bad_certificate",
        frozenset({"accepted_bad_certificate", "tls_auth"}),
        step=info("cert_selfsigned"),
    ),
    Row(
        "cert_*: the client aborted the handshake (the secure outcome, with its alert)",
        bad_certificate_rejected,
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        frozenset({"rejected_bad_certificate"}),
        frozenset({"accepted_bad_certificate"}),
        step=info("cert_expired"),
    ),
    Row(
        "cert_*: the client checked the name after the handshake and left",
        bad_certificate_left_after_handshake,
        Verdict.INCONCLUSIVE,
        "aborted_after_downgrade",
        frozenset({"rejected_bad_certificate"}),
        step=info("cert_wronghost"),
    ),
    Row(
        "cert_*: rejected the certificate, then logged in without TLS",
        bad_certificate_rejected_then_plaintext,
        Verdict.FAIL,
        "plaintext_auth",
        frozenset({"rejected_bad_certificate", "plaintext_auth"}),
        step=info("cert_expired"),
    ),
    Row(
        "inject: the forged answer discarded (CRAM-MD5 after its own EHLO)",
        injected_then("CRAM-MD5", "smtp"),
        Verdict.PASS,
        "tls_auth",
        frozenset({"tls_auth"}),
        frozenset({"response_injection"}),
        step=info("inject"),
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_verdict_table(row: Row) -> None:
    log = Log()
    row.build(log)
    result = judge(log, row.step, row.reports)
    assert (result.verdict, result.reason) == (row.verdict, row.reason)
    assert row.tags <= result.tags(), result.findings
    assert not (row.absent & result.tags()), result.findings


# --- evidence and per-protocol detail -----------------------------------------------------------


def test_misuses_are_their_own_finding_with_count_and_times() -> None:
    log = Log()
    baseline_tls(log)
    misuses = [Misuse(3600.0 * 25 + 61, 7, False), Misuse(3600.0 * 25 + 1, 5, True)]
    result = step_verdict(
        info("baseline"), log.events, None, loop_connections=5, loop_seconds=60, misuses=misuses
    )
    assert (result.verdict, result.reason) == (Verdict.PASS, "tls_auth")  # not the verdict
    (found,) = [f for f in result.findings if f.tag == "username_misused"]
    assert found.evidence == (5, 7)
    assert "2 times, at 01:00:01, 01:01:01 UTC" in found.detail
    assert "attached to this test" in found.detail
    assert finding(judge(log, info("baseline")), "username_misused") == []


def test_evidence_is_the_event_ids() -> None:
    log = Log()
    c1 = log.conn("c1", testcase="t2")
    c1.caps(starttls=True)
    c1.starttls()
    d = c1.disrupted()
    c2 = log.conn("c2", testcase="t2", ts=103.0)
    a = c2.auth(tls=False)
    result = judge(log, info("t2"))
    assert finding(result, "plaintext_auth") == [a]
    assert finding(result, "starttls_disrupted") == [d]
    # c2 logged in before any capabilities and implicit TLS is blocked under t2: not "not tried"
    assert finding(result, "starttls_not_attempted") == []


def test_loop_evidence_lists_the_reconnections() -> None:
    log = Log()
    t2_loop(log)
    result = judge(log, info("t2"))
    opened = [e["id"] for e in log.events if e["type"] == "connection_opened"][1:]
    assert finding(result, "loop") == opened


def test_loop_threshold_and_window_are_parameters() -> None:
    log = Log()
    t2_four_reconnects(log)
    assert judge(log, info("t2"), n=3).reason == "loop"
    log = Log()
    t2_slow_reconnects(log)
    assert judge(log, info("t2"), m=300.0).reason == "loop"


def test_reports_evidence_is_the_report_record() -> None:
    log = Log()
    baseline_tls(log)
    auth_id = next(e["id"] for e in log.events if e["type"] == "auth")
    result = judge(log, info("baseline"), UserReports(cannot_connect=True, record_id=77))
    assert finding(result, "user_cannot_connect") == [77]
    assert finding(result, "report_contradicts_events") == sorted([77, auth_id])


def test_per_protocol_verdicts_are_kept() -> None:
    log = Log()
    smtp_fail_imap_pass(log)
    result = judge(log, info("t4"))
    assert {p: r.verdict for p, r in result.protocols.items()} == {
        "imap": Verdict.PASS,
        "smtp": Verdict.FAIL,
    }
    as_dict = result.as_dict()
    assert as_dict["protocols"]["imap"] == {
        "verdict": "PASS",
        "reason": "tls_auth",
        "connections": 1,
    }
    assert {f["protocol"] for f in as_dict["findings"] if f["tag"] == "plaintext_auth"} == {"smtp"}


def test_mismatch_finding_names_the_mode_of_that_connection() -> None:
    log = Log()
    mismatch_plaintext(log)
    result = judge(log)
    details = [f.detail for f in result.findings if f.tag == "plaintext_auth"]
    assert details == ["credentials sent without TLS (baseline, not bound to this step)"]


def test_cleartext_after_a_t4_disruption_of_implicit_tls_is_not_starttls_not_attempted() -> None:
    """The client did use TLS (implicit): the finding is the downgrade, not its configuration."""
    log = Log()
    c = log.conn("c1", testcase="t4")
    c.add("tls_established", version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256", implicit=True)
    c.disrupted(stage="session")
    c.auth(tls=False)
    result = judge(log, info(testcase="t4"))
    assert result.verdict is Verdict.FAIL
    assert "starttls_not_attempted" not in result.tags()


def test_unrelated_unbound_connections_are_ignored() -> None:
    log = Log()
    t1_aborted(log)
    stranger = log.conn("s1", bound=False, testcase="baseline")
    stranger.auth(tls=False, code=None)
    result = judge(log)
    assert result.reason == "aborted_after_downgrade"
    assert "plaintext_auth" not in result.tags()


def test_severity_order() -> None:
    order = sorted(Verdict, key=SEVERITY.__getitem__, reverse=True)
    assert order == [
        Verdict.FAIL,
        Verdict.WARN,
        Verdict.INCONCLUSIVE,
        Verdict.NOT_APPLICABLE,
        Verdict.PASS,
        Verdict.SKIPPED,
    ]
    assert worst([Verdict.PASS, Verdict.NOT_APPLICABLE]) is Verdict.NOT_APPLICABLE
    assert worst([]) is None


@pytest.mark.parametrize(
    "garbage",
    [
        {},
        {"type": "auth"},
        {"conn": ["x"], "type": "auth", "secret_in_clear": True},
        {"conn": "c", "id": "7", "ts": "later", "type": "auth", "secret_in_clear": True},
        {"conn": "c", "binding": "nope", "type": "connection_opened", "active": "yes"},
        {"conn": True, "type": "auth"},
    ],
)
def test_malformed_events_do_not_crash(garbage: dict[str, Any]) -> None:
    result = step_verdict(info(), [garbage], None, loop_connections=5, loop_seconds=60)
    assert result.verdict in set(Verdict)


def test_the_verdict_module_is_pure() -> None:
    code = (
        "import sys, mailtls.verdicts\n"
        "bad = [m for m in sys.modules if m.startswith(('mailtls.store', 'mailtls.net',"
        " 'mailtls.web', 'mailtls.runs', 'asyncio', 'socket', 'sqlite3'))]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == ""
