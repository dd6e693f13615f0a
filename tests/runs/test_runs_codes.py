"""Session codes, account names, keyed username hashes and the server key file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mailtls.runs import codes
from mailtls.runs.keys import KEY_BYTES, KeyFileError, derive, load_or_create_key

KEY = bytes(range(32))


def test_new_codes_use_the_alphabet_without_look_alikes() -> None:
    seen = {codes.new_code() for _ in range(200)}
    assert len(seen) == 200
    for code in seen:
        assert len(code) == codes.CODE_LENGTH
        assert codes.is_code(code)
    assert not set("01ilo") & set(codes.ALPHABET)
    assert codes.ALPHABET.islower()


def test_account_username_round_trips() -> None:
    code = codes.new_code()
    name = codes.account_username(code, "mailtls.test")
    assert name == f"test-{code}@mailtls.test"
    assert codes.parse_code(name) == code


@pytest.mark.parametrize(
    ("username", "code"),
    [
        ("test-abcdefghjk", "abcdefghjk"),
        ("test-abcdefghjk@mailtls.test", "abcdefghjk"),
        ("TEST-ABCDEFGHJK@MAILTLS.TEST", "abcdefghjk"),
        ("  test-abcdefghjk@elsewhere.example\t", "abcdefghjk"),
        ("test-abcdefghjk@", "abcdefghjk"),
        ("test-abcdefghjk@a@b", "abcdefghjk"),
        ("test-abcdefghj", None),  # too short
        ("test-abcdefghjkm", None),  # too long
        ("test-abcdefghj0", None),  # a look-alike is not in the alphabet
        ("test-abcdefghjl@mailtls.test", None),
        ("abcdefghjk", None),
        ("xtest-abcdefghjk", None),
        ("test_abcdefghjk", None),
        ("", None),
        ("@", None),
        ("test-", None),
        ("test-abcdef\x00hjk", None),
        ("test-" + "a" * 5000, None),
        ("test-abcdefghjk" + "@" + "x" * 400, None),  # longer than any address
    ],
)
def test_parse_code(username: str, code: str | None) -> None:
    assert codes.parse_code(username) == code


def test_hash_username_is_keyed_stable_and_normalised() -> None:
    h = codes.hash_username(KEY, "alice@example.com")
    assert h.startswith("h:") and len(h) == 18
    int(h[2:], 16)
    assert codes.hash_username(KEY, "  Alice@Example.COM ") == h
    assert codes.hash_username(KEY, "bob@example.com") != h
    assert codes.hash_username(bytes(32), "alice@example.com") != h
    assert "alice" not in h


def test_hash_username_takes_any_string() -> None:
    for odd in ("", "\udcff", "\x00" * 10, "é" * 1000):
        assert codes.hash_username(KEY, odd).startswith("h:")


def test_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    data = tmp_path / "var"
    key = load_or_create_key(data)
    assert len(key) == KEY_BYTES
    path = data / "secret.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_key(data) == key
    assert [p.name for p in data.iterdir()] == ["secret.key"]  # no temporary file left
    assert load_or_create_key(tmp_path / "other") != key


def test_a_damaged_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_bytes(b"short")
    with pytest.raises(KeyFileError, match="32 bytes"):
        load_or_create_key(tmp_path)


def test_derive_is_domain_separated() -> None:
    assert derive(KEY, "password", "run") != derive(KEY, "result", "run")
    assert derive(KEY, "password", "run") == derive(KEY, "password", b"run")
    assert len(derive(KEY, "x", "")) == 32
