"""Differential tests: our parsers must agree with the real postconf and doveconf.

For every Postfix fixture: ``postconf -c DIR -n`` (raw values), ``-nx`` (expanded values), ``-M``
(entries) and ``-P`` / ``-Px`` (per-service overrides) against our parse. For every Dovecot 2.3
fixture: ``doveconf -c FILE -n`` (every setting, by section path) and ``doveconf -f protocol=P
-f remote=IP -h KEY`` (the effective value in each context we report). Dovecot 2.4 fixtures are
checked against committed ``doveconf -n`` expectations, and live only where doveconf >= 2.4 exists.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from audit_helpers import dovecot_contexts, dovecot_file, materialise, postfix_dir
from captures import (
    POSTCONF_FLAGS,
    capture_name,
    doveconf_capture,
    dovecot23_fixtures,
    dovecot24_fixtures,
    fixture_id,
    postconf_capture,
    postfix_fixtures,
)

from conftest import require_file, require_tool
from mailtls.audit.collect import Request, collect
from mailtls.audit.dovecot import DovecotConfig, parse_dovecot
from mailtls.audit.dovecot_effective import DEFAULTS, RELEVANT, Context, normalise_key
from mailtls.audit.effective import RELEVANT as EFFECTIVE_RELEVANT
from mailtls.audit.effective import PostfixInstance, service_summary, smtp_services
from mailtls.audit.model import SourceText
from mailtls.audit.postfix_main import Lookup, expand, parse_main
from mailtls.audit.postfix_master import MasterEntry, parse_master, parse_postconf_p

# every fixture directory, the layouts' postfix/ and dovecot/ included
POSTFIX_FIXTURES = postfix_fixtures()
DOVECOT23_FIXTURES = dovecot23_fixtures()
DOVECOT24_FIXTURES = dovecot24_fixtures()
HIDDEN = ("ssl_key", "ssl_dh", "ssl_server_key_file", "key_file")


def tool(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def postconf() -> str:
    return str(require_tool("postconf"))


@pytest.fixture(scope="module")
def doveconf() -> str:
    return str(require_tool("doveconf"))


@pytest.mark.parametrize("fixture", POSTFIX_FIXTURES, ids=fixture_id)
def test_postfix_main_cf_agrees_with_postconf(postconf: str, fixture: Path) -> None:
    # host-dependent defaults ($myhostname) come from this host's postconf -d, as in local mode
    live = parse_main(SourceText("postconf -d", tool([postconf, "-c", str(fixture), "-d"])))
    shipped = postfix_dir(fixture)
    inst = PostfixInstance("", shipped.main, shipped.master, live)
    theirs = parse_main(SourceText("postconf -n", tool([postconf, "-c", str(fixture), "-n"])))
    names = set(theirs.settings) - {"config_directory"}
    assert names, "postconf printed nothing"
    for name in names:
        assert inst.main.settings[name].value == theirs.settings[name].value, name
    # and we found no definition that postconf, knowing the parameter, did not
    known = set(inst.defaults.settings)
    assert {n for n in inst.main.settings if n in known} <= names
    expanded = parse_main(SourceText("-nx", tool([postconf, "-c", str(fixture), "-nx"])))
    for name in names:
        assert inst.main_get(name).value == expanded.settings[name].value, name


@pytest.mark.parametrize("fixture", POSTFIX_FIXTURES, ids=fixture_id)
def test_postfix_master_cf_agrees_with_postconf(postconf: str, fixture: Path) -> None:
    inst = postfix_dir(fixture)
    theirs = parse_master(SourceText("-M", tool([postconf, "-c", str(fixture), "-M"])))

    def shape(entries: tuple[MasterEntry, ...]) -> list[tuple[str, ...]]:
        return [
            (e.service, e.type, e.private, e.unpriv, e.chroot, e.wakeup, e.maxproc, e.command)
            for e in entries
        ]

    assert shape(inst.master.entries) == shape(theirs.entries)
    for flag, expanded in (("-P", False), ("-Px", True)):
        listed = parse_postconf_p(SourceText(flag, tool([postconf, "-c", str(fixture), flag])))
        # postconf keeps one parameter namespace per service/type: the -o settings of duplicate
        # entries merge there (later wins); compare in that model
        ours: dict[str, dict[str, str]] = {}
        for entry in inst.master.entries:
            for s in entry.overrides:
                value = expand(s.value, _main_lookup(inst, entry.service)) if expanded else s.value
                ours.setdefault(entry.key, {})[s.name] = value
        theirs_merged = {k: {s.name: s.value for s in v} for k, v in listed.items()}
        assert ours == theirs_merged, flag


def _main_lookup(inst: PostfixInstance, service: str) -> Lookup:
    def lookup(name: str) -> str | None:
        if name == "service_name":
            return service
        found = inst.main.settings.get(name) or inst.defaults.settings.get(name)
        return None if found is None else found.value

    return lookup


def flatten(
    config: DovecotConfig, version: str
) -> dict[tuple[tuple[tuple[str, str], ...], str], str]:
    out: dict[tuple[tuple[tuple[str, str], ...], str], str] = {}
    for a in config.assigns:
        key = normalise_key(a, version)
        if key in HIDDEN or a.key in HIDDEN:
            continue
        path = a.path[:-1] if a.path and a.path[-1] == ("ssl_server", "") else a.path
        out[(path, key)] = a.value
    return out


def _representative(filters: tuple[tuple[str, str], ...]) -> list[str]:
    args: list[str] = []
    for kind, name in filters:
        if kind in ("remote", "local"):
            net = ipaddress.ip_network(name, strict=False)
            host = net.network_address + (1 if net.num_addresses > 1 else 0)
            args += ["-f", f"{kind}={host}"]
        elif kind == "local_name":
            args += ["-f", f"local_name={name}"]
    return args


@pytest.mark.parametrize("fixture", DOVECOT23_FIXTURES, ids=fixture_id)
def test_dovecot_23_agrees_with_doveconf(doveconf: str, fixture: Path, tmp_path: Path) -> None:
    conf = materialise(fixture, tmp_path / fixture.name)
    ours = dovecot_file(conf)
    theirs = parse_dovecot(SourceText("doveconf -n", tool([doveconf, "-c", str(conf), "-n"])))
    all_values = parse_dovecot(SourceText("-a", tool([doveconf, "-c", str(conf), "-a"])))
    ours_flat, theirs_flat = flatten(ours, "2.3"), flatten(theirs, "2.3")
    defaults_flat = flatten(all_values, "2.3")
    for key, value in theirs_flat.items():
        # doveconf -n prints whole sections, their empty defaults included
        assert ours_flat.get(key) == value or (key[0] and value == "" and key not in ours_flat), key
    for key, value in ours_flat.items():
        if key not in theirs_flat:  # doveconf -n leaves out values equal to the default
            assert defaults_flat.get(key) == value, key
    for ctx in dovecot_contexts(ours, "2.3"):
        _compare_context(doveconf, conf, ctx)


def _compare_context(doveconf: str, conf: Path, ctx: Context) -> None:
    keys = [k for k in RELEVANT[ctx.version] if k not in HIDDEN]
    argv = [doveconf, "-c", str(conf), "-f", f"protocol={ctx.protocol}"]
    argv += _representative(ctx.filters)
    for key in keys:
        value = tool([*argv, "-h", key]).rstrip("\n")
        ours = ctx.get(key).value
        if key == "ssl_cert":
            ours, value = ours.strip(), value.strip()
            assert (ours == "") == (value == ""), (ctx.label, key)
            continue
        assert ours == value, (ctx.label, key, ours, value)
    listeners = tool([doveconf, "-c", str(conf), "-a"])
    service = {"imap": "imap-login", "pop3": "pop3-login", "submission": "submission-login"}
    block = _section(listeners, f"service {service[ctx.protocol]}")
    for lis in ctx.listeners:
        inner = _section(block, f"inet_listener {lis.name}")
        assert re.search(rf"^\s*port = {lis.port}$", inner, re.M), (ctx.label, lis.name)
        ssl = "yes" if lis.implicit_tls else "no"
        assert re.search(rf"^\s*ssl = {ssl}$", inner, re.M), (ctx.label, lis.name)


def _section(text: str, head: str) -> str:
    start = text.index(head + " {")
    depth, i = 0, start
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    return text[start:]


@pytest.mark.parametrize("fixture", DOVECOT24_FIXTURES, ids=fixture_id)
def test_dovecot_24_agrees_with_committed_capture(fixture: Path) -> None:
    expected_text = (fixture / "expected-doveconf-n.txt").read_text()
    ours = dovecot_file(fixture / "dovecot.conf")
    if "no doveconf -n output" in expected_text:
        # 2.4 refuses this file; our audit must say why (a configuration-error finding)
        from audit_helpers import dovecot_findings

        assert any(f.id == "dovecot-setting-not-valid-in-version" for f in dovecot_findings(ours))
        return
    theirs = flatten(parse_dovecot(SourceText("expected", expected_text)), "2.4")
    mine = flatten(ours, "2.4")
    for key, value in theirs.items():
        assert mine.get(key) == value, key
    for key, value in mine.items():
        if key not in theirs:  # doveconf -n leaves out values equal to the default
            assert key[0] == () and DEFAULTS["2.4"].get(key[1]) == value, key


def _expected(fixture: Path) -> str:
    return (fixture / "expected-doveconf-n.txt").read_text()


def _doveconf_version() -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            ["doveconf", "-c", "/dev/null", "-n"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.match(r"# (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


@pytest.mark.parametrize(
    "fixture",
    [p for p in DOVECOT24_FIXTURES if "no doveconf -n output" not in _expected(p)],
    ids=fixture_id,
)
def test_dovecot_24_live(fixture: Path, tmp_path: Path) -> None:
    version = _doveconf_version()
    if version is None or version < (2, 4):
        pytest.skip("needs doveconf >= 2.4 (Debian 12 ships 2.3); not required in CI")
    conf = materialise(fixture, tmp_path / fixture.name)
    theirs = parse_dovecot(SourceText("doveconf -n", tool(["doveconf", "-c", str(conf), "-n"])))
    assert flatten(dovecot_file(conf), "2.4") == flatten(theirs, "2.4")


def test_stock_debian_dovecot_config_agrees_with_doveconf(doveconf: str) -> None:
    """The distribution's own dovecot.conf (conf.d includes, protocols.d ``$protocols``)."""
    stock = Path("/etc/dovecot/dovecot.conf")
    require_file(str(stock), "installed by dovecot-core")
    ours = dovecot_file(stock)
    theirs = parse_dovecot(SourceText("doveconf -n", tool([doveconf, "-c", str(stock), "-n"])))
    ours_flat, theirs_flat = flatten(ours, "2.3"), flatten(theirs, "2.3")
    for key, value in theirs_flat.items():
        # doveconf -n prints whole sections, defaults (empty values) included
        assert ours_flat.get(key) == value or (key[0] and value == "" and key not in ours_flat), key
    for ctx in dovecot_contexts(ours, "2.3"):
        _compare_context(doveconf, stock, ctx)


