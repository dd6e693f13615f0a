"""The generated test PKI: names, constraints, key handling, reuse and renewal."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import stat
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from net_testkit import make_settings

from conftest import require_tool
from mailtls.net import pki
from mailtls.net.pki import PkiError, ensure_certificates, server_ssl_context


def _load(path: Path | None) -> x509.Certificate:
    assert path is not None
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_first_start_creates_ca_and_server_certificate(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, hostname="mail.example.test")
    settings = replace(settings, public_hostnames=("imap.example.test",))
    certs = ensure_certificates(settings)
    assert certs.ca == tmp_path / "tls" / "ca.pem"
    assert not (tmp_path / "tls" / "ca.key").exists()  # CA key discarded after issuing
    assert stat.S_IMODE(certs.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    assert not [p for p in (tmp_path / "tls").iterdir() if p.name.startswith(".")]

    ca = _load(certs.ca)
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert set(constraints.value.permitted_subtrees or []) == {
        x509.DNSName("localhost"),
        x509.DNSName("mail.example.test"),
        x509.DNSName("imap.example.test"),
        x509.IPAddress(ipaddress.ip_network("127.0.0.0/8")),
        x509.IPAddress(ipaddress.ip_network("::1/128")),
    }
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    server = _load(certs.cert)
    public = server.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "localhost",
        "mail.example.test",
        "imap.example.test",
    ]
    ips = set(san.get_values_for_type(x509.IPAddress))
    assert ips == {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}


def _dns_names(cert: x509.Certificate) -> list[str]:
    """Every DNS name in ``cert``'s SAN and name constraints."""
    out: list[str] = []
    for ext in cert.extensions:
        if isinstance(ext.value, x509.SubjectAlternativeName):
            out += ext.value.get_values_for_type(x509.DNSName)
        elif isinstance(ext.value, x509.NameConstraints):
            trees = [*(ext.value.permitted_subtrees or ()), *(ext.value.excluded_subtrees or ())]
            out += [n.value for n in trees if isinstance(n, x509.DNSName)]
    return out


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def test_addresses_are_ip_entries_never_dns_names(tmp_path: Path) -> None:
    """Configured addresses (a listen address, an address as host name) become IP entries in the
    SAN and /32 or /128 IP constraints; a wildcard listen address is left out. mozilla::pkix
    rejects a chain with an address as a DNS name (issue 9)."""
    settings = make_settings(
        tmp_path,
        hostname="192.0.2.10",
        public_hostnames=("mail.example.test", "[2001:db8::25]"),
        listen=("127.0.0.1", "198.51.100.7", "0.0.0.0", "::"),
    )
    certs = ensure_certificates(settings)
    ca, server = _load(certs.ca), _load(certs.cert)
    assert [name for name in _dns_names(ca) + _dns_names(server) if _is_address(name)] == []
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "mail.example.test"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a)
        for a in ("127.0.0.1", "::1", "192.0.2.10", "2001:db8::25", "198.51.100.7")
    }
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    nets = {n.value for n in constraints.permitted_subtrees or [] if isinstance(n, x509.IPAddress)}
    assert nets == {
        ipaddress.ip_network(n)
        for n in ("127.0.0.0/8", "::1/128", "192.0.2.10/32", "2001:db8::25/128", "198.51.100.7/32")
    }
    assert server.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == (
        "mail.example.test"
    )


def _serve_once(ctx: ssl.SSLContext, listener: socket.socket) -> None:
    conn, _ = listener.accept()
    try:
        conn.settimeout(10)
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"ok")
            tls.recv(1024)  # until the client has closed: an earlier close would reset it
    except (ssl.SSLError, OSError):  # a client that refused the certificate, or closed
        pass


