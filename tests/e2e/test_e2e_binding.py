"""Binding by client address through a real ``mailtls serve`` (DESIGN §6).

A step's verdict uses only connections whose accept-time binding was that step. A login with the
run's account from an address that is not bound (another network) is ``binding_mismatch``:
INCONCLUSIVE, never PASS, even over TLS; that address is bound from then on (the login address),
so the client's next connection counts. When two runs are started from the same address, the
newest binding wins: a client of the older run lands on the newer step, its login is the older
run's ``binding_mismatch`` and not evidence for the newer step.
"""

from __future__ import annotations

import contextlib
import smtplib
from collections.abc import Iterator

import pytest
from e2e_helpers import (
    CLIENT_ERRORS,
    HOST,
    Api,
    Run,
    api,  # noqa: F401 (the module's fixtures)
    serving,
    tags,
    tls_context,
    verdict,
)

from conftest import ServeInstance


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeInstance]:
    # address binding, the fall-back when endpoints are off (test_e2e_endpoints.py: exact)
    with serving(
        tmp_path_factory.mktemp("e2e-binding") / "var", endpoints={"enabled": False}
    ) as server:
        yield server


def login_from(inst: ServeInstance, source: str, run: Run) -> bool:
    """An opportunistic submission client bound to ``source``; True when the login succeeded."""
    s = smtplib.SMTP(HOST, inst.ports["smtp_submission"], timeout=5, source_address=(source, 0))
    try:
        s.ehlo()
        if s.has_extn("starttls"):
            s.starttls(context=tls_context(inst))
            s.ehlo()
        s.login(run.username, run.password)
        return True
    except CLIENT_ERRORS:
        return False
    finally:
        with contextlib.suppress(*CLIENT_ERRORS):
            s.quit()
        s.close()


@pytest.mark.timeout(30)
def test_login_from_an_unbound_address_is_a_mismatch(inst: ServeInstance, api: Api) -> None:
    run = api.create(("immediate", "t1"))
    api.start(run)  # binds 127.0.0.1
    assert login_from(inst, "127.0.55.1", run)
    step = api.finish(run)
    assert verdict(step) == ("INCONCLUSIVE", "binding_mismatch")
    assert step["protocols"]["smtp"]["connections"] == 0


@pytest.mark.timeout(30)
def test_the_login_address_is_bound_afterwards(inst: ServeInstance, api: Api) -> None:
    run = api.create(("immediate", "baseline"))
    api.start(run)
    assert login_from(inst, "127.0.55.2", run)  # unbound: mismatch, then bound
    assert login_from(inst, "127.0.55.2", run)  # bound to the step: counts
    step = api.finish(run)
    assert verdict(step) == ("INCONCLUSIVE", "binding_mismatch")  # never PASS with a mismatch
    assert {"binding_mismatch", "tls_auth"} <= tags(step)
    assert step["protocols"]["smtp"]["connections"] == 1


@pytest.mark.timeout(30)
def test_newest_binding_wins(inst: ServeInstance, api: Api) -> None:
    older = api.create(("immediate", "t1"))
    api.start(older)
    newer = api.create(("immediate", "baseline"))
    api.start(newer)  # the same address: this step now owns it
    assert login_from(inst, HOST, older)  # baseline behaviour: STARTTLS, TLS login
    assert verdict(api.finish(older)) == ("INCONCLUSIVE", "binding_mismatch")
    assert verdict(api.finish(newer)) == ("INCONCLUSIVE", "not_exercised")
