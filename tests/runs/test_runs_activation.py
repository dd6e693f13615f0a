"""What the run manager learns from events: two_phase activation, login addresses, mismatches,
collisions between runs, and the store calling it from other threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from runs_testkit import Env

from mailtls.runs import codes

BROWSER = "192.0.2.10"
PHONE = "198.51.100.20"
PHONE_V6 = "2001:db8:77:1::5"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path / "var")
    yield e
    e.close()


def name(env: Env, code: str) -> str:
    return codes.account_username(code, env.conf.domain)


def test_two_phase_activates_on_a_tls_login_and_kicks(env: Env) -> None:
    run = env.manager.create_run(steps=[("two_phase", "t1")])
    env.manager.start_step(run.id, 1, [BROWSER])
    env.kicks.clear()
    before = env.shell.connect(BROWSER)
    assert before.binding is not None and before.binding.active is False  # baseline for now

    before.caps(starttls=True)
    before.login(name(env, run.code))  # plaintext: no activation
    assert run.step(1).activated is None
    before.starttls()
    auth = before.login(name(env, run.code))
    assert run.step(1).activated == env.clock.now
    assert env.kicks == [(run.id, "activated")]
    activated = env.store.query(run=run.id, types=["step_activated"])
    assert [(r["step"], r["event"]) for r in activated] == [(1, auth["id"])]

    before.login(name(env, run.code))  # a second TLS login changes nothing
    assert len(env.store.query(run=run.id, types=["step_activated"])) == 1
    after = env.shell.connect(BROWSER)
    assert after.binding is not None and after.binding.active is True
    assert env.manager.view(run.id, "")["steps"][0]["activated"] == env.clock.now


def test_two_phase_fail_only_after_activation(env: Env) -> None:
    run = env.manager.create_run(steps=[("two_phase", "t1"), ("two_phase", "t1")])
    # step 1: never activated, the client logs in over TLS only: not FAIL
    env.manager.start_step(run.id, 1, [BROWSER])
    c = env.shell.connect(BROWSER)
    c.caps(starttls=True)
    c.starttls()
    env.manager.finish(run.id, 1)
    assert env.manager.view(run.id, "")["steps"][0]["reason"] == "not_exercised"
    # step 2: TLS login activates, then an opportunistic reconnect under t1 -> FAIL
    env.clock.advance(120)
    env.manager.start_step(run.id, 2, [BROWSER])
    first = env.shell.connect(BROWSER)
    first.caps(starttls=True)
    first.starttls()
    first.login(name(env, run.code))
    second = env.shell.connect(BROWSER)
    second.caps(starttls=True)
    second.login(name(env, run.code))
    result = env.manager.finish(run.id, 2)
    assert (result.verdict, result.reason) == ("FAIL", "plaintext_auth")
    assert result.protocols["imap"].connections == 2


def test_activation_needs_a_connection_bound_to_that_step(env: Env) -> None:
    run = env.manager.create_run(steps=[("two_phase", "t2")])
    env.manager.start_step(run.id, 1, [BROWSER])
    elsewhere = env.shell.connect(PHONE)
    assert elsewhere.binding is None
    elsewhere.starttls()
    elsewhere.login(name(env, run.code))
    assert run.step(1).activated is None
    assert (run.id, "activated") not in env.kicks


def test_immediate_steps_never_activate(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t4")])
    env.manager.start_step(run.id, 1, [BROWSER])
    c = env.shell.connect(BROWSER)
    c.starttls()
    c.login(name(env, run.code))
    assert env.store.query(run=run.id, types=["step_activated"]) == []


def test_login_address_is_bound_to_the_current_step(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t1"), ("immediate", "t3")])
    env.manager.start_step(run.id, 1, [BROWSER])
    phone = env.shell.connect(PHONE)  # the mail client is on another network
    assert phone.binding is None
    phone.starttls()
    auth = phone.login(name(env, run.code))

    bound = env.manager.binder(PHONE)
    assert bound is not None and (bound.step, bound.source) == (1, "login_address")
    records = env.store.query(run=run.id, types=["address_bound"])
    assert [(r["step"], r["address"], r["event"]) for r in records] == [(1, PHONE, auth["id"])]
    # the login itself was on an unbound connection: a mismatch, never PASS
    mismatch = env.store.query(run=run.id, types=["binding_mismatch"])
    assert [(r["step"], r["event"], r["event_conn"]) for r in mismatch] == [
        (1, auth["id"], phone.conn)
    ]
    assert env.store.query(conns=[phone.conn], types=["binding_mismatch"]) == []
    bound_conn = env.shell.connect(PHONE)
    assert bound_conn.binding is not None and bound_conn.binding.source == "login_address"
    bound_conn.starttls()  # (t1 strips STARTTLS; a blind one is enough for this check)
    bound_conn.login(name(env, run.code))  # already bound: nothing new
    assert len(env.store.query(run=run.id, types=["address_bound"])) == 1

    result = env.manager.finish(run.id, 1)
    assert (result.verdict, result.reason) == ("INCONCLUSIVE", "binding_mismatch")
    assert "binding_mismatch" in result.tags()

    # the next step carries the login address over
    env.manager.start_step(run.id, 2, [BROWSER])
    again = env.manager.binder(PHONE)
    assert again is not None and (again.step, again.testcase, again.source) == (
        2,
        "t3",
        "login_address",
    )


def test_failed_logins_and_closed_runs_bind_nothing(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t1")])
    env.manager.start_step(run.id, 1, [BROWSER])
    env.shell.connect(PHONE).login("test-zzzzzzzzzz@mailtls.test")  # no such run
    env.shell.connect(PHONE).login("alice@example.com")
    assert env.manager.binder(PHONE) is None
    env.manager.finish(run.id, 1)
    env.clock.advance(61)
    env.shell.connect(PHONE_V6).login(name(env, run.code))  # the run is closed now
    assert env.manager.binder(PHONE_V6) is None
    assert env.store.query(run=run.id, types=["address_bound", "binding_mismatch"]) == []


def test_login_before_any_step_is_remembered_for_the_first_step(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "baseline")])
    setup = env.shell.connect(PHONE_V6)  # account setup, before the user starts step 1
    setup.starttls()
    setup.login(name(env, run.code))
    assert env.manager.binder(PHONE_V6) is None
    assert run.login_addresses == [PHONE_V6]
    env.manager.start_step(run.id, 1, [BROWSER])
    bound = env.manager.binder("2001:db8:77:1:abcd::1")  # same /64
    assert bound is not None and bound.source == "login_address"


def test_collisions_are_recorded_for_both_runs_once(env: Env) -> None:
    first = env.manager.create_run(steps=[("immediate", "t1")])
    second = env.manager.create_run(steps=[("immediate", "t2"), ("immediate", "t3")])
    env.manager.start_step(first.id, 1, [BROWSER])
    env.clock.advance(5)
    env.manager.start_step(second.id, 1, [BROWSER])
    env.manager.start_step(second.id, 1, [BROWSER])  # same again: no second record
    b = env.manager.binder(BROWSER)
    assert b is not None and b.run_id == second.id  # newest wins
    ours = env.manager.view(second.id, "")["steps"][0]["collisions"]
    theirs = env.manager.view(first.id, "")["steps"][0]["collisions"]
    assert [(c["role"], c["source"]) for c in ours] == [("took", "address")]
    assert [(c["role"], c["source"]) for c in theirs] == [("lost", "address")]
    assert first.id not in repr(ours) and second.id not in repr(theirs)  # ids stay secret
    assert len(env.store.query(types=["binding_collision"])) == 2


def test_no_collision_with_an_expired_binding(env: Env) -> None:
    first = env.manager.create_run(steps=[("immediate", "t1")])
    second = env.manager.create_run(steps=[("immediate", "t1")])
    env.manager.start_step(first.id, 1, [BROWSER])
    env.clock.advance(601)
    env.manager.start_step(second.id, 1, [BROWSER])
    assert env.store.query(types=["binding_collision"]) == []


def test_a_login_on_another_runs_connection_is_a_mismatch_of_ours(env: Env) -> None:
    ours = env.manager.create_run(steps=[("immediate", "t1")])
    other = env.manager.create_run(steps=[("immediate", "baseline")])
    env.manager.start_step(ours.id, 1, [BROWSER])
    env.manager.start_step(other.id, 1, [PHONE])
    c = env.shell.connect(PHONE)  # bound to the other run (baseline)
    c.caps(starttls=True)
    auth = c.login(name(env, ours.code))
    result = env.manager.finish(ours.id, 1)
    assert (result.verdict, result.reason) == ("INCONCLUSIVE", "binding_mismatch")
    plain = [f for f in result.findings if f.tag == "plaintext_auth"]
    assert [(f.evidence, f.detail) for f in plain] == [
        ((auth["id"],), "credentials sent without TLS (baseline, not bound to this step)")
    ]
    assert "starttls_not_attempted" in result.tags()
    # the other run does not get a FAIL from our code
    theirs = env.manager.finish(other.id, 1)
    assert theirs.verdict != "FAIL"
    # and the PHONE address was taken over by our run (login address): a collision for both
    assert [c["role"] for c in env.manager.view(ours.id, "")["steps"][0]["collisions"]] == ["took"]


def test_on_record_never_blocks_on_the_managers_lock(env: Env) -> None:
    """Web threads hold the manager's lock while appending; the event loop thread appends
    logins that the store hands to ``on_record``. Neither may wait for the other."""
    run = env.manager.create_run(steps=[("two_phase", "t1")])
    env.manager.start_step(run.id, 1, [BROWSER])
    errors: list[BaseException] = []

    def web() -> None:
        try:
            for _ in range(100):
                env.manager.extend(run.id, 1)
                env.manager.view(run.id, "")
        except BaseException as exc:
            errors.append(exc)

    def mail() -> None:
        try:
            for _ in range(100):
                c = env.shell.connect(BROWSER)
                c.starttls()
                c.login(name(env, run.code))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=web), threading.Thread(target=mail)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert errors == []
    assert run.step(1).activated is not None
    assert len(env.store.query(run=run.id, types=["step_activated"])) == 1
