"""The run manager: runs and steps, who may log in, binding at accept time, the API view."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from runs_testkit import KEY, Env, settings

from mailtls import settings as cfg
from mailtls.protocols.base import Credential
from mailtls.runs import codes
from mailtls.runs.model import (
    GUIDED_PLAN,
    PlanError,
    RunError,
    RunNotFound,
    StepNotFound,
    StepStateError,
)
from mailtls.verdicts import Verdict

BROWSER = "192.0.2.10"
PHONE = "198.51.100.20"
STRANGER = "203.0.113.30"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path / "var")
    yield e
    e.close()


def account(env: Env, run_code: str) -> str:
    return codes.account_username(run_code, env.conf.domain)


# --- creating runs -------------------------------------------------------------------------------


def test_guided_plan_is_the_default(env: Env) -> None:
    run = env.manager.create_run()
    assert [(s.scenario, s.testcase) for s in run.steps] == list(GUIDED_PLAN)
    assert [s.n for s in run.steps] == list(range(1, 10))
    assert {s.state for s in run.steps} == {"pending"}
    assert env.manager.create_run(plan="guided").steps[8].scenario == "two_phase"
    records = env.store.query(types=["run_created"])
    assert [r["run"] for r in records] == [run.id, env.manager.get(records[1]["run"]).id]


def test_explicit_steps_and_protocol(env: Env) -> None:
    run = env.manager.create_run(steps=[("two_phase", "t4"), ("immediate", "t1")], protocol="pop3")
    assert [(s.n, s.scenario, s.testcase) for s in run.steps] == [
        (1, "two_phase", "t4"),
        (2, "immediate", "t1"),
    ]
    assert run.protocol == "pop3"
    assert env.manager.get(run.id) is run


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": [("immediate", "t1")], "plan": "guided"}, "not both"),
        ({"plan": "everything"}, "unknown plan"),
        ({"steps": []}, "at least one step"),
        ({"steps": [("sometimes", "t1")]}, "unknown scenario"),
        ({"steps": [("immediate", "t9")]}, "unknown test case"),
        ({"steps": [("immediate", ["t1"])]}, "must be strings"),
        ({"steps": [("immediate", "t1")] * 51}, "at most"),
        ({"protocol": "smtp"}, "incoming protocol"),
    ],
)
def test_bad_plans_are_refused(env: Env, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        env.manager.create_run(**kwargs)  # type: ignore[arg-type]
    assert env.store.query(types=["run_created"]) == []


def test_run_ids_are_long_random_and_unrelated_to_the_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codes, "new_code", lambda: "abcdefghjk")
    seen = []
    for i in range(2):
        e = Env(tmp_path / f"d{i}")
        run = e.manager.create_run()
        seen.append((run.id, e.manager.password_for(run), e.manager.result_token(run)))
        e.close()
        assert run.code == "abcdefghjk"
        assert re.fullmatch(r"[A-Za-z0-9_-]{24,}", run.id)
        assert len(base64.urlsafe_b64decode(run.id + "=" * (-len(run.id) % 4))) >= 16
        assert "abcdefghjk" not in run.id
    # same code, same key: nothing derived from the code, so everything differs
    assert len({s[0] for s in seen}) == 2
    assert len({s[1] for s in seen}) == 2
    assert len({s[2] for s in seen}) == 2


def test_unknown_runs_and_steps(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t1")])
    for bad in ("nope", "", None, 7):
        with pytest.raises(RunNotFound):
            env.manager.get(bad)  # type: ignore[arg-type]
    assert issubclass(RunNotFound, LookupError)
    for n in (0, 2, -1, True):
        with pytest.raises(StepNotFound):
            env.manager.start_step(run.id, n, [BROWSER])
    with pytest.raises(RunNotFound):
        env.manager.finish("nope", 1)


# --- who may log in --------------------------------------------------------------------------


def test_only_open_runs_codes_may_log_in(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t1")])
    name = account(env, run.code)
    password = env.manager.password_for(run).encode()
    for username in (name, name.upper(), f"test-{run.code}", f" test-{run.code}@other.example "):
        decision = env.manager.authenticate(Credential(username, password))
        assert (decision.ok, decision.display, decision.code) == (True, name, run.code)
        assert decision.proof

    unknown = env.manager.authenticate(Credential("test-zzzzzzzzzz@mailtls.test", password))
    assert (unknown.ok, unknown.code) == (False, None)
    assert unknown.display == codes.hash_username(KEY, "test-zzzzzzzzzz@mailtls.test")
    victim = env.manager.authenticate(Credential("alice@example.com", password))
    assert not victim.ok and victim.display.startswith("h:") and "alice" not in victim.display


def test_a_finished_run_closes_after_the_grace_period(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t1")])
    env.manager.start_step(run.id, 1, [BROWSER])
    env.manager.finish(run.id, 1)
    credential = Credential(account(env, run.code), env.manager.password_for(run).encode())
    env.clock.advance(59)
    assert env.manager.authenticate(credential).ok
    env.clock.advance(2)
    closed = env.manager.authenticate(credential)
    assert (closed.ok, closed.display, closed.code) == (False, account(env, run.code), run.code)


def test_a_deleted_runs_code_is_unknown(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t1")])
    env.manager.start_step(run.id, 1, [BROWSER])
    env.shell.connect(BROWSER).login(account(env, run.code))
    assert env.manager.delete(run.id) >= 2
    decision = env.manager.authenticate(Credential(account(env, run.code), b"x"))
    assert (decision.ok, decision.code) == (False, None) and decision.display.startswith("h:")
    assert env.manager.binder(BROWSER) is None
    with pytest.raises(RunNotFound):
        env.manager.get(run.id)
    assert env.store.query(run=run.id) == []  # the store removed its events
    assert env.store.query(code=run.code) == []
    env.restart()
    with pytest.raises(RunNotFound):
        env.manager.get(run.id)


# --- steps and binding ---------------------------------------------------------------------------


def test_start_binds_the_visitors_addresses_for_the_ttl(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t2")])
    assert env.manager.binder(BROWSER) is None
    env.manager.start_step(run.id, 1, [BROWSER, "2001:db8:5:6::1", "bogus"])
    binding = env.manager.binder(BROWSER, ("127.0.0.1", 2143))
    assert binding is not None
    assert binding.as_fields() == {
        "run": run.id,
        "step": 1,
        "testcase": "t2",
        "scenario": "immediate",
        "source": "address",
        "active": True,
    }
    assert env.manager.binder("2001:db8:5:6:ffff::9") is not None  # the same /64
    assert env.manager.binder(STRANGER) is None
    started = env.store.query(run=run.id, types=["step_started"])[0]
    assert started["addresses"] == [BROWSER, "2001:db8:5:6::1"]
    env.manager.start_step(run.id, 1, "198.51.100.1")  # a lone string is one address
    assert env.manager.binder("198.51.100.1") is not None
    env.clock.advance(599)
    env.manager.extend(run.id, 1)
    env.clock.advance(599)
    assert env.manager.binder(BROWSER) is not None
    env.clock.advance(2)
    assert env.manager.binder(BROWSER) is None


def test_step_start_kicks_the_runs_connections_once(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t1"), ("immediate", "t3")])
    env.manager.start_step(run.id, 1, [BROWSER])
    env.manager.start_step(run.id, 1, ["2001:db8::1"])  # the visitor's other address
    assert env.kicks == [(run.id, "step_started")]
    env.manager.start_step(run.id, 2, [BROWSER])
    assert env.kicks == [(run.id, "step_started")] * 2


def test_starting_the_next_step_finishes_the_previous_one(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t1"), ("immediate", "t3")])
    env.manager.start_step(run.id, 1, [BROWSER, PHONE])
    env.clock.advance(10)
    env.manager.start_step(run.id, 2, [BROWSER])
    assert run.step(1).state == "finished"
    assert env.store.query(run=run.id, types=["step_finished"])[0]["step"] == 1
    b = env.manager.binder(BROWSER)
    assert b is not None and (b.step, b.testcase) == (2, "t3")  # newest binding wins
    p = env.manager.binder(PHONE)
    assert p is not None and p.step == 1  # still step 1 for the grace period
    env.clock.advance(61)
    assert env.manager.binder(PHONE) is None


def test_step_state_rules(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t1"), ("immediate", "t2")])
    with pytest.raises(StepStateError):
        env.manager.finish(run.id, 1)  # never started
    with pytest.raises(StepStateError):
        env.manager.extend(run.id, 1)
    with pytest.raises(StepStateError):
        env.manager.report(run.id, 1, True, False)
    with pytest.raises(RunError):
        env.manager.report(run.id, 1, "yes", False)  # type: ignore[arg-type]
    env.manager.skip(run.id, 2)
    for op in (env.manager.skip, env.manager.finish, env.manager.extend):
        with pytest.raises(StepStateError):
            op(run.id, 2)
    with pytest.raises(StepStateError):
        env.manager.start_step(run.id, 2, [BROWSER])
    env.manager.start_step(run.id, 1, [BROWSER])
    first = env.manager.finish(run.id, 1)
    assert env.manager.finish(run.id, 1) == first  # idempotent
    assert len(env.store.query(run=run.id, types=["step_finished"])) == 1
    env.manager.report(run.id, 1, False, True)  # answers may come after the verdict
    assert issubclass(StepStateError, ValueError)


def test_finish_returns_and_journals_the_verdict(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t1")])
    env.manager.start_step(run.id, 1, [BROWSER])
    c = env.shell.connect(BROWSER)
    c.caps(starttls=False)
    auth = c.login(account(env, run.code))
    result = env.manager.finish(run.id, 1)
    assert (result.verdict, result.reason) == (Verdict.FAIL, "plaintext_auth")
    assert [f.evidence for f in result.findings if f.tag == "plaintext_auth"] == [(auth["id"],)]
    record = env.store.query(run=run.id, types=["step_finished"])[0]
    assert (record["verdict"], record["reason"]) == ("FAIL", "plaintext_auth")
    assert "plaintext_auth" in record["tags"]


def test_late_events_in_the_grace_period_recompute_and_fail_wins(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t3")])
    env.manager.start_step(run.id, 1, [BROWSER])
    c = env.shell.connect(BROWSER)
    c.caps(starttls=True)
    c.record("starttls_requested", advertised=True)
    c.record("starttls_refused", reason="testcase", reply="a NO")
    c.close()
    assert env.manager.finish(run.id, 1).reason == "aborted_after_downgrade"
    env.clock.advance(30)
    late = env.shell.connect(BROWSER)  # still bound during the grace period
    assert late.binding is not None and late.binding.step == 1
    late.caps(starttls=True)
    late.login(account(env, run.code))
    step = env.manager.view(run.id, "http://x")["steps"][0]
    assert (step["verdict"], step["reason"]) == ("FAIL", "plaintext_auth")


def test_skip_and_report_verdicts(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t1"), ("immediate", "t2")])
    env.manager.skip(run.id, 1)
    env.manager.start_step(run.id, 2, [BROWSER])
    env.manager.report(run.id, 2, True, False)
    env.manager.finish(run.id, 2)
    steps = env.manager.view(run.id, "http://x")["steps"]
    assert [(s["state"], s["verdict"]) for s in steps] == [
        ("skipped", "SKIPPED"),
        ("finished", "WARN"),
    ]
    report_id = env.store.query(run=run.id, types=["step_reported"])[0]["id"]
    assert steps[1]["findings"][0]["evidence"] == [report_id]
    assert steps[1]["reports"] == {"prompt_shown": True, "cannot_connect": False}


# --- the view ----------------------------------------------------------------------------------


def test_view_is_the_api_object(env: Env) -> None:
    conf = replace(settings(), hostname="mail.example", ports=replace(cfg.Ports(), smtp_mx=0))
    env.conf = conf
    env.restart()
    run = env.manager.create_run(steps=[("immediate", "baseline"), ("two_phase", "t1")])
    env.manager.start_step(run.id, 1, [BROWSER])
    view = env.manager.view(run.id, "https://selftest.example/")
    token = env.manager.result_token(run)
    assert view["id"] == run.id and view["code"] == run.code
    assert view["links"] == {
        "self": f"/api/runs/{run.id}",
        "result": f"https://selftest.example/r/{token}",
    }
    acct = view["account"]
    assert acct["username"] == f"test-{run.code}@mailtls.test"
    assert acct["password"] == env.manager.password_for(run) and len(acct["password"]) >= 12
    assert acct["servers"] == {
        "smtp": [
            {"host": "mail.example", "port": 2587, "security": "starttls"},
            {"host": "mail.example", "port": 2465, "security": "tls"},
        ],
        "imap": [
            {"host": "mail.example", "port": 2143, "security": "starttls"},
            {"host": "mail.example", "port": 2993, "security": "tls"},
        ],
        "pop3": [
            {"host": "mail.example", "port": 2110, "security": "starttls"},
            {"host": "mail.example", "port": 2995, "security": "tls"},
        ],
    }
    first, second = view["steps"]
    assert first["state"] == "active" and first["verdict"] is None and first["reason"] is None
    assert first["binding"] == "address" and acct["binding"] == "address"
    assert first["expires"] == env.clock.now + 600
    assert second == {
        "n": 2,
        "scenario": "two_phase",
        "testcase": "t1",
        "state": "pending",
        "binding": None,
        "started": None,
        "expires": None,
        "finished": None,
        "activated": None,
        "reports": {"prompt_shown": False, "cannot_connect": False},
        "collisions": [],
        "username_misused": {"count": 0, "times": []},
        "verdict": None,
        "reason": None,
        "findings": [],
        "protocols": {},
    }
    assert env.manager.find_by_result_token(token) is run
    assert env.manager.find_by_result_token(token[:-1] + "A") is None
    assert env.manager.find_by_result_token(run.id) is None
    # no secret material beyond the account password in the view
    assert "secret" not in repr(view).lower()


def test_result_token_is_long_and_url_safe(env: Env) -> None:
    run = env.manager.create_run()
    token = env.manager.result_token(run)
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", token)
    assert token != run.id and run.code not in token
    assert env.manager.password_for(run) not in token
