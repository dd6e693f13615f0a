"""Postfix built-in defaults: a table per supported version, shipped in ``data/``.

``postconf -d`` output has the same ``name = value`` shape as main.cf, so the table is parsed
with the main.cf parser. When the auditor runs on the server itself it may use the live
``postconf -d`` instead (see ``cli``). Reads only package data (``importlib.resources``).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from mailtls.audit.model import SourceText
from mailtls.audit.postfix_main import MainConfig, parse_main

SUPPORTED = ("3.7",)
DEFAULT_VERSION = "3.7"


@lru_cache(maxsize=4)
def builtin_defaults(version: str = DEFAULT_VERSION) -> MainConfig:
    """The shipped defaults table for a Postfix version (``3.7``)."""
    if version not in SUPPORTED:
        raise ValueError(f"no defaults table for Postfix {version} (have {', '.join(SUPPORTED)})")
    name = f"postfix-{version}-defaults.cf"
    text = resources.files("mailtls.audit").joinpath("data", name).read_text("utf-8")
    return parse_main(SourceText(f"(Postfix {version} built-in default)", text))
