"""The run and step model: plain data, plans, and the errors the run manager raises.

A run is one user's self-test: a random id (the secret in URLs), a session code (in the account
name, travels in the clear), an optional incoming protocol, and numbered steps. A step pairs a
scenario (``immediate``/``two_phase``) with a test case (``baseline``, ``t1``..``t4``) and moves
``pending -> active -> finished`` (or ``skipped``). Nothing here does I/O or reads the clock.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailtls.testcases import MORE, SCENARIOS, TESTCASES
from mailtls.verdicts import Misuse, UserReports

RUN_ID_BYTES = 18  # 144 bits, URL-safe base64: 24 characters
MAX_STEPS = 50
PROTOCOLS = ("imap", "pop3")

GUIDED_PLAN: tuple[tuple[str, str], ...] = (
    ("immediate", "baseline"),
    ("immediate", "t1"),
    ("immediate", "t2"),
    ("immediate", "t3"),
    ("immediate", "t4"),
    ("two_phase", "t1"),
    ("two_phase", "t2"),
    ("two_phase", "t3"),
    ("two_phase", "t4"),
)
# the optional "more tests" after the nine standard steps: the cases beyond T1-T4
MORE_PLAN: tuple[tuple[str, str], ...] = tuple(("immediate", name) for name in MORE)
PLANS: dict[str, tuple[tuple[str, str], ...]] = {"guided": GUIDED_PLAN, "more": MORE_PLAN}


class RunError(ValueError):
    """A request the run manager refuses (bad plan, step in the wrong state)."""


class PlanError(RunError):
    """The steps, plan or protocol given to ``create_run`` are not valid."""


class StepStateError(RunError):
    """The step is not in a state that allows the operation (e.g. finishing a skipped step)."""


class RunsRefused(RuntimeError):
    """New runs are refused for now (the data disk is below its free-space floor)."""


class RunNotFound(KeyError):
    """No such run (or it was deleted)."""

    def __str__(self) -> str:
        return "no such run"


class StepNotFound(KeyError):
    """The run has no step with that number."""

    def __str__(self) -> str:
        return "no such step"


class StepState(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    FINISHED = "finished"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Collision:
    """Another run's binding met this step's on one address (``took``: we replaced theirs)."""

    at: float
    role: str  # "took" | "lost"
    peer: str  # keyed tag of the other run (never its id)
    source: str


@dataclass(slots=True)
class Step:
    n: int
    scenario: str
    testcase: str
    state: StepState = StepState.PENDING
    started: float | None = None
    expires: float | None = None
    finished: float | None = None
    activated: float | None = None
    reports: UserReports = field(default_factory=UserReports)
    binding: str = "address"  # how its connections were bound: "endpoint" or "address"
    collisions: list[Collision] = field(default_factory=list)
    # logins with the run's code on connections not bound to this run: (event id, connection id)
    mismatches: list[tuple[int, str | int]] = field(default_factory=list)
    # logins with the run's username and a wrong password (someone else's, or mistyped)
    misuses: list[Misuse] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.state in (StepState.PENDING, StepState.ACTIVE)

    @property
    def is_active_attack(self) -> bool:
        """Whether new connections bound to this step get the test case (not baseline)."""
        return self.scenario == "immediate" or self.activated is not None


@dataclass(slots=True)
class Run:
    id: str
    code: str
    created: float
    protocol: str | None
    steps: list[Step]
    deleted: bool = False
    login_addresses: list[str] = field(default_factory=list)
    last_activity: float = 0.0  # the newest run record's time (endpoints of idle runs go back)

    def step(self, n: int) -> Step:
        if 1 <= n <= len(self.steps):
            return self.steps[n - 1]
        raise StepNotFound(n)

    def active_step(self) -> Step | None:
        return next((s for s in self.steps if s.state is StepState.ACTIVE), None)


def new_run_id() -> str:
    """A fresh random run id (144 bits); never derived from anything else."""
    return secrets.token_urlsafe(RUN_ID_BYTES)


def resolve_plan(
    steps: Sequence[tuple[str, str]] | None, plan: str | None
) -> list[tuple[str, str]]:
    """Validate ``steps`` (scenario, testcase) or a named ``plan``; default: the guided plan."""
    if steps is not None and plan is not None:
        raise PlanError("give either steps or a plan, not both")
    if plan is not None:
        if plan not in PLANS:
            raise PlanError(f"unknown plan {plan!r} (choose from {', '.join(PLANS)})")
        return list(PLANS[plan])
    if steps is None:
        return list(GUIDED_PLAN)
    if not steps:
        raise PlanError("a run needs at least one step")
    if len(steps) > MAX_STEPS:
        raise PlanError(f"a run has at most {MAX_STEPS} steps")
    out: list[tuple[str, str]] = []
    for scenario, testcase in steps:
        if not isinstance(scenario, str) or not isinstance(testcase, str):
            raise PlanError("scenario and testcase must be strings")
        if scenario not in SCENARIOS:
            raise PlanError(f"unknown scenario {scenario!r} (choose from {', '.join(SCENARIOS)})")
        if testcase not in TESTCASES:
            raise PlanError(f"unknown test case {testcase!r} (choose from {', '.join(TESTCASES)})")
        out.append((scenario, testcase))
    return out


def check_protocol(protocol: str | None) -> str | None:
    if protocol is None or protocol in PROTOCOLS:
        return protocol
    raise PlanError(f"unknown incoming protocol {protocol!r} (choose from imap, pop3)")


def make_steps(plan: Sequence[tuple[str, str]]) -> list[Step]:
    return [Step(n=i, scenario=s, testcase=t) for i, (s, t) in enumerate(plan, start=1)]
