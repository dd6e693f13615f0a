"""`mailtls export`: whole journal and one run, torn tail never emitted, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailtls.cli import main
from mailtls.store import JOURNAL_NAME, Store


def _journal(tmp_path: Path) -> Path:
    with Store(tmp_path, fsync=False) as store:
        store.append({"type": "run_created", "run": "R1", "code": "abc"})
        store.append({"type": "command", "run": "R1", "conn": "c1", "line": "EHLO x"})
        store.append({"type": "auth", "conn": "c9", "code": "abc", "outcome": "failure"})
        store.append({"type": "run_created", "run": "R2", "code": "zzz"})
        store.append({"type": "command", "run": "R2", "conn": "c2", "line": "NOOP"})
    with (tmp_path / JOURNAL_NAME).open("ab") as f:
        f.write(b'{"id": 99, "type": "torn')  # a kill -9 mid-write
    return tmp_path


def _read(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_everything_and_one_run(tmp_path: Path) -> None:
    data = _journal(tmp_path / "var")
    out = tmp_path / "all.jsonl"
    assert main(["export", "--data-dir", str(data), "-o", str(out)]) == 0
    assert [r["type"] for r in _read(out)] == [
        "run_created",
        "command",
        "auth",
        "run_created",
        "command",
    ]
    one = tmp_path / "r1.jsonl"
    assert main(["export", "--data-dir", str(data), "--run", "R1", "-o", str(one)]) == 0
    records = _read(one)
    assert {r.get("run") for r in records} == {"R1", None}
    assert any(r.get("code") == "abc" and r["type"] == "auth" for r in records)


def test_export_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "no event journal" in capsys.readouterr().err
    data = _journal(tmp_path / "var")
    assert main(["export", "--data-dir", str(data), "--run", "nope", "-o", "/dev/null"]) == 2
    assert "no run" in capsys.readouterr().err
    for output in (tmp_path / "no" / "such" / "dir.jsonl", tmp_path):  # missing folder, a folder
        assert main(["export", "--data-dir", str(data), "-o", str(output)]) == 3  # cannot run
        err = capsys.readouterr().err
        assert "cannot write" in err and "Traceback" not in err


def test_unknown_run_leaves_the_output_file_alone(tmp_path: Path) -> None:
    data = _journal(tmp_path / "var")
    out = tmp_path / "keep.jsonl"
    out.write_text("precious\n")
    assert main(["export", "--data-dir", str(data), "--run", "nope", "-o", str(out)]) == 2
    assert out.read_text() == "precious\n"
