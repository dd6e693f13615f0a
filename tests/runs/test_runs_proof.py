"""Only the run's password is evidence: ``runs.proof`` and what the run manager does with a login
that names a run but does not present its password (someone else read the username off the wire,
or the user mistyped the password)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path

import pytest
from runs_testkit import Env

from mailtls.protocols.base import Credential
from mailtls.runs import codes
from mailtls.runs.manager import MAX_MISUSES
from mailtls.runs.proof import presents

BROWSER = "192.0.2.10"
STRANGER = "203.0.113.66"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path / "var")
    yield e
    e.close()


def name(env: Env, code: str) -> str:
    return codes.account_username(code, env.conf.domain)


def test_presents_checks_the_password_or_the_cram_md5_digest() -> None:
    challenge = b"<123.456@mx.example>"
    right = hmac.new(b"s3cret", challenge, hashlib.md5).hexdigest().encode()
    assert presents("s3cret", Credential("u", b"s3cret"))
    assert not presents("s3cret", Credential("u", b"s3cret "))
    assert not presents("s3cret", Credential("u", b""))
    assert presents("s3cret", Credential("u", challenge=challenge, response=right))
    assert presents("s3cret", Credential("u", challenge=challenge, response=right.upper()))
    other = hmac.new(b"guess", challenge, hashlib.md5).hexdigest().encode()
    assert not presents("s3cret", Credential("u", challenge=challenge, response=other))
    assert not presents("s3cret", Credential("u"))  # a username proves nothing
    assert "s3cret" not in repr(Credential("u", b"s3cret"))


def test_a_wrong_password_names_the_run_but_is_no_proof(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t1")])
    env.manager.start_step(run.id, 1, [BROWSER])
    wrong = env.manager.authenticate(Credential(name(env, run.code), b"guess"))
    assert (wrong.ok, wrong.proof, wrong.code, wrong.display) == (
        False,
        False,
        run.code,
        name(env, run.code),
    )
    right = env.manager.authenticate(
        Credential(name(env, run.code), env.manager.password_for(run).encode())
    )
    assert (right.ok, right.proof) == (True, True)


def test_a_stranger_with_the_username_is_a_finding_not_the_victims_fail(env: Env) -> None:
    """The table's row: a stranger logs in twice over cleartext with a wrong password from
    another address. Nothing binds, nothing mismatches, the step is not FAIL."""
    run = env.manager.create_run(steps=[("immediate", "t1")])
    env.manager.start_step(run.id, 1, [BROWSER])
    first = env.shell.connect(STRANGER).login(name(env, run.code), "guess")
    env.clock.advance(5)
    second = env.shell.connect(STRANGER).login(name(env, run.code), "guess-2")
    assert env.manager.binder(STRANGER) is None  # never a login-address binding
    assert env.store.query(run=run.id, types=["address_bound", "binding_mismatch"]) == []
    misused = env.store.query(run=run.id, types=["username_misused"])
    assert [(m["step"], m["event"], m["bound"], m["tls"]) for m in misused] == [
        (1, first["id"], False, False),
        (1, second["id"], False, False),
    ]
    assert all("client" not in m and "address" not in m for m in misused)
    result = env.manager.finish(run.id, 1)
    assert (result.verdict, result.reason) == ("INCONCLUSIVE", "never_connected")
    (finding,) = [f for f in result.findings if f.tag == "username_misused"]
    assert finding.evidence == (first["id"], second["id"])
    assert "2 times" in finding.detail and STRANGER not in finding.detail
    step = env.manager.view(run.id, "")["steps"][0]
    assert step["username_misused"] == {
        "count": 2,
        "times": [misused[0]["at"], misused[1]["at"]],
    }
    env.restart()  # the fold brings it back
    assert env.manager.view(run.id, "")["steps"][0]["username_misused"]["count"] == 2


def test_on_the_users_own_address_a_wrong_password_is_not_fail_the_right_one_is(
    env: Env,
) -> None:
    """The ordering problem: the secret is in the clear before the check. With the run's
    password that is the user's client leaking (FAIL); with another one it is a misuse."""
    run = env.manager.create_run(steps=[("immediate", "t1"), ("immediate", "t1")])
    env.manager.start_step(run.id, 1, [BROWSER])
    c = env.shell.connect(BROWSER)
    c.caps(starttls=False)
    c.login(name(env, run.code), "typo")
    result = env.manager.finish(run.id, 1)
    assert result.verdict != "FAIL" and "plaintext_auth" not in result.tags()
    assert [f.tag for f in result.findings if f.tag == "username_misused"] == ["username_misused"]
    assert "attached to this test" in next(
        f.detail for f in result.findings if f.tag == "username_misused"
    )

    env.clock.advance(120)
    env.manager.start_step(run.id, 2, [BROWSER])
    c = env.shell.connect(BROWSER)
    c.caps(starttls=False)
    c.login(name(env, run.code))  # the run's own password, in the clear
    result = env.manager.finish(run.id, 2)
    assert (result.verdict, result.reason) == ("FAIL", "plaintext_auth")
    assert "username_misused" not in result.tags()


def test_a_bare_username_from_elsewhere_is_no_mismatch(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "baseline")])
    env.manager.start_step(run.id, 1, [BROWSER])
    c = env.shell.connect(STRANGER, protocol="pop3")
    c.record("username_sent", username=name(env, run.code), code=run.code, tls=False)
    assert env.store.query(run=run.id, types=["binding_mismatch", "username_misused"]) == []


def test_misuse_records_are_bounded_per_run(env: Env) -> None:
    run = env.manager.create_run(steps=[("immediate", "t1")])
    env.manager.start_step(run.id, 1, [BROWSER])
    conn = env.shell.connect(STRANGER)
    for i in range(MAX_MISUSES + 20):
        conn.login(name(env, run.code), f"guess-{i}")
    assert len(env.store.query(run=run.id, types=["username_misused"])) == MAX_MISUSES
