"""Real Postfix and Dovecot for the probe tests, on loopback addresses other than 127.0.0.1.

``make_pki`` writes a test CA and a server certificate (cryptography); ``dovecot(...)`` and
``postfix(...)`` are context managers that write a private configuration, start the daemon in
the foreground (``dovecot -F -c``, Postfix ``master -c DIR -d``), wait until every listener
accepts, and always stop it (SIGTERM, then SIGKILL) even when the test fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DOVECOT_ADDR = "127.0.0.2"
POSTFIX_ADDR = "127.0.0.3"
POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


def make_pki(folder: Path, ips: tuple[str, ...], days: int = 30) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailtls probe test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days + 1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "probe test server")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(pki.key, 0o600)
    for path in (folder, pki.ca, pki.cert):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return pki


@contextlib.contextmanager
def server_root() -> Iterator[Path]:
    """A folder the daemons' unprivileged users can traverse (pytest's tmp is 0700), removed
    afterwards."""
    root = Path(tempfile.mkdtemp(prefix="mailtls-probe-"))
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def wait_listening(
    address: str, ports: list[int], proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + 20
    pending = list(ports)
    while pending:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"server did not listen on {pending}:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection((address, pending[0]), 1):
            pending.pop(0)
            continue
        time.sleep(0.05)


def _tail(log: Path) -> str:
    parts = [
        p.read_text(errors="replace")[-3000:]
        for p in (log, log.with_name("maillog"), log.with_name("stderr.log"))
        if p.exists()
    ]
    return "\n".join(parts) or "(no log)"


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# --- Dovecot ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DovecotPorts:
    imap: int
    pop3: int
    imaps: int
    pop3s: int
    auth_socket: Path


def dovecot_config(folder: Path, pki: Pki, ports: DovecotPorts, secure: bool) -> Path:
    """Insecure: ssl = yes, cleartext logins allowed, no implicit-TLS listeners.
    Secure: ssl = required, disable_plaintext_auth = yes, implicit TLS on imaps/pop3s."""
    (folder / "passwd").write_text("someone:{PLAIN}not-a-real-password\n")
    implicit = secure
    text = f"""\
base_dir = {folder}/run
state_dir = {folder}/state
log_path = {folder}/dovecot.log
protocols = imap pop3
listen = {DOVECOT_ADDR}
ssl = {"required" if secure else "yes"}
ssl_cert = <{pki.cert}
ssl_key = <{pki.key}
disable_plaintext_auth = {"yes" if secure else "no"}
auth_mechanisms = plain login
auth_failure_delay = {"0" if secure else "1s"}
default_internal_user = dovecot
default_login_user = dovenull
login_trusted_networks =
passdb {{
  driver = passwd-file
  args = {folder}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={folder}/home
}}
service imap-login {{
  inet_listener imap {{
    port = {ports.imap}
  }}
  inet_listener imaps {{
    port = {ports.imaps if implicit else 0}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {ports.pop3}
  }}
  inet_listener pop3s {{
    port = {ports.pop3s if implicit else 0}
    ssl = yes
  }}
}}
service auth {{
  unix_listener {ports.auth_socket} {{
    mode = 0666
  }}
}}
"""
    conf = folder / "dovecot.conf"
    conf.write_text(text)
    return conf


@contextlib.contextmanager
def dovecot(folder: Path, pki: Pki, secure: bool) -> Iterator[tuple[DovecotPorts, Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o755)
    ports = DovecotPorts(
        free_port(DOVECOT_ADDR),
        free_port(DOVECOT_ADDR),
        free_port(DOVECOT_ADDR),
        free_port(DOVECOT_ADDR),
        folder / "auth-postfix",
    )
    conf = dovecot_config(folder, pki, ports, secure)
    log = folder / "dovecot.log"
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    proc = subprocess.Popen(
        [binary, "-F", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "stderr.log").open("wb"),
    )
    try:
        listening = [ports.imap, ports.pop3] + ([ports.imaps, ports.pop3s] if secure else [])
        wait_listening(DOVECOT_ADDR, listening, proc, log)
        yield ports, conf
    finally:
        stop(proc)


# --- Postfix ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostfixPorts:
    submission: int
    smtps: int


def postfix_config(
    folder: Path, pki: Pki, ports: PostfixPorts, auth_socket: Path, secure: bool
) -> Path:
    """Insecure: submission with TLS optional and AUTH before STARTTLS; no port 465 service.
    Secure: submission with smtpd_tls_security_level = encrypt, implicit TLS (smtps), and
    TLS 1.2 or newer."""
    etc = folder / "etc"
    queue = folder / "queue"
    data = folder / "data"
    for d in (etc, queue, data):
        d.mkdir(parents=True, exist_ok=True)
    shutil.chown(data, "postfix")
    main = f"""\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.probe-test.invalid
mydomain = probe-test.invalid
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
maillog_file = {folder}/maillog
maillog_file_prefixes = {folder}
alias_maps =
alias_database =
smtpd_banner = $myhostname ESMTP
smtpd_tls_chain_files = {pki.key}, {pki.cert}
smtpd_tls_security_level = may
smtpd_tls_auth_only = {"yes" if secure else "no"}
smtpd_tls_protocols = {">=TLSv1.2" if secure else "!SSLv2, !SSLv3"}
smtpd_tls_mandatory_protocols = {">=TLSv1.2" if secure else "!SSLv2, !SSLv3"}
smtpd_sasl_type = dovecot
smtpd_sasl_path = {auth_socket}
smtpd_sasl_auth_enable = yes
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_client_connection_count_limit = 0
smtpd_client_event_limit_exceptions = 0.0.0.0/0
"""
    (etc / "main.cf").write_text(main)
    level = "encrypt" if secure else "may"
    services = [
        f"{POSTFIX_ADDR}:{ports.submission} inet n - n - - smtpd"
        f" -o syslog_name=postfix/submission -o smtpd_tls_security_level={level}",
    ]
    if secure:
        services.append(
            f"{POSTFIX_ADDR}:{ports.smtps} inet n - n - - smtpd"
            " -o syslog_name=postfix/smtps -o smtpd_tls_wrappermode=yes"
        )
    services += [
        "cleanup unix n - n - 0 cleanup",
        "rewrite unix - - n - - trivial-rewrite",
        "anvil unix - - n - 1 anvil",
        "tlsmgr unix - - n 1000? 1 tlsmgr",
        "proxymap unix - - n - - proxymap",
        "postlog unix-dgram n - n - 1 postlogd",
    ]
    (etc / "master.cf").write_text("\n".join(services) + "\n")
    return etc


@contextlib.contextmanager
def postfix(
    folder: Path, pki: Pki, auth_socket: Path, secure: bool
) -> Iterator[tuple[PostfixPorts, Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o755)
    ports = PostfixPorts(free_port(POSTFIX_ADDR), free_port(POSTFIX_ADDR))
    etc = postfix_config(folder, pki, ports, auth_socket, secure)
    queue = folder / "queue"
    for sub, owner in (("pid", "root"), ("public", "postfix"), ("private", "postfix")):
        (queue / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(queue / sub, owner)
    log = folder / "master.log"
    proc = subprocess.Popen(
        [POSTFIX_MASTER, "-c", str(etc), "-d"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "MAIL_CONFIG": str(etc)},
    )
    try:
        listening = [ports.submission] + ([ports.smtps] if secure else [])
        wait_listening(POSTFIX_ADDR, listening, proc, log)
        yield ports, etc
    finally:
        stop(proc)
