"""Turn the user's choice of sources into parsed configurations (Postfix instances, Dovecot).

Decides what to read: named files, named captures of ``postconf``/``doveconf`` output, live
commands (``--runtime``), or the local system when nothing was named. All reading goes through
``sources``; everything read is parsed here and handed on. Files that exist but cannot be read are
noted and skipped; a named source that is missing, binary, huge or loops is fatal (``AuditError``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from mailtls.audit import sources
from mailtls.audit.dovecot import DovecotConfig, Reader, parse_dovecot
from mailtls.audit.effective import PostfixInstance
from mailtls.audit.model import AuditError, CommandFailed, SourceText, UnreadableError
from mailtls.audit.postfix_defaults import builtin_defaults
from mailtls.audit.postfix_main import MainConfig, parse_main
from mailtls.audit.postfix_master import (
    MasterConfig,
    apply_postconf_p,
    parse_master,
    parse_postconf_p,
)

T = TypeVar("T")
LOCAL_POSTFIX = "/etc/postfix"
LOCAL_DOVECOT = "/etc/dovecot/dovecot.conf"
STOCK_MASTER = "smtp      inet  n       -       y       -       -       smtpd\n"


@dataclass(frozen=True)
class Request:
    postfix_dir: str | None = None
    dovecot_config: str | None = None
    postconf_n: str | None = None
    postconf_m: str | None = None
    postconf_p: str | None = None
    doveconf_n: str | None = None
    runtime: bool = False
    dovecot_version: str | None = None

    @property
    def named(self) -> bool:
        return any(
            (
                self.postfix_dir,
                self.dovecot_config,
                self.postconf_n,
                self.postconf_m,
                self.postconf_p,
                self.doveconf_n,
            )
        )


@dataclass
class Collected:
    postfix: list[PostfixInstance] = field(default_factory=list)
    dovecot: DovecotConfig | None = None
    notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def collect(req: Request) -> Collected:
    out = Collected()
    if req.named:
        _collect_named(req, out)
    else:
        _collect_local(req, out)
    return out


def _collect_named(req: Request, out: Collected) -> None:
    if req.postfix_dir:
        if not sources.is_dir(req.postfix_dir):
            raise AuditError(f"{req.postfix_dir}: not a directory")
        _postfix_tree(req.postfix_dir, "", req.runtime, out, live_defaults=False)
    if req.postconf_n or req.postconf_m or req.postconf_p:
        _postfix_captures(req, out)
    if req.dovecot_config and req.runtime:
        if not sources.exists(req.dovecot_config):
            raise AuditError(f"{req.dovecot_config}: no such file")
        _dovecot_runtime(req.dovecot_config, out)
    elif req.dovecot_config:
        _dovecot_file(req.dovecot_config, out)
    if req.doveconf_n:
        out.dovecot = _guard(out, lambda: parse_dovecot(sources.read_text(req.doveconf_n or "")))
        out.sources.append(f"doveconf -n capture {req.doveconf_n}")


def _collect_local(req: Request, out: Collected) -> None:
    if sources.is_dir(LOCAL_POSTFIX):
        live = sources.find_program(sources.POSTCONF_CANDIDATES) is not None
        _postfix_tree(LOCAL_POSTFIX, "", req.runtime, out, live_defaults=live)
    else:
        out.notes.append(f"{LOCAL_POSTFIX} not found: Postfix not audited")
    if sources.exists(LOCAL_DOVECOT):
        if req.runtime:
            _dovecot_runtime(None, out)
        else:
            _dovecot_file(LOCAL_DOVECOT, out)
    else:
        out.notes.append(f"{LOCAL_DOVECOT} not found: Dovecot not audited")


def _dovecot_runtime(path: str | None, out: Collected) -> None:
    """``doveconf -n``. When doveconf refuses a setting name ("Unknown setting": a 2.3 name under
    2.4 or the reverse, so Dovecot would not start either), the files are audited instead and the
    version check names every such setting; any other doveconf failure stays fatal."""
    try:
        out.dovecot = _guard(out, lambda: parse_dovecot(sources.doveconf(path)))
    except CommandFailed as exc:
        if "Unknown setting" not in str(exc):
            raise
        out.notes.append(f"{exc}; Dovecot will not start with it: auditing the files instead")
        _dovecot_file(path or LOCAL_DOVECOT, out)
        return
    out.sources.append(f"doveconf -c {path} -n" if path else "doveconf -n")


def _guard(out: Collected, load: Callable[[], T]) -> T | None:
    try:
        return load()
    except UnreadableError as exc:
        out.notes.append(f"skipped: {exc}")
        return None


def _dovecot_file(path: str, out: Collected) -> None:
    reader = Reader(read=sources.read_text, glob=sources.expand_glob)
    root = _guard(out, lambda: sources.read_text(path))
    if root is None:
        return
    out.dovecot = parse_dovecot(root, reader)
    out.sources.append(f"Dovecot config {path} ({len(out.dovecot.files)} file(s))")
    out.notes.extend(out.dovecot.warnings)


def _read_optional(path: str, out: Collected) -> SourceText | None:
    """A config file that may legitimately be absent (main.cf of an unconfigured Postfix)."""
    if not sources.exists(path):
        return None
    return _guard(out, lambda: sources.read_text(path))


def _postfix_tree(
    config_dir: str, name: str, runtime: bool, out: Collected, live_defaults: bool
) -> None:
    """One Postfix instance from its directory (files or ``postconf -c DIR``), then its
    secondary instances (``multi_instance_directories``)."""
    defaults = _defaults(live_defaults, out)
    if runtime:
        main_src: SourceText | None = sources.postconf(["-n"], config_dir)
        master_src: SourceText | None = sources.postconf(["-M"], config_dir)
        out.sources.append(f"postconf -c {config_dir} -n/-M")
    else:
        main_path = os.path.join(config_dir, "main.cf")
        master_path = os.path.join(config_dir, "master.cf")
        main_src = _read_optional(main_path, out)
        master_src = _read_optional(master_path, out)
        if main_src is None and master_src is None:
            if not sources.exists(main_path) and not sources.exists(master_path):
                raise AuditError(f"{config_dir}: has neither main.cf nor master.cf")
            return
        if main_src is None:
            out.notes.append(
                f"{main_path}: missing or unreadable; Postfix built-in defaults assumed"
            )
        if master_src is None:
            out.notes.append(
                f"{master_path}: missing or unreadable; only the stock smtp service audited"
            )
        out.sources.append(f"Postfix config {config_dir}")
    main = parse_main(main_src or SourceText(os.path.join(config_dir, "main.cf"), ""))
    master = parse_master(
        master_src or SourceText(os.path.join(config_dir, "master.cf"), STOCK_MASTER)
    )
    out.notes.extend(main.warnings)
    out.notes.extend(master.warnings)
    inst = PostfixInstance(name, main, master, defaults)
    out.postfix.append(inst)
    if not name:
        _secondary_instances(inst, runtime, out, live_defaults)


def _secondary_instances(
    primary: PostfixInstance, runtime: bool, out: Collected, live_defaults: bool
) -> None:
    dirs = primary.main_get("multi_instance_directories").value.replace(",", " ").split()
    if not dirs:
        return
    renamed = PostfixInstance("postfix (primary)", primary.main, primary.master, primary.defaults)
    out.postfix[out.postfix.index(primary)] = renamed
    for directory in dirs:
        if not sources.is_dir(directory):
            out.notes.append(f"multi_instance_directories: {directory} not found; not audited")
            continue
        label = _instance_name(directory, out)
        try:
            _postfix_tree(directory, label, runtime, out, live_defaults)
        except UnreadableError as exc:
            out.notes.append(f"skipped instance {label}: {exc}")


def _instance_name(directory: str, out: Collected) -> str:
    main = _read_optional(os.path.join(directory, "main.cf"), out)
    if main is not None:
        parsed = parse_main(main)
        setting = parsed.settings.get("multi_instance_name")
        if setting is not None and setting.value:
            return setting.value
    return directory


def _defaults(live: bool, out: Collected) -> MainConfig:
    if live:
        try:
            return parse_main(sources.postconf(["-d"]))
        except AuditError as exc:
            out.notes.append(f"postconf -d failed ({exc}); using the shipped Postfix 3.7 defaults")
    return builtin_defaults()


def _postfix_captures(req: Request, out: Collected) -> None:
    main = parse_main(sources.read_text(req.postconf_n)) if req.postconf_n else None
    master: MasterConfig | None = None
    if req.postconf_m:
        master = parse_master(sources.read_text(req.postconf_m))
    if req.postconf_p:
        overrides = parse_postconf_p(sources.read_text(req.postconf_p))
        if master is None:
            raise AuditError("--postconf-P needs --postconf-M (the services it belongs to)")
        master = apply_postconf_p(master, overrides)
    if main is None:
        main = parse_main(SourceText("(no postconf -n given)", ""))
        out.notes.append("no postconf -n capture: Postfix built-in defaults assumed for main.cf")
    if master is None:
        master = parse_master(SourceText("(no postconf -M given)", STOCK_MASTER))
        out.notes.append("no postconf -M capture: only the stock smtp service is audited")
    out.postfix.append(PostfixInstance("", main, master, builtin_defaults()))
    out.sources.append("postconf captures")
