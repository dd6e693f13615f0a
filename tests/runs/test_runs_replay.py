"""Restart: the run manager rebuilds everything from the journalled run records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runs_testkit import Env

from mailtls.protocols.base import Credential
from mailtls.runs import codes
from mailtls.runs.model import RunNotFound

BROWSER = "192.0.2.10"
BROWSER_V6 = "2001:db8:1:2::10"
PHONE = "198.51.100.20"
SHARED = "203.0.113.5"
PROBES = [BROWSER, "2001:db8:1:2:ffff::1", PHONE, SHARED, "192.0.2.99"]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path / "var")
    yield e
    e.close()


def history(env: Env) -> list[str]:
    """A run through most operations, with events; returns the run ids."""
    m, shell, clock = env.manager, env.shell, env.clock
    run = m.create_run(plan="guided", protocol="imap")
    other = m.create_run(steps=[("immediate", "t2")])
    user = codes.account_username(run.code, env.conf.domain)

    setup = shell.connect(PHONE)  # account setup before any step
    setup.starttls()
    setup.login(user)

    m.start_step(run.id, 1, [BROWSER, BROWSER_V6, SHARED])
    c = shell.connect(BROWSER)
    c.caps(starttls=True)
    c.starttls()
    c.login(user)
    clock.advance(20)
    m.extend(run.id, 1)
    m.finish(run.id, 1)

    clock.advance(5)
    m.start_step(run.id, 2, [BROWSER, SHARED])
    c = shell.connect(PHONE)
    c.caps(starttls=False)
    c.login(user)  # t1: FAIL
    m.report(run.id, 2, True, False)
    m.start_step(other.id, 1, [SHARED])  # collision with run's step 2
    clock.advance(10)
    m.finish(run.id, 2)
    m.skip(run.id, 3)

    clock.advance(5)
    m.start_step(run.id, 6, [BROWSER])  # two_phase t1
    first = shell.connect(BROWSER)
    first.caps(starttls=True)
    first.starttls()
    first.login(user)  # activates
    second = shell.connect(BROWSER)
    second.caps(starttls=True)
    second.record("connection_closed", by="client", bytes_in=1, bytes_out=1, duration=1.0)
    stray = shell.connect("192.0.2.99")  # unbound: a mismatch
    stray.starttls()
    stray.login(user)
    m.report(run.id, 6, False, True)
    return [run.id, other.id]


def snapshot(env: Env, run_ids: list[str]) -> dict[str, Any]:
    m = env.manager
    runs = [m.get(r) for r in run_ids]
    return {
        "views": [m.view(r, "https://example.test") for r in run_ids],
        "binder": [m.binder(ip) for ip in PROBES],
        "auth": [
            m.authenticate(Credential(codes.account_username(r.code, env.conf.domain)))
            for r in runs
        ],
        "passwords": [m.password_for(r) for r in runs],
        "tokens": [m.result_token(r) for r in runs],
        "by_token": [m.find_by_result_token(m.result_token(r)).id for r in runs],  # type: ignore[union-attr]
        "logins": [list(r.login_addresses) for r in runs],
    }


def test_restart_gives_an_identical_view(env: Env) -> None:
    run_ids = history(env)
    before = snapshot(env, run_ids)
    # the history really exercised what replay must rebuild
    steps = before["views"][0]["steps"]
    assert [s["state"] for s in steps[:3]] == ["finished", "finished", "skipped"]
    assert steps[1]["verdict"] == "FAIL" and steps[1]["collisions"]
    assert steps[5]["activated"] is not None
    assert {"binding_mismatch", "user_cannot_connect"} <= {f["tag"] for f in steps[5]["findings"]}
    assert before["views"][1]["steps"][0]["collisions"]
    assert before["binder"][0] is not None and before["binder"][2] is not None

    env.restart()
    after = snapshot(env, run_ids)
    assert after == before

    # and the restarted manager goes on from there
    env.manager.finish(run_ids[0], 6)
    step = env.manager.view(run_ids[0], "")["steps"][5]
    assert (step["verdict"], step["reason"]) == ("INCONCLUSIVE", "binding_mismatch")


def test_bindings_expire_by_the_recorded_times_after_restart(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t1")])
    env.manager.start_step(run.id, 1, [BROWSER])
    env.manager.finish(run.id, 1)
    env.restart()
    assert env.manager.binder(BROWSER) is not None  # within the grace period
    env.clock.advance(61)
    env.restart()
    assert env.manager.binder(BROWSER) is None
    assert not env.manager.authenticate(Credential(f"test-{run.code}")).ok


def test_password_and_result_token_are_stable_across_restarts(env: Env) -> None:
    run = env.manager.create_run()
    password, token = env.manager.password_for(run), env.manager.result_token(run)
    env.restart()
    again = env.manager.get(run.id)
    assert (env.manager.password_for(again), env.manager.result_token(again)) == (password, token)
    found = env.manager.find_by_result_token(token)
    assert found is not None and found.id == run.id
    # neither is ever written down
    journal = (env.data_dir / "events.jsonl").read_text()
    assert password not in journal and token not in journal


def test_a_deleted_run_stays_deleted(env: Env) -> None:
    keep = env.manager.create_run(steps=[("immediate", "t1")])
    gone = env.manager.create_run(steps=[("immediate", "t1")])
    env.manager.start_step(gone.id, 1, [BROWSER])
    env.manager.delete(gone.id)
    env.restart()
    with pytest.raises(RunNotFound):
        env.manager.get(gone.id)
    assert env.manager.get(keep.id).code == keep.code
    assert env.manager.binder(BROWSER) is None
    assert gone.id not in (env.data_dir / "events.jsonl").read_text()


def test_unusable_run_records_are_skipped(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t1")])
    env.store.append({"type": "step_started", "run": "no-such-run", "step": 1, "at": 0})
    env.store.append({"type": "step_finished", "run": run.id, "step": 9, "at": 0})
    env.store.append({"type": "step_reported", "run": run.id, "step": 1})
    env.manager.start_step(run.id, 1, [BROWSER])
    env.restart()
    assert env.manager.get(run.id).step(1).state == "active"
    assert env.manager.binder(BROWSER) is not None


def test_run_records_hold_addresses_only_under_the_address_keys(env: Env) -> None:
    """The web app hides ``address``/``addresses`` of run records; nothing else may hold one."""
    history(env)
    from mailtls.runs.manager import RUN_RECORD_TYPES

    for record in env.store.query(types=RUN_RECORD_TYPES):
        rest = {k: v for k, v in record.items() if k not in ("address", "addresses")}
        for address in (BROWSER, BROWSER_V6, PHONE, SHARED, "192.0.2.99"):
            assert address not in repr(rest), record
        assert "conn" not in record  # run records are not a connection's events
