"""Types shared between the run manager, the I/O shell and the verdict function."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Binding:
    """What a connection was bound to at accept time (DESIGN §6).

    ``active`` is False for a two_phase step that has not been activated yet: the connection then
    gets the baseline policy. ``source`` says how the binding was found: ``address`` (the web
    visitor's address with TTL), ``login_address`` (an address the run's account logged in from),
    ``endpoint`` (a listener address or port of the run's own: exact; step 0 between steps).
    """

    run_id: str
    step: int
    testcase: str
    scenario: str
    source: str
    active: bool

    def as_fields(self) -> dict[str, object]:
        return {
            "run": self.run_id,
            "step": self.step,
            "testcase": self.testcase,
            "scenario": self.scenario,
            "source": self.source,
            "active": self.active,
        }
