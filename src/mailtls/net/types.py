"""Types the I/O shell shares with its callers: listener specs and the callables it is given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailtls.protocols.base import Core, PortRole, SessionContext
from mailtls.runs.types import Binding

CoreFactory = Callable[[SessionContext], Core]
"""Builds the protocol core of one connection (``SmtpCore``, ``ImapCore``, ``Pop3Core``)."""

Binder = Callable[[str, tuple[str, int]], Binding | None]
"""``binder(client_ip, (local_ip, local_port))``: the run step a new connection belongs to."""

Sink = Callable[[dict[str, Any]], object]
"""Takes one event record (the store journals it synchronously and assigns its ``id``)."""


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """One listening service. ``port`` 0 binds an ephemeral port (tests); ``standard_specs``
    leaves out listeners whose configured port is 0 (disabled)."""

    name: str  # "smtp_mx", "imap_tls", ...
    protocol: str  # "smtp" | "imap" | "pop3"
    role: PortRole
    port: int
    implicit_tls: bool