# --- runtime captures: committed output is what the tools print, and auditing it agrees --------


@pytest.mark.parametrize("fixture", POSTFIX_FIXTURES, ids=fixture_id)
def test_postfix_captures_are_what_postconf_prints(postconf: str, fixture: Path) -> None:
    for flag in POSTCONF_FLAGS:
        committed = (fixture / capture_name(flag)).read_text()
        assert committed == postconf_capture(fixture, flag, postconf), (
            f"{capture_name(flag)} is stale: run tests/audit/captures.py"
        )


@pytest.mark.parametrize("fixture", POSTFIX_FIXTURES, ids=fixture_id)
def test_postfix_effective_values_agree_with_postconf(postconf: str, fixture: Path) -> None:
    """Per service and per TLS/auth parameter: ours == the -o override postconf lists for that
    service (-Px; -Mx's own entry where duplicates merge in -P), else -nx, else -dx."""
    run = lambda flag: tool([postconf, "-c", str(fixture), flag])  # noqa: E731
    main_x = parse_main(SourceText("-nx", run("-nx"))).settings
    defaults_x = parse_main(SourceText("-dx", run("-dx"))).settings
    per_service = parse_postconf_p(SourceText("-Px", run("-Px")))
    entries = parse_master(SourceText("-Mx", run("-Mx"))).entries
    keys = [e.key for e in entries]
    inst = postfix_dir(fixture)
    for service in smtp_services(inst):
        key = service.entry.key
        if keys.count(key) > 1:
            overrides = {
                s.name: s.value for s in [e for e in entries if e.key == key][-1].overrides
            }
        else:
            overrides = {s.name: s.value for s in per_service.get(key, [])}
        for name in EFFECTIVE_RELEVANT:
            ours = service.get(name)
            if name in overrides:
                theirs = overrides[name]
            elif name in main_x:
                theirs = main_x[name].value
            elif name in inst.defaults.settings:
                theirs = defaults_x[name].value
            else:  # host-dependent default (mynetworks): not in the shipped table
                assert ours.scope == "default"
                continue
            assert ours.value == theirs, (key, name, ours.value, theirs)


