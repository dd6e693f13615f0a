"""Run creation limits against a real ``mailtls serve``: rate and burst come from the settings,
and networks in ``connections.exempt`` (a lab scripting a client matrix) are not limited."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from conftest import start_serve

pytestmark = pytest.mark.timeout(90)


def _create(http: httpx.Client) -> int:
    return http.post(
        "/api/runs", json={"steps": [{"scenario": "immediate", "testcase": "t1"}]}
    ).status_code


def test_a_lab_address_in_connections_exempt_creates_100_runs(tmp_path: Path) -> None:
    inst = start_serve(
        tmp_path / "var",
        config_extra="[run_creation]\nburst = 2\nrate_per_minute = 0.01\n"
        '[connections]\nexempt = ["127.0.0.0/8"]\n',
    )
    try:
        with httpx.Client(base_url=inst.url, timeout=10.0) as http:
            codes = [_create(http) for _ in range(100)]
        assert codes == [201] * 100, sorted(set(codes))
    finally:
        inst.stop()


def test_rate_and_burst_are_settings(tmp_path: Path) -> None:
    inst = start_serve(
        tmp_path / "var", config_extra="[run_creation]\nburst = 3\nrate_per_minute = 0.01\n"
    )
    try:
        with httpx.Client(base_url=inst.url, timeout=10.0) as http:
            codes = [_create(http) for _ in range(5)]
        assert codes[3:] == [429, 429], codes
        assert 429 not in codes[:3], codes
    finally:
        inst.stop()
