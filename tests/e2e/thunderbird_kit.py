"""Thunderbird as a test client: an Xvfb screen, a throw-away profile, and Marionette.

- ``Screen``: an Xvfb server on a display number it picks itself (``-displayfd``), so a
  screenshot of what Thunderbird showed can be kept (``import -window root`` from ImageMagick).
- ``make_profile``: a profile folder with a ``user.js`` that turns off everything a first start
  does besides mail (start page, account hub, telemetry, updates, autoconfig and ISPDB look-ups,
  default-client check) and an NSS database that trusts the server's test CA (``certutil``).
- ``Marionette``: the remote protocol Thunderbird speaks with ``--marionette``: messages are
  ``LENGTH:JSON``; a command is ``[0, id, name, params]``, its answer ``[1, id, error, result]``.
- ``Thunderbird``: one running Thunderbird (its own process group, killed at the end) driven in
  chrome context with Thunderbird's own code paths: accounts are made by ``CreateInBackend`` (what
  the account hub runs on "Done", the password remembered in the profile's login store), mail is
  fetched by ``GetMessagesForInboxOnServer`` (the "Get Messages" button) and a message is sent by
  ``nsIMsgSend`` (the compose window's "Send").

Thunderbird 153 runs chrome-context scripts only when started with
``--remote-allow-system-access`` as well as ``--marionette``. A dialog it opens (an error alert)
has its text noted before the next command and is then accepted by Marionette, as a user would
press OK (``unhandledPromptBehavior: accept``).

What Thunderbird did is read from the mail server's events, not from this side: the scripts only
start the actions and report Thunderbird's own outcome (send status, dialog texts) for the
assertions and their messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

START_TIMEOUT = 45.0  # Thunderbird takes 3-20 s to start, more on a busy machine
COMMAND_TIMEOUT = 30.0

# prefs of a profile nobody has used: no first-run UI, no network but the mail servers
PREFS: dict[str, bool | int | str] = {
    "mail.provider.suppress_dialog_on_startup": True,  # no account hub on an empty profile
    "mail.provider.enabled": False,
    "mail.shell.checkDefaultClient": False,
    "mailnews.start_page.enabled": False,
    "mailnews.start_page.url": "about:blank",
    "mail.rights.override": True,
    "mail.rights.version": 1,
    "mail.winsearch.firstRunDone": True,
    "mail.spotlight.firstRunDone": True,
    "mail.tabs.loadInBackground": True,
    "mail.inappnotifications.enabled": False,
    "app.donation.eoy.version.viewed": 999,
    "browser.aboutConfig.showWarning": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.server": "",
    "app.update.disabledForTesting": True,
    "app.update.auto": False,
    "app.update.enabled": False,
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "services.settings.server": "http://127.0.0.1:9/",  # remote settings: a closed port
    "network.connectivity-service.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "mailnews.auto_config_url": "",
    "mailnews.auto_config.fetchFromISP.enabled": False,
    "mailnews.auto_config.fetchFromExchange.enabled": False,
    "mailnews.auto_config.guess.enabled": False,
    "mailnews.mx_service_url": "",
    "mail.cloud_files.enabled": False,
    "mail.biff.show_alert": False,
    "mail.biff.play_sound": False,
    "mail.server.default.check_new_mail": False,  # no timer of its own: the test says when
    "mail.server.default.autosync_offline_stores": False,
    "mail.startup.enabledMailCheckOnce": True,
    "mail.purge.ask": False,
    "calendar.timezone.useSystemTimezone": True,
    "security.OCSP.enabled": 0,
    "security.remote_settings.crlite_filters.enabled": False,
    "security.remote_settings.intermediates.enabled": False,
}


# --- the screen -------------------------------------------------------------------------------

XVFB_ARGS = ("-screen", "0", "1280x1024x24", "-nolisten", "tcp")


class Screen:
    """An Xvfb server; ``display`` is ``:N``."""

    def __init__(self, xvfb: str, log: Path) -> None:
        read, write = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [xvfb, "-displayfd", str(write), *XVFB_ARGS],
                pass_fds=(write,),
                stdout=log.open("ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            os.close(write)
        with os.fdopen(read, "rb") as pipe:  # Xvfb writes the number once it accepts clients
            ready, _, _ = select.select([pipe], [], [], START_TIMEOUT)
            number = pipe.readline(16).strip() if ready else b""
        if not number.isdigit():
            self.close()
            raise RuntimeError(f"Xvfb did not start: {log.read_text(errors='replace')[-2000:]}")
        self.display = f":{number.decode()}"

    def screenshot(self, importer: str, path: Path) -> str:
        """The whole screen as a PNG at ``path``; returns what to say about it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [importer, "-display", self.display, "-window", "root", str(path)],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            return f"no screenshot ({result.stderr.decode(errors='replace').strip()})"
        return f"screenshot: {path}"

    def close(self) -> None:
        _kill_group(self.proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


# --- the profile ------------------------------------------------------------------------------


def make_profile(directory: Path, ca: Path, marionette_port: int, certutil: str) -> Path:
    """A fresh profile that trusts ``ca`` for TLS servers and listens for Marionette."""
    directory.mkdir(parents=True)
    prefs = {**PREFS, "marionette.port": marionette_port}
    (directory / "user.js").write_text(
        "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items())
    )
    db = f"sql:{directory}"
    for argv in (
        [certutil, "-N", "-d", db, "--empty-password"],
        [certutil, "-A", "-d", db, "-n", "mailtls test CA", "-t", "C,,", "-a", "-i", str(ca)],
    ):
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
    return directory


# --- Marionette -------------------------------------------------------------------------------


class MarionetteError(Exception):
    """An error answer to a Marionette command (a script that threw, a timeout, ...)."""


class Marionette:
    """A Marionette connection: ``command(name, params)`` returns the result or raises."""

    def __init__(self, port: int, timeout: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.ids = iter(range(1, 1 << 31))
        hello = self._read()
        if not isinstance(hello, dict) or hello.get("marionetteProtocol") != 3:
            raise MarionetteError(f"unexpected greeting {hello!r}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _read(self) -> Any:
        while b":" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b":")
        if not head.isdigit() or int(head) > 1 << 24:  # 16 MiB: a screenshot fits, garbage not
            raise MarionetteError(f"bad frame length {head[:20]!r}")
        size = int(head)
        while len(self.buf) < size:
            self._fill()
        body, self.buf = self.buf[:size], self.buf[size:]
        return json.loads(body)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise MarionetteError("Marionette closed the connection")
        self.buf += chunk

    def command(self, name: str, params: dict[str, Any] | None = None) -> Any:
        msg_id = next(self.ids)
        body = json.dumps([0, msg_id, name, params or {}]).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body)
        while True:
            reply = self._read()
            if isinstance(reply, list) and len(reply) == 4 and reply[:2] == [1, msg_id]:
                break
        if reply[2]:
            error = reply[2]
            raise MarionetteError(f"{name}: {error.get('error')}: {error.get('message')}")
        return reply[3]

    def execute_async(self, script: str, args: list[Any]) -> Any:
        """Run ``script`` (its last argument is the callback to call with the result)."""
        result = self.command("WebDriver:ExecuteAsyncScript", {"script": script, "args": args})
        return result.get("value") if isinstance(result, dict) else result


# --- Thunderbird ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MailAccount:
    """One account as a user types it in the manual setup: ``socket`` is Thunderbird's name of
    the security setting ("STARTTLS", "None", "SSL/TLS")."""

    email: str
    username: str
    password: str
    incoming: str  # "imap" | "pop3"
    incoming_port: int
    smtp_port: int
    socket: str
    host: str = "127.0.0.1"


SOCKET_TYPES = {"None": "plain", "STARTTLS": "alwaysSTARTTLS", "SSL/TLS": "SSL"}  # nsMsgSocketType

_ADD_ACCOUNT = """
const [a, done] = arguments;
const { AccountConfig } = ChromeUtils.importESModule(
  "resource:///modules/accountcreation/AccountConfig.sys.mjs");
const { CreateInBackend } = ChromeUtils.importESModule(
  "resource:///modules/accountcreation/CreateInBackend.sys.mjs");
const config = new AccountConfig();
config.identity.realname = "mailtls test";
config.identity.emailAddress = a.email;
config.rememberPassword = true;
Object.assign(config.incoming, {
  type: a.incoming, hostname: a.host, port: a.incoming_port, username: a.username,
  password: a.password, socketType: Ci.nsMsgSocketType[a.socket],
  auth: Ci.nsMsgAuthMethod.passwordCleartext, loginAtStartup: false, checkInterval: 0,
});
Object.assign(config.outgoing, {
  type: "smtp", hostname: a.host, port: a.smtp_port, username: a.username,
  password: a.password, socketType: Ci.nsMsgSocketType[a.socket],
  auth: Ci.nsMsgAuthMethod.passwordCleartext,
});
CreateInBackend.createAccountInBackend(config).then(account => {
  account.defaultIdentity.doFcc = false;  // no copy to Sent: only the SMTP dialogue counts
  done({ key: account.key, incoming: account.incomingServer.key });
}, e => done({ error: String(e) }));
"""

_GET_MESSAGES = """
const [key, done] = arguments;
const server = MailServices.accounts.getAccount(key).incomingServer;
const win = Services.wm.getMostRecentWindow("mail:3pane");
win.GetMessagesForInboxOnServer(server);
done("started");
"""

_SEND = """
const [key, to, subject, done] = arguments;
const account = MailServices.accounts.getAccount(key);
const identity = account.defaultIdentity;
const fields = Cc["@mozilla.org/messengercompose/composefields;1"]
  .createInstance(Ci.nsIMsgCompFields);
fields.from = identity.email;
fields.to = to;
fields.subject = subject;
const send = Cc["@mozilla.org/messengercompose/send;1"].createInstance(Ci.nsIMsgSend);
const win = Services.wm.getMostRecentWindow("mail:3pane");
window.__mailtlsSend = { state: "started" };
const listener = {
  QueryInterface: ChromeUtils.generateQI(["nsIMsgSendListener"]),
  onStartSending() {}, onProgress() {}, onStatus() {}, onGetDraftFolderURI() {},
  onStopSending(id, status, msg) {
    window.__mailtlsSend = { state: "stopped", status, message: String(msg || "") };
  },
  onSendNotPerformed(id, status) {
    window.__mailtlsSend = { state: "not_performed", status };
  },
  onTransportSecurityError(id, status, secInfo, location) {
    window.__mailtlsSend = { state: "security_error", status, location: String(location) };
  },
};
send.createAndSendMessage(null, identity, key, fields, false, false,
  Ci.nsIMsgSend.nsMsgDeliverNow, null, "text/plain", "A test message from Thunderbird.\\r\\n",
  win, null, listener, null, null, Ci.nsIMsgCompType.New);
done("started");
"""

_SEND_STATE = """
const [done] = arguments;
done(window.__mailtlsSend || null);
"""

_VERSION = """
const [done] = arguments;
done(Services.appinfo.name + " " + Services.appinfo.version);
"""


class Thunderbird:
    """A running Thunderbird on ``screen`` with ``profile``, in chrome context; ``close()``
    quits it and kills its process group."""

    def __init__(
        self, binary: str, profile: Path, port: int, screen: Screen, home: Path, log: Path
    ) -> None:
        home.mkdir(parents=True, exist_ok=True)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MOZ_", "XAUTHORITY"))},
            "DISPLAY": screen.display,
            "HOME": str(home),
            "XDG_RUNTIME_DIR": str(home),
            "MOZ_CRASHREPORTER_DISABLE": "1",
            "MOZ_DISABLE_AUTO_SAFE_MODE": "1",
            "NO_AT_BRIDGE": "1",
        }
        self.log = log
        self.dialogs: list[str] = []  # texts of the dialogs Thunderbird showed, in order
        self._open_noted = False
        self.proc = subprocess.Popen(
            [
                binary,
                "--marionette",
                "--remote-allow-system-access",
                "--no-remote",
                "--profile",
                str(profile),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            self.marionette = self._connect(port)
            # a dialog Thunderbird opens (an error alert) is noted by ``_script`` and then
            # accepted by Marionette before the next command, as a user would press OK
            self.marionette.command("WebDriver:NewSession", {"unhandledPromptBehavior": "accept"})
            self.marionette.command("Marionette:SetContext", {"value": "chrome"})
            self.marionette.command("WebDriver:SetTimeouts", {"script": 20000})
        except BaseException:
            self.close()
            raise

    def _connect(self, port: int) -> Marionette:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"thunderbird exited {self.proc.returncode}:\n{self.tail()}")
            try:
                return Marionette(port, COMMAND_TIMEOUT)
            except (OSError, MarionetteError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"no Marionette after {START_TIMEOUT} s:\n{self.tail()}"
                    ) from None
                time.sleep(0.25)

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def close(self) -> None:
        if hasattr(self, "marionette"):
            with contextlib.suppress(OSError, MarionetteError):
                self.marionette.command("Marionette:Quit", {"flags": ["eForceQuit"]})
            self.marionette.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        _kill_group(self.proc)

    # --- what a user does ---------------------------------------------------------------------

    def _script(self, script: str, *args: Any) -> Any:
        self._note_dialog()
        self._open_noted = False  # Marionette accepts the open dialog before this command
        return self.marionette.execute_async(script, list(args))

    def _note_dialog(self) -> None:
        if self._open_noted:
            return
        try:
            result = self.marionette.command("WebDriver:GetAlertText")
        except (MarionetteError, OSError):  # "no such alert", or Thunderbird is gone
            return
        self.dialogs.append(str(result.get("value") if isinstance(result, dict) else result))
        self._open_noted = True

    def dialogs_now(self) -> list[str]:
        """The texts of the dialogs shown so far, the one open now included (it stays open)."""
        self._note_dialog()
        return list(self.dialogs)

    def version(self) -> str:
        return str(self._script(_VERSION))

    def add_account(self, account: MailAccount) -> str:
        """Create the account (incoming + SMTP, password remembered); returns its key."""
        result = self._script(
            _ADD_ACCOUNT, {**account.__dict__, "socket": SOCKET_TYPES[account.socket]}
        )
        if not isinstance(result, dict) or "key" not in result:
            raise MarionetteError(f"account not created: {result!r}")
        return str(result["key"])

    def get_messages(self, key: str) -> None:
        """Press "Get Messages" for the account."""
        self._script(_GET_MESSAGES, key)

    def send_message(self, key: str, to: str, subject: str) -> None:
        """Compose and send a short message now (as "Send" in the compose window)."""
        self._script(_SEND, key, to, subject)

    def send_state(self) -> Any:
        """What Thunderbird's send listener heard so far (None before it started)."""
        return self._script(_SEND_STATE)