@pytest.mark.parametrize(
    ("hostname", "ok"),
    [("localhost", True), ("127.0.0.1", True), ("other.example", False)],
)
def test_certificate_verifies_for_localhost_and_loopback_ip(
    tmp_path: Path, hostname: str, ok: bool
) -> None:
    """A real handshake, verified by a default client context trusting only ca.pem (this also
    exercises OpenSSL's nameConstraints check on the chain)."""
    certs = ensure_certificates(make_settings(tmp_path))
    server_ctx = server_ssl_context(certs.cert, certs.key)
    client_ctx = ssl.create_default_context(cafile=str(certs.ca))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        thread = threading.Thread(target=_serve_once, args=(server_ctx, listener))
        thread.start()
        raw = socket.create_connection(listener.getsockname(), timeout=5)
        try:
            if ok:
                with client_ctx.wrap_socket(raw, server_hostname=hostname) as tls:
                    assert tls.recv(2) == b"ok"
                    assert tls.version() in ("TLSv1.2", "TLSv1.3")
            else:
                with pytest.raises(ssl.SSLCertVerificationError):
                    client_ctx.wrap_socket(raw, server_hostname=hostname)
        finally:
            raw.close()
            thread.join(5)


# --- the same chain through other verifiers: OpenSSL's CLI, GnuTLS, NSS -------------------
# (each also gets a wrong host name and a foreign CA, so a verifier that checks nothing fails;
# mozilla::pkix itself, the strictest, is Thunderbird: tests/e2e/test_e2e_thunderbird.py)

VERIFIER_CASES = [
    ("localhost", "own", True),
    ("127.0.0.1", "own", True),
    ("other.example", "own", False),
    ("localhost", "foreign", False),
]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[pki.ServerCertificates, Path]:
    """A generated chain and the ca.pem of another generated chain (the foreign CA)."""
    certs = ensure_certificates(make_settings(tmp_path_factory.mktemp("chain")))
    foreign = ensure_certificates(make_settings(tmp_path_factory.mktemp("foreign"))).ca
    assert foreign is not None
    return certs, foreign


def _ca(chain: tuple[pki.ServerCertificates, Path], which: str) -> str:
    certs, foreign = chain
    return str(certs.ca if which == "own" else foreign)


def _run(argv: list[str], stdin: bytes = b"") -> tuple[int, str]:
    result = subprocess.run(argv, input=stdin, capture_output=True, timeout=30, check=False)
    return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


@pytest.mark.parametrize(("hostname", "which", "ok"), VERIFIER_CASES)
def test_openssl_verify_accepts_the_chain(
    chain: tuple[pki.ServerCertificates, Path], hostname: str, which: str, ok: bool
) -> None:
    openssl = require_tool("openssl")
    flag = "-verify_ip" if _is_address(hostname) else "-verify_hostname"
    argv = [openssl, "verify", "-x509_strict", "-CAfile", _ca(chain, which), flag, hostname]
    rc, out = _run([*argv, str(chain[0].cert)])
    assert (rc == 0) == ok, out


@pytest.mark.parametrize(("hostname", "which", "ok"), VERIFIER_CASES)
def test_gnutls_certtool_accepts_the_chain(
    chain: tuple[pki.ServerCertificates, Path], hostname: str, which: str, ok: bool
) -> None:
    certtool = require_tool("certtool")
    argv = [certtool, "--verify", "--verify-profile", "medium", "--load-ca-certificate"]
    rc, out = _run(
        [*argv, _ca(chain, which), "--infile", str(chain[0].cert), "--verify-hostname", hostname]
    )
    assert (rc == 0) == ok, out
    assert ("Chain verification output: Verified." in out) == ok, out


def _nss_db(directory: Path, ca: str) -> str:
    """A fresh NSS database trusting ``ca`` for TLS servers (what Thunderbird's profile gets)."""
    certutil = require_tool("certutil")
    directory.mkdir()
    db = f"sql:{directory}"
    for argv in (
        [certutil, "-N", "-d", db, "--empty-password"],
        [certutil, "-A", "-d", db, "-n", "mailtls test CA", "-t", "C,,", "-a", "-i", ca],
    ):
        rc, out = _run(argv)
        assert rc == 0, out
    return db


