"""Running the Debian mail clients of the CI matrix against a ``mailtls serve`` (shared by the
client test modules): each runner returns the client's exit status and output as text."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

from e2e_helpers import Run

from conftest import ServeInstance, require_tool


def run_tool(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        env=env,
        check=False,
    )
    return f"exit {proc.returncode}\n" + proc.stdout.decode("utf-8", "replace")


def write_private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


CURL_URLS = {
    "smtp": "smtp://127.0.0.1:{smtp_submission}",
    "imap": "imap://127.0.0.1:{imap}/",
    "pop3": "pop3://127.0.0.1:{pop3}/",
}


def run_in_pty(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, bytes]:
    """Run ``argv`` on a new pseudo-terminal, draining its output; kill it after ``timeout``."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            argv, stdin=terminal, stdout=terminal, stderr=terminal, env=env, start_new_session=True
        )
    finally:
        os.close(terminal)
    screen = b""
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: the terminal side is closed
                    break
                screen = (screen + chunk)[-65536:]
        try:
            proc.wait(timeout=max(0.5, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
            raise AssertionError(f"{argv[0]} did not quit in time: {screen[-2000:]!r}") from None
    finally:
        os.close(controller)
    return proc.returncode, screen


def mutt_session(inst: ServeInstance, run: Run, home: Path, settings: str) -> bytes:
    mutt = require_tool("mutt")
    home.mkdir(parents=True, exist_ok=True)
    (home / "certs").write_text(inst.ca.read_text())
    rc = write_private(
        home / "muttrc",
        f'set imap_user="{run.username}"\n'
        f'set imap_pass="{run.password}"\n'
        f'set folder="imap://127.0.0.1:{inst.port_for(run.username, "imap")}/" spoolfile="+INBOX"\n'
        'set record="" header_cache="" message_cachedir=""\n'
        f'set certificate_file="{home}/certs" ssl_verify_host=no\n'
        "set imap_passive=yes timeout=1 connect_timeout=5 quit=yes\n" + settings,
    )
    env = {**os.environ, "TERM": "vt100", "HOME": str(home)}
    code, screen = run_in_pty([mutt, "-n", "-F", str(rc), "-e", "push '<quit>'"], env, 25)
    assert code == 0, screen[-2000:]
    return screen


def fetchmail_poll(
    inst: ServeInstance, run: Run, home: Path, protocol: str = "imap", hold: float = 3
) -> str:
    """One verbose poll with ``no sslcertck`` (opportunistic STARTTLS) into ``/bin/true``."""
    fetchmail = require_tool("fetchmail")
    home.mkdir()
    rc = write_private(
        home / "fetchmailrc",
        "set no bouncemail\n"
        f"poll 127.0.0.1 service {inst.port_for(run.username, protocol)}"
        f" protocol {protocol.upper()} auth password"
        f" timeout {hold + 10}\n"
        f'  user "{run.username}" there with password "{run.password}" is "nobody" here\n'
        '  no sslcertck keep fetchall mda "/bin/true"\n',
    )
    env = {**os.environ, "HOME": str(home), "FETCHMAILHOME": str(home)}
    argv = [fetchmail, "-v", "--nodetach", "--nosyslog", "-f", str(rc)]
    argv += ["--idfile", str(home / "ids"), "--pidfile", str(home / "pid")]
    return run_tool(argv, timeout=45, env=env)


def getmail_poll(inst: ServeInstance, run: Run, home: Path, retriever: str, protocol: str) -> str:
    """getmail6's plain ``Simple*Retriever`` (never tries STARTTLS) into a Maildir."""
    getmail = require_tool("getmail")
    for sub in ("cur", "new", "tmp"):
        (home / "Maildir" / sub).mkdir(parents=True)
    rc = write_private(
        home / "getmailrc",
        f"[retriever]\ntype = {retriever}\nserver = 127.0.0.1\n"
        f"port = {inst.port_for(run.username, protocol)}\n"
        f"username = {run.username}\npassword = {run.password}\n"
        f"timeout = 10\n\n[destination]\ntype = Maildir\npath = {home}/Maildir/\n\n"
        "[options]\nverbose = 2\nread_all = false\ndelete = false\n",
    )
    env = {**os.environ, "HOME": str(home)}
    return run_tool([getmail, "--getmaildir", str(home), "--rcfile", str(rc)], timeout=30, env=env)


def curl_login(inst: ServeInstance, run: Run, protocol: str, *flags: str) -> str:
    """curl logs in (SMTP: sends an empty message) with the run's account."""
    curl = require_tool("curl")
    argv = [curl, "-sS", "--max-time", "15", *flags, "--cacert", str(inst.ca)]
    argv += [
        "--user",
        f"{run.username}:{run.password}",
        "--url",
        CURL_URLS[protocol].format(**inst.ports_for(run.username)),
    ]
    if protocol == "smtp":
        argv += ["--mail-from", "a@example.net", "--mail-rcpt", "b@mailtls.test", "-T", "/dev/null"]
    return run_tool(argv, timeout=30)


def swaks_send(inst: ServeInstance, run: Run, *flags: str) -> str:
    """swaks on the submission port with the run's account; ``flags``: -tls/-tlso, -a MECH..."""
    swaks = require_tool("swaks")
    argv = [
        swaks,
        "--server",
        "127.0.0.1",
        "--port",
        str(inst.port_for(run.username, "smtp_submission")),
    ]
    argv += [*flags, "--timeout", "10", "-au", run.username, "-ap", run.password]
    argv += ["--from", "a@example.net", "--to", "b@mailtls.test"]
    return run_tool(argv, timeout=30)
