"""Dedicated endpoints in the run manager: assignment, the accept-time lookup, release, replay."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from runs_testkit import Env, settings

from mailtls import settings as cfg
from mailtls.runs.endpoints import EndpointPool, PoolExhausted, kinds_for

POOL = cfg.Endpoints(port_first=40000, port_last=40011, max_runs=3)
CLIENT = "192.0.2.10"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path, conf=settings(endpoints=POOL))
    yield e
    e.close()


def ports(env: Env, run_id: str) -> dict[str, int]:
    endpoints = env.manager.endpoints_of(run_id)
    assert endpoints is not None
    return {e.kind: e.port for e in endpoints}


def test_a_run_gets_one_port_per_kind_it_may_use(env: Env) -> None:
    imap = env.manager.create_run(steps=[("immediate", "t1")], protocol="imap")
    both = env.manager.create_run(steps=[("immediate", "t1")])
    assert set(ports(env, imap.id)) == {"smtp_submission", "smtp_tls", "imap", "imap_tls"}
    assert len(ports(env, both.id)) == 6
    assert not set(ports(env, imap.id).values()) & set(ports(env, both.id).values())
    view = env.manager.view(imap.id, "http://x")
    assert view["account"]["binding"] == "endpoint"
    assert view["account"]["servers"]["imap"] == [
        {"host": "localhost", "port": ports(env, imap.id)["imap"], "security": "starttls"},
        {"host": "localhost", "port": ports(env, imap.id)["imap_tls"], "security": "tls"},
    ]
    assert "pop3" not in view["account"]["servers"]


def test_the_local_port_alone_names_run_and_step(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t1")], protocol="imap")
    port = ports(env, run.id)["imap"]
    before = env.manager.binder(CLIENT, ("127.0.0.1", port))
    assert before is not None and (before.step, before.active, before.testcase) == (
        0,
        False,
        "baseline",
    )
    env.manager.start_step(run.id, 1, [CLIENT])
    for client in (CLIENT, "2001:db8::5", "198.51.100.7"):  # any client address at all
        b = env.manager.binder(client, ("::1", port))
        assert b is not None and (b.run_id, b.step, b.source, b.active) == (
            run.id,
            1,
            "endpoint",
            True,
        )
    assert env.manager.binder(CLIENT, ("127.0.0.1", 2143)) is None  # shared ports: nothing
    assert env.manager.view(run.id, "http://x")["steps"][0]["binding"] == "endpoint"
    assert env.store.query(run=run.id, types=["step_started"])[0]["addresses"] == []


def test_exhaustion_refuses_and_journals_nothing(env: Env) -> None:
    for _ in range(2):
        env.manager.create_run(steps=[("immediate", "t1")])  # 2 x 6 = all 12 ports
    with pytest.raises(PoolExhausted):
        env.manager.create_run(steps=[("immediate", "t1")])
    assert len(env.store.query(types=["run_created"])) == 2


def test_restart_keeps_and_release_after_grace_gives_back(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t1")], protocol="imap")
    mine = ports(env, run.id)
    env.manager.start_step(run.id, 1, [CLIENT])
    env.restart()
    assert ports(env, run.id) == mine
    env.manager.finish(run.id, 1)
    assert env.manager.release_endpoints() == 0  # within the grace period: still bound
    grace = env.manager.binder(CLIENT, ("127.0.0.1", mine["imap"]))
    assert grace is not None and grace.step == 1
    env.clock.advance(61)
    assert env.manager.release_endpoints() == 1
    assert env.manager.endpoints_of(run.id) is None
    assert env.manager.binder(CLIENT, ("127.0.0.1", mine["imap"])) is None
    env.restart()
    assert env.manager.endpoints_of(run.id) is None


def test_idle_runs_give_back_and_get_new_ones_at_their_next_step(tmp_path: Path) -> None:
    conf = settings(endpoints=replace(POOL, idle_seconds=100.0))
    env = Env(tmp_path, conf=conf)
    run = env.manager.create_run(steps=[("immediate", "t1")], protocol="imap")
    env.clock.advance(101)
    assert env.manager.release_endpoints() == 1
    env.manager.start_step(run.id, 1, [CLIENT])
    assert env.manager.endpoints_of(run.id) is not None
    env.close()


def test_another_runs_login_on_my_endpoint_is_its_mismatch(env: Env) -> None:
    mine = env.manager.create_run(steps=[("immediate", "t1")], protocol="imap")
    other = env.manager.create_run(steps=[("immediate", "baseline")], protocol="imap")
    env.manager.start_step(mine.id, 1, [CLIENT])
    env.manager.start_step(other.id, 1, [CLIENT])
    conn = env.shell.connect(CLIENT, port=ports(env, mine.id)["imap"])
    conn.login(env.manager.account_username(other))
    theirs = env.manager.finish(other.id, 1)
    assert (str(theirs.verdict), theirs.reason) == ("INCONCLUSIVE", "binding_mismatch")
    assert str(env.manager.finish(mine.id, 1).verdict) != "FAIL"


def test_address_mode_gives_an_address_and_a_host_name(tmp_path: Path) -> None:
    conf = settings(endpoints=cfg.Endpoints(prefix="127.0.10.0/24", zone="t.example"))
    pool = EndpointPool(conf)
    plan = pool.plan("r1", kinds_for("imap", conf))
    assert plan.address == "127.0.10.1" and plan.host == f"{plan.label}.t.example"
    assert {e.port for e in plan} == {2587, 2465, 2143, 2993}
    pool.assign(plan)
    assert pool.lookup(("127.0.10.1", 2143)) == ("r1", "imap")
    assert pool.lookup(("127.0.0.1", 2143)) is None
    assert pool.by_label(plan.label.upper()) == plan
    assert pool.plan("r2", ["imap"]).address == "127.0.10.2"
