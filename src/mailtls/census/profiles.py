"""Census profiles: versioned, documented sets of Shodan queries (pure data, no I/O).

A profile is a list of *bases* (one per port, or per port and product). Each base is one Shodan
query; each *indicator* of a base is a count derived from one or two further queries that add
banner keywords to the base query::

    indicator = count(base + plus_terms) - count(base + minus_terms)   (minus part optional)

Shodan ANDs query terms and has no OR between free-text terms, so a union such as "advertises
AUTH PLAIN *or* AUTH LOGIN" is counted as its complement: ``count(base) - count(base -"AUTH
PLAIN" -"AUTH LOGIN")``. Every query string is built here and nowhere else, so the queries in
``docs/census.md`` and ``mailtls census --dry-run`` are the ones sent. Changing any query of a
profile means bumping its ``version``: saved runs record it and ``census history`` warns when
versions differ.

Must not import: the client, the network, files, the clock.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


class Proto(enum.StrEnum):
    SMTP = "smtp"
    IMAP = "imap"
    POP3 = "pop3"


def phrase(text: str) -> str:
    """A quoted phrase searched in the banner text (Shodan's ``data`` property)."""
    return f'"{text}"'


def without(text: str) -> str:
    """Exclude banners containing the phrase."""
    return f'-"{text}"'


# SMTP keywords, as they appear in the EHLO reply that Shodan records before any TLS
STARTTLS = "STARTTLS"
SMTP_AUTH_PLAIN = "AUTH PLAIN"
SMTP_AUTH_LOGIN = "AUTH LOGIN"
# IMAP keywords of the pre-TLS CAPABILITY list
IMAP_AUTH_PLAIN = "AUTH=PLAIN"
IMAP_AUTH_LOGIN = "AUTH=LOGIN"
LOGINDISABLED = "LOGINDISABLED"
# POP3 keywords of the CAPA reply
STLS = "STLS"
POP3_USER = "USER"


@dataclass(frozen=True)
class IndicatorTemplate:
    """An indicator before it is attached to a base: terms added to the base query."""

    key: str
    label: str
    plus: tuple[str, ...]
    minus: tuple[str, ...] | None = None
    headline: bool = False  # the "advertises plaintext auth" figure shown in plots


@dataclass(frozen=True)
class IndicatorSpec:
    """An indicator of one base, with the full query strings it is derived from."""

    key: str
    label: str
    plus: str
    minus: str | None = None
    headline: bool = False

    @property
    def queries(self) -> tuple[str, ...]:
        return (self.plus,) if self.minus is None else (self.plus, self.minus)


@dataclass(frozen=True)
class BaseSpec:
    """One population: a port, optionally narrowed by protocol keywords or a product."""

    id: str
    protocol: Proto
    port: int
    label: str
    query: str
    product: str | None = None
    indicators: tuple[IndicatorSpec, ...] = ()

    @property
    def queries(self) -> tuple[str, ...]:
        out = [self.query]
        for ind in self.indicators:
            out.extend(q for q in ind.queries if q not in out)
        return tuple(out)


@dataclass(frozen=True)
class Profile:
    name: str
    version: int
    description: str
    bases: tuple[BaseSpec, ...]

    @property
    def queries(self) -> tuple[str, ...]:
        """Every distinct query of the profile, in the order they are sent."""
        seen: dict[str, None] = {}
        for base in self.bases:
            for q in base.queries:
                seen.setdefault(q, None)
        return tuple(seen)


_NO_AUTH_SMTP = (without(SMTP_AUTH_PLAIN), without(SMTP_AUTH_LOGIN))
_NO_AUTH_IMAP = (without(IMAP_AUTH_PLAIN), without(IMAP_AUTH_LOGIN))

INDICATORS: dict[Proto, tuple[IndicatorTemplate, ...]] = {
    Proto.SMTP: (
        IndicatorTemplate(
            "plaintext_auth",
            "AUTH PLAIN/LOGIN before TLS",
            plus=(),
            minus=_NO_AUTH_SMTP,
            headline=True,
        ),
        IndicatorTemplate("starttls", "STARTTLS", plus=(phrase(STARTTLS),)),
        IndicatorTemplate("no_starttls", "no STARTTLS", plus=(without(STARTTLS),)),
        IndicatorTemplate(
            "plaintext_auth_without_starttls",
            "AUTH PLAIN/LOGIN, no STARTTLS",
            plus=(without(STARTTLS),),
            minus=(without(STARTTLS), *_NO_AUTH_SMTP),
        ),
        IndicatorTemplate(
            "neither_starttls_nor_auth",
            "neither STARTTLS nor AUTH",
            plus=(without(STARTTLS), *_NO_AUTH_SMTP),
        ),
    ),
    Proto.IMAP: (
        IndicatorTemplate(
            "plaintext_auth",
            "AUTH=PLAIN/LOGIN, no LOGINDISABLED",
            plus=(without(LOGINDISABLED),),
            minus=(without(LOGINDISABLED), *_NO_AUTH_IMAP),
            headline=True,
        ),
        IndicatorTemplate("login_not_disabled", "no LOGINDISABLED", plus=(without(LOGINDISABLED),)),
        IndicatorTemplate("starttls", "STARTTLS", plus=(phrase(STARTTLS),)),
        IndicatorTemplate("no_starttls", "no STARTTLS", plus=(without(STARTTLS),)),
        IndicatorTemplate(
            "plaintext_auth_without_starttls",
            "AUTH=PLAIN/LOGIN, no STARTTLS",
            plus=(without(STARTTLS),),
            minus=(without(STARTTLS), *_NO_AUTH_IMAP),
        ),
        IndicatorTemplate(
            "neither_starttls_nor_auth",
            "neither STARTTLS nor AUTH=PLAIN/LOGIN",
            plus=(without(STARTTLS), *_NO_AUTH_IMAP),
        ),
    ),
    Proto.POP3: (
        IndicatorTemplate("plaintext_auth", "USER", plus=(phrase(POP3_USER),), headline=True),
        IndicatorTemplate("starttls", "STLS", plus=(phrase(STLS),)),
        IndicatorTemplate("no_starttls", "no STLS", plus=(without(STLS),)),
        IndicatorTemplate(
            "plaintext_auth_without_starttls",
            "USER, no STLS",
            plus=(phrase(POP3_USER), without(STLS)),
        ),
        IndicatorTemplate(
            "neither_starttls_nor_auth",
            "neither STLS nor USER",
            plus=(without(STLS), without(POP3_USER)),
        ),
    ),
}

# port -> (protocol, whether indicators apply: only the ports where TLS is optional)
PORTS: dict[int, tuple[Proto, bool]] = {
    25: (Proto.SMTP, True),
    587: (Proto.SMTP, True),
    465: (Proto.SMTP, False),
    143: (Proto.IMAP, True),
    993: (Proto.IMAP, False),
    110: (Proto.POP3, True),
    995: (Proto.POP3, False),
}

PORT_NAMES = {
    25: "SMTP relay",
    587: "SMTP submission",
    465: "SMTP implicit TLS",
    143: "IMAP",
    993: "IMAP implicit TLS",
    110: "POP3",
    995: "POP3 implicit TLS",
}

# Banner keywords that identify the protocol (profile "protocol"): the greeting plus the reply
# to the capability command Shodan sends, so that the base holds only services whose capability
# list is in the banner (the population an indicator can be measured on).
PROTOCOL_KEYWORDS: dict[Proto, tuple[str, ...]] = {
    Proto.SMTP: (phrase("220"), phrase("250")),
    Proto.IMAP: (phrase("IMAP4rev1"), phrase("CAPABILITY")),
    Proto.POP3: (phrase("+OK"), phrase("CAPA")),
}

# Products as Shodan names them in its ``product`` property (matched as a phrase).
PRODUCTS: dict[Proto, tuple[str, ...]] = {
    Proto.SMTP: ("Postfix", "Exim", "Microsoft Exchange", "Sendmail"),
    Proto.IMAP: ("Dovecot", "Cyrus", "Courier"),
    Proto.POP3: ("Dovecot", "Cyrus", "Courier"),
}


def _query(*terms: str) -> str:
    return " ".join(t for t in terms if t)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def make_base(port: int, *, product: str | None = None, keywords: Sequence[str] = ()) -> BaseSpec:
    """A base query for ``port`` (optionally one product), with its indicators attached."""
    proto, with_indicators = PORTS[port]
    filters = [f"port:{port}"]
    if product is not None:
        filters.append(f"product:{phrase(product)}")
    filters.extend(keywords)
    query = _query(*filters)
    indicators: list[IndicatorSpec] = []
    if with_indicators:
        for t in INDICATORS[proto]:
            indicators.append(
                IndicatorSpec(
                    key=t.key,
                    label=t.label,
                    plus=_query(query, *t.plus),
                    minus=None if t.minus is None else _query(query, *t.minus),
                    headline=t.headline,
                )
            )
    label = f"{port} {PORT_NAMES[port]}" if product is None else f"{product} {port}"
    base_id = f"{proto}-{port}" if product is None else f"{proto}-{port}-{_slug(product)}"
    return BaseSpec(
        id=base_id,
        protocol=proto,
        port=port,
        label=label,
        query=query,
        product=product,
        indicators=tuple(indicators),
    )


def _loose() -> Iterator[BaseSpec]:
    for port in PORTS:
        yield make_base(port)


def _protocol() -> Iterator[BaseSpec]:
    for port, (proto, _) in PORTS.items():
        yield make_base(port, keywords=PROTOCOL_KEYWORDS[proto])


def _product() -> Iterator[BaseSpec]:
    for proto in Proto:
        ports = [p for p, (pr, _) in PORTS.items() if pr is proto]
        for product in PRODUCTS[proto]:
            for port in ports:
                yield make_base(port, product=product)


PROFILES: dict[str, Profile] = {
    "loose": Profile(
        "loose",
        1,
        "port only: every banner Shodan holds on the mail ports",
        tuple(_loose()),
    ),
    "protocol": Profile(
        "protocol",
        1,
        "port plus banner keywords of the protocol's greeting and capability reply",
        tuple(_protocol()),
    ),
    "product": Profile(
        "product",
        1,
        "port plus Shodan's product label (Postfix, Exim, Exchange, Sendmail; Dovecot, Cyrus, "
        "Courier), one base per product and port",
        tuple(_product()),
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r} (choose from {', '.join(PROFILES)})") from None
