"""``mailtls probe``: check a live mail server the way an attacker on the path sees it.

Data flows one way:

``conn`` (the only code that touches sockets and ``ssl``: bounded line reads with deadlines,
STARTTLS upgrade, transcript with secrets redacted) -> ``smtp`` / ``imap`` / ``pop3`` (the
client side of each dialogue: greeting, capabilities, a dummy login, STARTTLS) -> ``classify``
(pure: server replies in, typed outcomes out, table-tested) and ``tlscheck`` (handshake facts,
certificate, legacy versions) and ``injection`` (STARTTLS command injection) -> ``session``
(per-port orchestration, ``probe_host``) -> ``checks`` (pure: per-port facts in, ``Finding`` out)
-> ``report`` (text/JSON/SARIF through ``mailtls.findings``) -> ``cli``.

Rules: only ``conn`` and ``tlscheck`` import ``socket``/``ssl``; ``classify`` and ``checks`` are
pure. Nothing here imports the mail servers, the web app, the store or the auditor (``audit``
may import ``probe_host`` from here, never the other way round). The dummy login uses a random
``mailtls-probe-<hex>`` user and a random password; neither is ever shown or stored.
"""

from __future__ import annotations

from mailtls.probe.session import ProbeResult, probe_host

__all__ = ["ProbeResult", "probe_host"]