def _service_view(summary: dict[str, Any]) -> dict[str, Any]:
    """A service's effective view without where each value was written (file/line differ)."""
    settings = {k: (v["value"], v["scope"]) for k, v in summary["settings"].items()}
    return {k: v for k, v in summary.items() if k not in ("entry", "settings")} | {
        "settings": settings
    }


@pytest.mark.parametrize("fixture", POSTFIX_FIXTURES, ids=fixture_id)
def test_postfix_audit_of_captures_equals_audit_of_files(fixture: Path) -> None:
    captured = collect(
        Request(
            postconf_n=str(fixture / "postconf-n.txt"),
            postconf_m=str(fixture / "postconf-M.txt"),
            postconf_p=str(fixture / "postconf-P.txt"),
        )
    ).postfix[0]
    files = postfix_dir(fixture)
    ours = [_service_view(service_summary(s)) for s in smtp_services(files)]
    theirs = [_service_view(service_summary(s)) for s in smtp_services(captured)]
    assert ours == theirs


@pytest.mark.parametrize("fixture", DOVECOT23_FIXTURES, ids=fixture_id)
def test_dovecot_capture_is_what_doveconf_prints(
    doveconf: str, fixture: Path, tmp_path: Path
) -> None:
    committed = (fixture / "doveconf-n.txt").read_text()
    assert committed == doveconf_capture(fixture, tmp_path, doveconf), (
        "doveconf-n.txt is stale: run tests/audit/captures.py"
    )


@pytest.mark.parametrize("fixture", DOVECOT23_FIXTURES, ids=fixture_id)
def test_dovecot_audit_of_capture_equals_audit_of_files(fixture: Path) -> None:
    from_files = dovecot_contexts(dovecot_file(fixture / "dovecot.conf"))
    captured = dovecot_contexts(parse_dovecot(SourceText("capture", _capture(fixture))))

    def view(ctx: Context) -> tuple[str, dict[str, str], list[tuple[str, int, bool, str]]]:
        values = {k: ctx.get(k).value for k in RELEVANT[ctx.version] if k not in HIDDEN}
        lis = [(x.name, x.port, x.implicit_tls, x.address) for x in ctx.listeners]
        return ctx.label, values, lis

    # doveconf -n prints filter blocks in its own order: compare as sets of contexts
    assert sorted(map(view, from_files)) == sorted(map(view, captured))


def _capture(fixture: Path) -> str:
    return (fixture / "doveconf-n.txt").read_text()
