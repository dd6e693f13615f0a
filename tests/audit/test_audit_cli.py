"""``mailtls audit`` end to end: formats, exit codes, captures, instances, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from audit_helpers import FIXTURES

from conftest import require_file, require_tool
from mailtls.cli import main

PF = FIXTURES / "postfix"
D23 = FIXTURES / "dovecot23"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["audit", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_exit_codes_follow_fail_on(capsys: pytest.CaptureFixture[str]) -> None:
    insecure = str(PF / "insecure")
    assert run(capsys, "--postfix-dir", insecure)[0] == 1
    assert run(capsys, "--postfix-dir", insecure, "--fail-on", "critical")[0] == 0
    assert run(capsys, "--postfix-dir", str(PF / "secure"))[0] == 0
    code, _, err = run(capsys, "--postfix-dir", insecure, "--fail-on", "severe")
    assert code == 2 and "unknown severity" in err
    with pytest.raises(SystemExit) as exc:
        main(["audit", "--format", "yaml"])
    assert exc.value.code == 2


def test_text_output_groups_by_service_and_says_how_to_fix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "--postfix-dir", str(PF / "insecure"))
    assert code == 1
    assert "submission/inet" in out and "(port 587)" in out
    assert "Accepts cleartext credentials on port 587" in out
    assert "fix:" in out and "-o smtpd_tls_auth_only=yes" in out
    assert "\\x0a" not in out


def test_json_has_findings_and_effective_settings(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "--postfix-dir",
        str(PF / "override_fix"),
        "--dovecot-config",
        str(D23 / "remote_filter" / "dovecot.conf"),
        "--format",
        "json",
    )
    doc = json.loads(out)
    assert code == 1
    assert {"findings", "effective", "notes", "sources"} <= doc.keys()
    finding = next(f for f in doc["findings"] if f["service"] == "imap (remote 192.168.0.0/16)")
    assert finding["severity"] == "high" and finding["line"] == 9
    services = {s["service"]: s for s in doc["effective"]["postfix"][0]["services"]}
    sub = services["submission/inet"]
    assert sub["port"] == 587 and sub["effective_tls_level"] == "encrypt"
    level = sub["settings"]["smtpd_tls_security_level"]
    assert level["scope"] == "master.cf -o" and level["line"] == 6
    dove = doc["effective"]["dovecot"]
    assert dove["version"] == "2.3"
    assert [c["service"] for c in dove["contexts"]][:2] == ["imap", "imap (remote 192.168.0.0/16)"]


def test_sarif_is_well_formed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--postfix-dir", str(PF / "insecure"), "--format", "sarif")
    doc = json.loads(out)
    assert code == 1 and doc["version"] == "2.1.0"
    results = doc["runs"][0]["results"]
    located = [r for r in results if r["ruleId"] == "postfix-465-without-wrappermode"]
    assert (
        located
        and "master.cf"
        in (located[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"])
    )
    rules = {r["id"] for r in doc["runs"][0]["tool"]["driver"]["rules"]}
    assert {r["ruleId"] for r in results} <= rules


def test_captures_point_at_capture_lines(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    postconf = require_tool("postconf")
    d = str(PF / "insecure")
    for flag in ("-n", "-M", "-P"):
        text = subprocess.run(
            [postconf, "-c", d, flag], capture_output=True, text=True, check=True, timeout=30
        ).stdout
        (tmp_path / f"postconf{flag}.txt").write_text(text)
    code, out, _ = run(
        capsys,
        "--postconf-n", str(tmp_path / "postconf-n.txt"),
        "--postconf-M", str(tmp_path / "postconf-M.txt"),
        "--postconf-P", str(tmp_path / "postconf-P.txt"),
        "--format", "json",
    )  # fmt: skip
    from_capture = json.loads(out)["findings"]
    code2, out2, _ = run(capsys, "--postfix-dir", d, "--format", "json")
    from_files = json.loads(out2)["findings"]
    assert code == code2 == 1
    key = [(f["id"], f["service"], f["port"], f["severity"]) for f in from_files]
    assert [(f["id"], f["service"], f["port"], f["severity"]) for f in from_capture] == key
    auth_only = next(f for f in from_capture if f["setting"] == "smtpd_tls_auth_only")
    capture_lines = (tmp_path / "postconf-n.txt").read_text().splitlines()
    assert auth_only["file"].endswith("postconf-n.txt")
    assert capture_lines[auth_only["line"] - 1] == "smtpd_tls_auth_only = no"
    code, _, err = run(capsys, "--postconf-P", str(tmp_path / "postconf-P.txt"))
    assert code == 2 and "--postconf-M" in err


def test_runtime_mode_asks_postconf(capsys: pytest.CaptureFixture[str]) -> None:
    require_tool("postconf")
    code, out, _ = run(
        capsys, "--postfix-dir", str(PF / "insecure"), "--runtime", "--format", "json"
    )
    doc = json.loads(out)
    assert code == 1
    assert doc["sources"] == [f"postconf -c {PF / 'insecure'} -n/-M"]
    assert any(f["id"] == "postfix-465-without-wrappermode" for f in doc["findings"])


def test_multi_instance_audits_every_instance(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    primary, out_dir = tmp_path / "postfix", tmp_path / "postfix-out"
    primary.mkdir()
    out_dir.mkdir()
    (primary / "main.cf").write_text(
        f"multi_instance_enable = yes\nmulti_instance_directories = {out_dir}\n"
        "smtpd_tls_chain_files = k.pem\nsmtpd_tls_security_level = may\n"
    )
    (primary / "master.cf").write_text("smtp inet n - y - - smtpd\n")
    (out_dir / "main.cf").write_text(
        "multi_instance_name = postfix-out\nsmtpd_sasl_auth_enable = yes\n"
    )
    (out_dir / "master.cf").write_text("submission inet n - y - - smtpd\n")
    code, out, _ = run(capsys, "--postfix-dir", str(primary), "--format", "json")
    doc = json.loads(out)
    assert [i["instance"] for i in doc["effective"]["postfix"]] == [
        "postfix (primary)",
        "postfix-out",
    ]
    assert code == 1
    assert any(f["service"] == "postfix-out: submission/inet" for f in doc["findings"])


@pytest.mark.parametrize("kind", ["missing", "directory", "binary", "huge", "loop"])
def test_bad_input_exits_3_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str
) -> None:
    target = tmp_path / "dovecot.conf"
    if kind == "directory":
        target.mkdir()
    elif kind == "binary":
        target.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8)
    elif kind == "huge":
        with open(target, "wb") as fh:
            fh.write(b"# padding\n" * (5 * 1024 * 1024))  # 50 MB
    elif kind == "loop":
        target.write_text("!include other.conf\n")
        (tmp_path / "other.conf").write_text("!include dovecot.conf\n")
    code, out, err = run(capsys, "--dovecot-config", str(target))
    assert code == 3
    assert out == ""
    expected = {
        "missing": "no such file",
        "directory": "directory",
        "binary": "binary",
        "huge": "larger than",
        "loop": "include loop",
    }[kind]
    assert expected in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_unreadable_file_is_reported_and_the_rest_audited(tmp_path: Path) -> None:
    conf = tmp_path / "dovecot.conf"
    conf.write_text("protocols = imap\nssl_cert = <c\n!include secret.conf\n")
    (tmp_path / "secret.conf").write_text("disable_plaintext_auth = no\n")
    (tmp_path / "secret.conf").chmod(0)
    postfix_dir = tmp_path / "postfix"
    postfix_dir.mkdir()
    (postfix_dir / "main.cf").write_text("smtpd_sasl_auth_enable = yes\n")
    (postfix_dir / "main.cf").chmod(0)
    (postfix_dir / "master.cf").write_text("smtp inet n - y - - smtpd\n")
    # without CAP_DAC_OVERRIDE even root is refused a mode-000 file, like a non-root admin
    prefix = (
        [require_tool("setpriv"), "--bounding-set=-dac_override,-dac_read_search"]
        if os.geteuid() == 0
        else []
    )
    argv = [*prefix, sys.executable, "-m", "mailtls", "audit", "--format", "json"]
    argv += ["--dovecot-config", str(conf), "--postfix-dir", str(postfix_dir)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    notes = " ".join(doc["notes"])
    assert "secret.conf" in notes and "permission denied" in notes
    assert "main.cf" in notes
    assert doc["effective"]["dovecot"] is not None and doc["effective"]["postfix"]
    only_unreadable = [*argv[: argv.index("--dovecot-config")], "--dovecot-config"]
    (tmp_path / "locked.conf").write_text("x = 1\n")
    (tmp_path / "locked.conf").chmod(0)
    proc = subprocess.run(
        [*only_unreadable, str(tmp_path / "locked.conf")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3
    assert "nothing could be read" in proc.stderr and "Traceback" not in proc.stderr


def test_no_traceback_from_the_console_script(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mailtls", "audit", "--postfix-dir", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3
    assert (
        proc.stderr.strip() == f"mailtls audit: cannot audit: {tmp_path / 'nope'}: not a directory"
    )


@pytest.mark.timeout(60)
def test_local_system_audit_runs_and_explains(tmp_path: Path) -> None:
    """No source flag: the local /etc/postfix and /etc/dovecot (installed in CI)."""
    require_tool("doveconf")
    require_file("/etc/dovecot/dovecot.conf", "installed by dovecot-core")
    proc = subprocess.run(
        [sys.executable, "-m", "mailtls", "audit", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["effective"]["dovecot"]["config"] == "/etc/dovecot/dovecot.conf"
    assert any(s.startswith("Dovecot config /etc/dovecot/dovecot.conf") for s in doc["sources"])
    protocols = {c["service"] for c in doc["effective"]["dovecot"]["contexts"]}
    assert protocols, "the stock Debian config enables at least imap"


def test_doveconf_capture_of_a_24_server(capsys: pytest.CaptureFixture[str]) -> None:
    capture = FIXTURES / "dovecot24" / "cleartext" / "expected-doveconf-n.txt"
    code, out, _ = run(capsys, "--doveconf-n", str(capture), "--format", "json")
    doc = json.loads(out)
    assert code == 1 and doc["effective"]["dovecot"]["version"] == "2.4"
    clear = [f for f in doc["findings"] if f["id"] == "dovecot-cleartext-auth-before-tls"]
    assert {f["service"] for f in clear} == {"imap", "pop3"}
    assert clear[0]["file"] == str(capture) and clear[0]["line"] == 3


def test_runtime_dovecot_uses_doveconf(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    require_tool("doveconf")
    from audit_helpers import materialise

    conf = materialise(D23 / "cleartext", tmp_path / "cleartext")
    code, out, _ = run(capsys, "--dovecot-config", str(conf), "--runtime", "--format", "json")
    doc = json.loads(out)
    assert code == 1 and doc["sources"] == [f"doveconf -c {conf} -n"]
    clear = [f for f in doc["findings"] if f["id"] == "dovecot-cleartext-auth-before-tls"]
    assert clear and clear[0]["file"] == f"doveconf -c {conf} -n"
    broken = tmp_path / "broken.conf"
    broken.write_text("ssl = maybe\n")
    code, out, err = run(capsys, "--dovecot-config", str(broken), "--runtime")
    assert code == 3 and "doveconf" in err and out == ""


def test_messages_from_config_files_are_escaped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A file name or line from a config under review never reaches the terminal raw."""
    evil = tmp_path / "evil.conf"
    evil.write_text("ssl = yes\n!include /nonexistent\x1b]0;pwned\x07.conf\n")
    code, out, err = run(capsys, "--dovecot-config", str(evil))
    assert code == 3 and "\\x1b]0;pwned\\x07" in err
    assert "\x1b" not in out + err and "\x07" not in out + err
    noisy = tmp_path / "noisy\x1b[2J.conf"
    noisy.write_text("ssl = required\nwhat is this\n")
    (tmp_path / "main.conf").write_text(f"!include {noisy.name}\n")
    for fmt in ("text", "json", "sarif"):
        code, out, err = run(
            capsys, "--dovecot-config", str(tmp_path / "main.conf"), "--format", fmt
        )
        assert "\x1b" not in out + err, fmt


