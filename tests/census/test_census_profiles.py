"""Query construction per profile and indicator (table-driven), and docs/census.md in sync."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailtls.census.profiles import PROFILES, BaseSpec, Proto, get_profile

DOCS = Path(__file__).resolve().parents[2] / "docs" / "census.md"


def base(profile: str, base_id: str) -> BaseSpec:
    return next(b for b in get_profile(profile).bases if b.id == base_id)


@pytest.mark.parametrize(
    ("profile", "base_id", "query"),
    [
        ("loose", "smtp-25", "port:25"),
        ("loose", "smtp-587", "port:587"),
        ("loose", "smtp-465", "port:465"),
        ("loose", "imap-143", "port:143"),
        ("loose", "imap-993", "port:993"),
        ("loose", "pop3-110", "port:110"),
        ("loose", "pop3-995", "port:995"),
        ("protocol", "smtp-587", 'port:587 "220" "250"'),
        ("protocol", "imap-143", 'port:143 "IMAP4rev1" "CAPABILITY"'),
        ("protocol", "pop3-110", 'port:110 "+OK" "CAPA"'),
        ("product", "smtp-587-postfix", 'port:587 product:"Postfix"'),
        ("product", "smtp-25-microsoft-exchange", 'port:25 product:"Microsoft Exchange"'),
        ("product", "smtp-465-sendmail", 'port:465 product:"Sendmail"'),
        ("product", "imap-143-dovecot", 'port:143 product:"Dovecot"'),
        ("product", "imap-993-cyrus", 'port:993 product:"Cyrus"'),
        ("product", "pop3-110-courier", 'port:110 product:"Courier"'),
    ],
)
def test_base_queries(profile: str, base_id: str, query: str) -> None:
    assert base(profile, base_id).query == query


@pytest.mark.parametrize(
    ("base_id", "key", "plus", "minus"),
    [
        ("smtp-587", "plaintext_auth", "", '-"AUTH PLAIN" -"AUTH LOGIN"'),
        ("smtp-587", "starttls", '"STARTTLS"', None),
        ("smtp-587", "no_starttls", '-"STARTTLS"', None),
        (
            "smtp-587",
            "plaintext_auth_without_starttls",
            '-"STARTTLS"',
            '-"STARTTLS" -"AUTH PLAIN" -"AUTH LOGIN"',
        ),
        ("smtp-25", "neither_starttls_nor_auth", '-"STARTTLS" -"AUTH PLAIN" -"AUTH LOGIN"', None),
        (
            "imap-143",
            "plaintext_auth",
            '-"LOGINDISABLED"',
            '-"LOGINDISABLED" -"AUTH=PLAIN" -"AUTH=LOGIN"',
        ),
        ("imap-143", "login_not_disabled", '-"LOGINDISABLED"', None),
        ("imap-143", "starttls", '"STARTTLS"', None),
        ("imap-143", "no_starttls", '-"STARTTLS"', None),
        ("imap-143", "neither_starttls_nor_auth", '-"STARTTLS" -"AUTH=PLAIN" -"AUTH=LOGIN"', None),
        ("pop3-110", "plaintext_auth", '"USER"', None),
        ("pop3-110", "starttls", '"STLS"', None),
        ("pop3-110", "no_starttls", '-"STLS"', None),
        ("pop3-110", "plaintext_auth_without_starttls", '"USER" -"STLS"', None),
        ("pop3-110", "neither_starttls_nor_auth", '-"STLS" -"USER"', None),
    ],
)
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_indicator_queries_extend_the_base(
    profile: str, base_id: str, key: str, plus: str, minus: str | None
) -> None:
    p = get_profile(profile)
    for b in p.bases:
        if b.protocol is not Proto(base_id.split("-")[0]) or b.port != int(base_id.split("-")[1]):
            continue
        ind = next(i for i in b.indicators if i.key == key)
        assert ind.plus == f"{b.query} {plus}".strip()
        assert ind.minus == (None if minus is None else f"{b.query} {minus}")


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profile_shape(profile: str) -> None:
    p = get_profile(profile)
    assert p.version >= 1
    ids = [b.id for b in p.bases]
    assert len(ids) == len(set(ids))
    assert len(p.queries) == len(set(p.queries))
    for b in p.bases:
        # indicators only where TLS is optional; implicit-TLS ports are totals only
        assert bool(b.indicators) == (b.port in (25, 587, 143, 110))
        assert sum(i.headline for i in b.indicators) == (1 if b.indicators else 0)
        for q in b.queries:
            assert q.startswith(b.query)
            assert " OR " not in q  # Shodan has no OR between terms: unions are complements
            assert q.count('"') % 2 == 0


def test_product_profile_has_each_product_per_port() -> None:
    p = get_profile("product")
    products = {(b.protocol, b.product) for b in p.bases}
    assert (Proto.SMTP, "Microsoft Exchange") in products
    assert (Proto.IMAP, "Courier") in products
    assert (Proto.POP3, "Dovecot") in products
    assert len(p.bases) == 4 * 3 + 3 * 2 + 3 * 2


def test_unknown_profile() -> None:
    with pytest.raises(ValueError, match="choose from"):
        get_profile("nope")


def test_docs_list_every_query() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for p in PROFILES.values():
        assert f"`{p.name}` (version {p.version})" in text
        for q in p.queries:
            assert f"`{q}`" in text, q
