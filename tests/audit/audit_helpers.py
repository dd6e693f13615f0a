"""Helpers shared by the audit tests: build configs from text, run checks, make test certs."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailtls.audit import checks_dovecot, checks_postfix
from mailtls.audit.dovecot import DovecotConfig, Reader, parse_dovecot
from mailtls.audit.dovecot_effective import Context, contexts, detect_version
from mailtls.audit.effective import PostfixInstance, SmtpService, smtp_services
from mailtls.audit.model import SourceText
from mailtls.audit.postfix_defaults import builtin_defaults
from mailtls.audit.postfix_main import parse_main
from mailtls.audit.postfix_master import parse_master
from mailtls.audit.sources import expand_glob, read_text
from mailtls.findings import Finding

FIXTURES = Path(__file__).parent / "fixtures"
STOCK_MASTER = "smtp inet n - y - - smtpd\n"


def postfix(main: str, master: str = STOCK_MASTER, name: str = "") -> PostfixInstance:
    return PostfixInstance(
        name,
        parse_main(SourceText("main.cf", main)),
        parse_master(SourceText("master.cf", master)),
        builtin_defaults(),
    )


def postfix_dir(path: Path) -> PostfixInstance:
    return PostfixInstance(
        "",
        parse_main(read_text(path / "main.cf")),
        parse_master(read_text(path / "master.cf")),
        builtin_defaults(),
    )


def service(inst: PostfixInstance, label: str) -> SmtpService:
    found = [s for s in smtp_services(inst) if s.label == label]
    assert found, f"no service {label}: {[s.label for s in smtp_services(inst)]}"
    return found[0]


def postfix_findings(inst: PostfixInstance) -> list[Finding]:
    return checks_postfix.run_checks(smtp_services(inst))


def by_id(findings: list[Finding], check_id: str) -> list[Finding]:
    return [f for f in findings if f.id == check_id]


def dovecot_text(text: str, label: str = "dovecot.conf") -> DovecotConfig:
    return parse_dovecot(SourceText(label, text))


def dovecot_file(path: Path) -> DovecotConfig:
    return parse_dovecot(read_text(path), Reader(read=read_text, glob=expand_glob))


def dovecot_contexts(config: DovecotConfig, version: str | None = None) -> list[Context]:
    return contexts(config, detect_version(config, version))


def dovecot_findings(config: DovecotConfig, version: str | None = None) -> list[Finding]:
    return checks_dovecot.audit_config(config, detect_version(config, version))[0]


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed P-256 certificate and key (for configs doveconf validates)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "audit.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def materialise(fixture: Path, target: Path) -> Path:
    """Copy a Dovecot fixture dir to ``target`` with @CERT@/@KEY@ pointing at a fresh cert."""
    shutil.copytree(fixture, target)
    cert, key = make_cert(target)
    for conf in target.rglob("*.conf"):
        text = conf.read_text().replace("@CERT@", str(cert)).replace("@KEY@", str(key))
        conf.write_text(text)
    return target / "dovecot.conf"