@pytest.fixture
def tls_server(chain: tuple[pki.ServerCertificates, Path]) -> Iterator[tuple[str, int]]:
    """A TLS server with the chain on a free port, for one handshake."""
    ctx = server_ssl_context(chain[0].cert, chain[0].key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(30)
        thread = threading.Thread(target=_serve_once, args=(ctx, listener), daemon=True)
        thread.start()
        yield listener.getsockname()[:2]
        with contextlib.suppress(OSError):  # unblock accept() when the client never connected
            socket.create_connection(listener.getsockname(), timeout=1).close()
        thread.join(5)


@pytest.mark.parametrize(("hostname", "which", "ok"), VERIFIER_CASES)
def test_nss_accepts_the_chain(
    chain: tuple[pki.ServerCertificates, Path],
    tls_server: tuple[str, int],
    tmp_path: Path,
    hostname: str,
    which: str,
    ok: bool,
) -> None:
    """NSS's chain check (vfychain, usage SSL server) and a real NSS handshake (tstclnt) with its
    host name check. Neither uses mozilla::pkix, so neither saw issue 9's bad chain."""
    vfychain, tstclnt = require_tool("vfychain"), require_tool("tstclnt")
    db = _nss_db(tmp_path / "nss", _ca(chain, which))
    rc, out = _run([vfychain, "-d", db, "-u", "1", "-a", str(chain[0].cert)])
    assert (rc == 0) == (which == "own"), out  # vfychain checks no host name
    host, port = tls_server
    rc, out = _run([tstclnt, "-Q", "-h", host, "-p", str(port), "-d", db, "-a", hostname])
    assert (rc == 0) == ok, out  # -Q: exit after the handshake (and its certificate check)


def test_later_starts_reuse_the_files(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    first = ensure_certificates(settings)
    pem = first.cert.read_bytes()
    second = ensure_certificates(settings)
    assert second == first and second.cert.read_bytes() == pem


def test_expiring_certificate_is_reissued_when_the_ca_key_was_kept(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, tls={"keep_ca_key": True})
    certs = ensure_certificates(settings)
    assert stat.S_IMODE((tmp_path / "tls" / "ca.key").stat().st_mode) == 0o600
    old = _load(certs.cert)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=395)  # within 7 days of expiry
    ensure_certificates(settings, now=later)
    new = _load(certs.cert)
    assert new.serial_number != old.serial_number
    assert new.not_valid_after_utc > old.not_valid_after_utc
    assert _load(certs.ca).serial_number == _load(certs.ca).serial_number


def test_expiring_certificate_without_ca_key_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path)
    certs = ensure_certificates(settings)
    pem = certs.cert.read_bytes()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=395)
    with caplog.at_level("WARNING", logger="mailtls.pki"):
        ensure_certificates(settings, now=later)
    assert certs.cert.read_bytes() == pem
    assert "cannot be reissued" in caplog.text


def _write_old_chain(tmp_path: Path, keep: bool) -> pki.ServerCertificates:
    """A data folder as versions before issue 9 left it: 127.0.0.1 also as a DNS name, in the
    server's SAN and in the CA's name constraints."""
    certs = ensure_certificates(make_settings(tmp_path, tls={"keep_ca_key": keep}))
    names = pki.CertificateNames(
        ("localhost", "127.0.0.1"), (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
    )
    pki._create_all(tmp_path / "tls", certs, names, keep, dt.datetime.now(dt.UTC))
    assert "127.0.0.1" in _dns_names(_load(certs.ca)) + _dns_names(_load(certs.cert))
    return certs


@pytest.mark.parametrize(("kept_before", "keep"), [(False, False), (True, False), (True, True)])
def test_an_old_chain_is_replaced_at_start_with_one_line_saying_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kept_before: bool, keep: bool
) -> None:
    certs = _write_old_chain(tmp_path, kept_before)
    old_ca = _load(certs.ca)
    with caplog.at_level("INFO", logger="mailtls.pki"):
        ensure_certificates(make_settings(tmp_path, tls={"keep_ca_key": keep}))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "127.0.0.1 as a DNS name" in warnings[0] and "mozilla::pkix" in warnings[0]
    assert "\n" not in warnings[0]
    new_ca, server = _load(certs.ca), _load(certs.cert)
    assert new_ca.serial_number != old_ca.serial_number  # the constraints are in the CA itself
    assert [name for name in _dns_names(new_ca) + _dns_names(server) if _is_address(name)] == []
    assert (tmp_path / "tls" / "ca.key").exists() == keep  # a replaced CA's key does not linger
    server.verify_directly_issued_by(new_ca)

    caplog.clear()
    pem = certs.cert.read_bytes()
    with caplog.at_level("INFO", logger="mailtls.pki"):
        ensure_certificates(make_settings(tmp_path, tls={"keep_ca_key": keep}))
    assert certs.cert.read_bytes() == pem and not caplog.records  # once only


