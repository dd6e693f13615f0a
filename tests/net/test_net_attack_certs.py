"""The certificates of the ``cert_*`` cases (``net/attack_certs.py``) and the shell presenting
them: a real TLS handshake on 127.0.0.1 with a client that trusts the test CA fails with the
defect the case is about, and only that one."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import ssl
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from net_testkit import Journal, client_context, make_settings, start_server

from mailtls.net.attack_certs import KINDS, ensure_attack_certificates
from mailtls.net.pki import ensure_certificates
from mailtls.runs.types import Binding


def _certs(tmp_path: Path, keep: bool = True):  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, tls={"keep_ca_key": keep})
    certs = ensure_certificates(settings)
    return certs, ensure_attack_certificates(certs, tmp_path / "tls" / "ca.key")


def _load(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_each_certificate_has_exactly_its_defect(tmp_path: Path) -> None:
    certs, attack = _certs(tmp_path)
    assert certs.ca is not None
    ca = _load(certs.ca)[0]
    now = dt.datetime.now(dt.UTC)
    chains = {kind: _load(attack.files[kind][0]) for kind in KINDS}
    selfsigned, expired, wronghost = (
        chains["selfsigned"][0],
        chains["expired"][0],
        chains["wronghost"][0],
    )
    assert selfsigned.issuer == selfsigned.subject
    assert expired.issuer == ca.subject and expired.not_valid_after_utc < now
    assert wronghost.issuer == ca.subject and wronghost.not_valid_after_utc > now
    names = wronghost.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [n.startswith("wrong-host.") for n in names.get_values_for_type(x509.DNSName)] == [True]
    leaf, unknown = chains["unknown_ca"]
    assert leaf.issuer == unknown.subject != ca.subject
    for kind in KINDS:
        assert (attack.files[kind][1].stat().st_mode & 0o777) == 0o600
    again = ensure_attack_certificates(certs, tmp_path / "tls" / "ca.key")
    assert _load(again.files["expired"][0])[0].serial_number == expired.serial_number  # reused


def test_a_replaced_chain_gets_attack_certificates_from_the_new_ca(tmp_path: Path) -> None:
    """A data folder whose chain named 127.0.0.1 as a DNS name (before issue 9) gets a new CA at
    start: the attack certificates are issued again, by that new CA (whose key is then
    deleted), not kept from the replaced one."""
    import ipaddress

    from mailtls.net import pki
    from mailtls.serve import _certificates

    settings = make_settings(tmp_path)
    old = ensure_certificates(settings)
    names = pki.CertificateNames(
        ("localhost", "127.0.0.1"), (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
    )
    pki._create_all(tmp_path / "tls", old, names, True, dt.datetime.now(dt.UTC))
    ensure_attack_certificates(old, tmp_path / "tls" / "ca.key")  # issued by the old CA
    certs, attack = _certificates(settings)
    assert certs.ca is not None
    ca = _load(certs.ca)[0]
    for kind in ("expired", "wronghost"):
        leaf = _load(attack.files[kind][0])[0]
        assert leaf.issuer == ca.subject
        leaf.verify_directly_issued_by(ca)
    assert not (tmp_path / "tls" / "ca.key").exists()


def test_without_the_ca_key_they_come_from_an_untrusted_ca(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mailtls.attack_certs"):
        certs, attack = _certs(tmp_path, keep=False)
    assert "not available" in caplog.text
    assert certs.ca is not None
    assert _load(attack.files["expired"][0])[0].issuer != _load(certs.ca)[0].subject


def _handshake(port: int, ctx: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
                return "ok"
        except ssl.SSLCertVerificationError as exc:
            return str(exc.verify_message)


EXPECTED = {
    "cert_selfsigned": "self-signed certificate",
    "cert_expired": "certificate has expired",
    "cert_wronghost": "IP address mismatch, certificate is not valid for '127.0.0.1'.",
    "cert_unknown_ca": "self-signed certificate in certificate chain",  # the unknown root
    "baseline": "ok",
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("testcase", sorted(EXPECTED))
async def test_the_shell_presents_the_case_s_certificate(tmp_path: Path, testcase: str) -> None:
    settings = make_settings(tmp_path, tls={"keep_ca_key": True})
    certs = ensure_certificates(settings)  # with the CA key, as serve's first start
    ensure_attack_certificates(certs, tmp_path / "tls" / "ca.key")

    def binder(ip: str, local: tuple[str, int]) -> Binding:
        return Binding("run1", 1, testcase, "immediate", "address", True)

    journal = Journal()
    server = await start_server(replace(settings), journal, binder=binder)
    try:
        port = server.port("mini_tls")
        outcome = await asyncio.to_thread(_handshake, port, client_context(certs))
        assert outcome == EXPECTED[testcase]
    finally:
        await server.close()