def test_text_puts_the_one_line_fix_first_under_each_service(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, _ = run(capsys, "--postfix-dir", str(PF / "submission_may"))
    lines = out.splitlines()
    head = lines.index("2587/inet  (port 2587)")
    first, second = lines[head + 1], lines[head + 2]
    assert first.split()[0] == "HIGH" and "fix: In " in first and "master.cf:11" in first
    assert "-o smtpd_tls_auth_only=yes" in first
    assert second.strip().startswith("postfix-auth-before-tls: smtpd_tls_auth_only = no")
    # each finding of the service starts with its severity and fix, worst first
    block = lines[head + 1 : lines.index("submission/inet  (port 587)")]
    starts = [line.split()[0] for line in block if " fix: " in line]
    assert starts == ["HIGH", "LOW"]


OLD_FINDING_KEYS = {
    "id", "severity", "category", "reason", "fix", "setting", "effective_value", "service",
    "port", "file", "line", "doc", "evidence", "confirmed_live", "extra",
}  # fmt: skip
OLD_SARIF_PROPERTIES = {"severity", "service", "port", "setting", "effective_value", "evidence"}


def test_json_and_sarif_keep_their_shape_and_add_the_exposure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, _ = run(capsys, "--postfix-dir", str(PF / "insecure"), "--format", "json")
    findings = json.loads(out)["findings"]
    assert findings and all(set(f) > OLD_FINDING_KEYS for f in findings)
    assert {f["exposure"] for f in findings} >= {"credentials-before-tls"}
    assert all(f["extra"]["reach"] == "public" for f in findings)
    _, out, _ = run(capsys, "--postfix-dir", str(PF / "insecure"), "--format", "sarif")
    results = json.loads(out)["runs"][0]["results"]
    assert all(set(r["properties"]) > OLD_SARIF_PROPERTIES for r in results)
    assert all(r["properties"]["exposure"] for r in results)


def test_runtime_falls_back_to_the_files_when_doveconf_refuses_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """doveconf failing means Dovecot would not start: the report still names each setting."""
    require_tool("doveconf")
    conf = FIXTURES / "dovecot24" / "renamed_nested" / "dovecot.conf"
    code, out, _ = run(capsys, "--runtime", "--dovecot-config", str(conf), "--format", "json")
    doc = json.loads(out)
    assert code == 1
    assert sorted(f["setting"] for f in doc["findings"]) == [
        "disable_plaintext_auth",
        "ssl_cert",
        "ssl_key",
    ]
    assert any("failed: doveconf: Fatal" in n and "auditing the files" in n for n in doc["notes"])
    assert doc["effective"]["dovecot"]["loads"] is False