def test_a_new_name_the_kept_ca_does_not_permit_is_not_issued_under_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The CA's constraints list the names it was made for: a certificate for a name added later
    would not verify, so the warning says to make a new CA instead of issuing it."""
    certs = ensure_certificates(make_settings(tmp_path, tls={"keep_ca_key": True}))
    pem = certs.cert.read_bytes()
    with caplog.at_level("WARNING", logger="mailtls.pki"):
        ensure_certificates(
            make_settings(tmp_path, hostname="mail.example.test", tls={"keep_ca_key": True})
        )
    assert certs.cert.read_bytes() == pem
    assert "do not permit mail.example.test" in caplog.text
    assert "delete" in caplog.text


def test_configured_files_are_used_instead(tmp_path: Path) -> None:
    generated = ensure_certificates(make_settings(tmp_path / "gen"))
    settings = make_settings(
        tmp_path / "data", tls={"cert_file": str(generated.cert), "key_file": str(generated.key)}
    )
    certs = ensure_certificates(settings)
    assert certs.cert == generated.cert and certs.ca is None
    assert not (tmp_path / "data" / "tls").exists()
    with pytest.raises(PkiError):
        ensure_certificates(make_settings(tmp_path, tls={"cert_file": str(generated.cert)}))
    with pytest.raises(PkiError):
        server_ssl_context(generated.cert, tmp_path / "missing.key")


def test_server_context_refuses_tls_1_1(tmp_path: Path) -> None:
    certs = ensure_certificates(make_settings(tmp_path))
    ctx = server_ssl_context(certs.cert, certs.key)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(
    ("hostname", "dns_name"),
    [
        ("m" * 63 + ".example-provider.test", "m" * 63 + ".example-provider.test"),  # CN > 64
        ("mäil.example.test", "xn--mil-qla.example.test"),  # an IDN: its A-label
    ],
)
def test_long_and_international_host_names_get_a_certificate(
    tmp_path: Path, hostname: str, dns_name: str
) -> None:
    certs = ensure_certificates(make_settings(tmp_path, hostname=hostname))
    san = _load(certs.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert dns_name in san.value.get_values_for_type(x509.DNSName)


@pytest.mark.parametrize("hostname", ["bad..name", "a" * 64 + ".test", "sp ace.test"])
def test_impossible_host_names_are_a_pki_error(tmp_path: Path, hostname: str) -> None:
    with pytest.raises(PkiError, match="host name"):
        ensure_certificates(make_settings(tmp_path, hostname=hostname))


def test_address_mode_certificate_names_the_runs_host_names(tmp_path: Path) -> None:
    """``<label>.<zone>`` for every run: ``*.<zone>`` in the SAN, the zone in the CA's
    permitted subtrees (a wildcard is no subtree)."""
    endpoints = replace(make_settings(tmp_path).endpoints, prefix="127.0.10.0/24", zone="T.example")
    settings = replace(make_settings(tmp_path), endpoints=endpoints)
    certs = ensure_certificates(settings)
    cert = x509.load_pem_x509_certificate(certs.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"t.example", "*.t.example"} <= set(san.get_values_for_type(x509.DNSName))
    assert certs.ca is not None
    ca = x509.load_pem_x509_certificate(certs.ca.read_bytes())
    permitted = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    names = [n.value for n in permitted.permitted_subtrees or () if isinstance(n, x509.DNSName)]
    assert "t.example" in names and not [n for n in names if n.startswith("*")]
    context = ssl.create_default_context(cafile=str(certs.ca))
    server = server_ssl_context(certs.cert, certs.key)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def accept() -> None:
            conn, _ = listener.accept()
            with contextlib.suppress(ssl.SSLError, OSError), server.wrap_socket(conn, True) as s:
                s.recv(1)

        worker = threading.Thread(target=accept)
        worker.start()
        with (
            socket.create_connection(listener.getsockname(), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="abcd2345.t.example") as tls,
        ):
            assert tls.version() is not None  # verified against *.t.example
        worker.join(5)
