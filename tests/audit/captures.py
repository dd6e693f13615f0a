"""Real ``postconf -n/-M/-P`` and ``doveconf -n`` output for the fixtures, and its normal form.

Every Postfix fixture directory carries ``postconf-n.txt``, ``postconf-M.txt`` and
``postconf-P.txt``; every Dovecot 2.3 fixture ``doveconf-n.txt``: the output of Postfix 3.7 and
Dovecot 2.3 (Debian 12) on this machine, so the auditor's runtime mode is tested on what the real
tools print. ``test_audit_differential`` re-runs the tools and fails when a committed capture no
longer matches. To (re)write them after changing a fixture::

    PYTHONPATH=src python tests/audit/captures.py
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from audit_helpers import FIXTURES, materialise

POSTCONF_FLAGS = ("-n", "-M", "-P")
# where doveconf prints the materialised (temporary) directory, the capture says @DIR@
DIR_TOKEN = "@DIR@"


def postconf_path() -> str:
    return shutil.which("postconf") or "/usr/sbin/postconf"


def run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv}: {proc.stderr.strip()}")
    return proc.stdout


def postconf_capture(fixture: Path, flag: str, postconf: str | None = None) -> str:
    """``postconf -c FIXTURE FLAG`` output; ``config_directory`` made independent of the path."""
    text = run([postconf or postconf_path(), "-c", str(fixture), flag])
    return text.replace(str(fixture), DIR_TOKEN)


def capture_name(flag: str) -> str:
    return f"postconf{flag}.txt"


def doveconf_capture(fixture: Path, work: Path, doveconf: str = "doveconf") -> str:
    """``doveconf -c dovecot.conf -n`` of a materialised copy, with the certificate and directory
    paths put back to the fixture's placeholders and the host-specific header lines dropped."""
    conf = materialise(fixture, work / f"{fixture.parent.name}-{fixture.name}")
    text = run([doveconf, "-c", str(conf), "-n"])
    return normalise_doveconf(text, conf.parent)


def normalise_doveconf(text: str, directory: Path) -> str:
    text = text.replace(str(directory / "cert.pem"), "@CERT@")
    text = text.replace(str(directory / "key.pem"), "@KEY@").replace(str(directory), DIR_TOKEN)
    # "# OS: ..." and "# Hostname: ..." depend on the machine, not on the configuration
    return "".join(
        line for line in text.splitlines(keepends=True) if not re.match(r"# (OS|Hostname): ", line)
    )


LAYOUTS = FIXTURES / "layouts"


def postfix_fixtures() -> list[Path]:
    """Every Postfix directory: the per-semantic fixtures and each layout's ``postfix/``."""
    own = [p for p in (FIXTURES / "postfix").iterdir() if p.is_dir()]
    return sorted(own) + sorted(
        p / "postfix" for p in LAYOUTS.iterdir() if (p / "postfix").is_dir()
    )


def dovecot23_fixtures() -> list[Path]:
    """Every Dovecot 2.3 directory (2.4 ones carry a hand-written expected-doveconf-n.txt)."""
    own = [p for p in (FIXTURES / "dovecot23").iterdir() if p.is_dir()]
    layouts = [p / "dovecot" for p in LAYOUTS.iterdir() if (p / "dovecot").is_dir()]
    return sorted(own) + sorted(p for p in layouts if not (p / "expected-doveconf-n.txt").exists())


def dovecot24_fixtures() -> list[Path]:
    own = [p for p in (FIXTURES / "dovecot24").iterdir() if p.is_dir()]
    layouts = [p / "dovecot" for p in LAYOUTS.iterdir() if (p / "dovecot").is_dir()]
    return sorted(own) + sorted(p for p in layouts if (p / "expected-doveconf-n.txt").exists())


def fixture_id(path: Path) -> str:
    return path.name if path.parent.parent != LAYOUTS else f"{path.parent.name}/{path.name}"


def main() -> None:
    for fixture in postfix_fixtures():
        for flag in POSTCONF_FLAGS:
            (fixture / capture_name(flag)).write_text(postconf_capture(fixture, flag))
    with tempfile.TemporaryDirectory() as work:
        for fixture in dovecot23_fixtures():
            (fixture / "doveconf-n.txt").write_text(doveconf_capture(fixture, Path(work)))
    print("captures written")


if __name__ == "__main__":
    main()
