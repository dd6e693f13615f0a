"""Settings are validated when loaded: a bad value is a one-line ``SettingsError`` at start,
never a traceback later (when the web app parses its trusted proxies, or a listener binds)."""

from __future__ import annotations

import pytest

from mailtls.settings import SettingsError, load


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("MAILTLS_TRUSTED_PROXIES", "10.0.0.1,not-a-network", "trusted_proxies"),
        ("MAILTLS_CONNECTIONS__EXEMPT", "zzz", "connections.exempt"),
        ("MAILTLS_PORTS__HTTP", "70000", "ports.http"),
        ("MAILTLS_PORTS__IMAP", "-1", "ports.imap"),
        ("MAILTLS_BINDING__IPV6_PREFIX", "129", "binding.ipv6_prefix"),
    ],
)
def test_bad_values_are_refused_at_load(key: str, value: str, named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load(environ={key: value})


def test_good_values_load() -> None:
    settings = load(
        environ={
            "MAILTLS_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8,::1",
            "MAILTLS_CONNECTIONS__EXEMPT": "192.0.2.0/24",
            "MAILTLS_PORTS__HTTP": "0",
            "MAILTLS_BINDING__IPV6_PREFIX": "56",
        }
    )
    assert settings.trusted_proxies == ("127.0.0.1", "10.0.0.0/8", "::1")
    assert settings.ports.http == 0 and settings.binding.ipv6_prefix == 56


def test_endpoints_are_on_by_default_away_from_the_standard_ports() -> None:
    settings = load(environ={})
    ep = settings.endpoints
    assert ep.enabled and not ep.prefix and 1024 < ep.port_first <= ep.port_last < 32768
    standard = {2525, 2587, 2465, 2143, 2993, 2110, 2995, 8080}
    assert not standard & set(range(ep.port_first, ep.port_last + 1))
    assert ep.port_last - ep.port_first + 1 >= 6 * ep.max_runs  # six kinds for every run


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MAILTLS_ENDPOINTS__PORT_FIRST": "2000", "MAILTLS_ENDPOINTS__PORT_LAST": "3000"}, "2110"),
        (
            {"MAILTLS_ENDPOINTS__PORT_FIRST": "30000", "MAILTLS_ENDPOINTS__PORT_LAST": "29000"},
            "range",
        ),
        ({"MAILTLS_ENDPOINTS__PREFIX": "2001:db8::/64"}, "together"),
        ({"MAILTLS_ENDPOINTS__PREFIX": "nope", "MAILTLS_ENDPOINTS__ZONE": "t.x"}, "prefix"),
        ({"MAILTLS_DNS__PORT": "53"}, "zone"),
        ({"MAILTLS_DNS__WEB_ADDRESSES": "not-an-ip"}, "dns"),
    ],
)
def test_bad_endpoint_settings_are_refused(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load(environ=env)
