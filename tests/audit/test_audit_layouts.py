"""The real-world-like layouts (``fixtures/layouts/``, scored by ``layouts.py``): every required
finding found with its severity, no false alarm at low or above."""

from __future__ import annotations

from pathlib import Path

import pytest
from layouts import layouts, score


@pytest.mark.parametrize("layout", layouts(), ids=lambda p: p.name)
def test_layout_finds_every_required_finding_and_no_false_alarm(layout: Path) -> None:
    result = score(layout)
    assert [str(m) for m in result.missed] == []
    assert [(str(f.severity), f.id, f.service, f.setting) for f in result.false_alarms] == []


def test_the_layouts_cover_the_issue() -> None:
    names = {p.name for p in layouts()}
    assert {
        "debian_stock",
        "insecure_example",
        "insecure_fixed",
        "iredmail_like",
        "mailcow_like",
        "runtime_captures",
        "debian13_upgrade",
    } <= names
    assert sum(len(score(p).required) for p in layouts()) >= 30
