"""What of a run's events its owner may see (DESIGN §9 privacy).

The verdict uses every event of the connections bound to a step. What is *shown* is narrower:
client-supplied strings (transcript lines, EHLO/ID values, usernames, addresses) of a connection
appear only if that connection presented the run's session code (a login with the run's
password) or was bound exactly (the run's own endpoint) and presented no other run's code.
Other bound connections appear reduced to neutral facts (type, protocol, port, time, TLS state),
so two users behind one NAT never see each other's strings. A login with the run's username and a
wrong password (``proof`` false) presents nothing: someone else's unbound connection that only did
that is left out altogether, bound to the run or not (its own endpoint too: a port scan finds
it); the step's ``username_misused`` finding counts it. The shareable view (``share=True``)
additionally hides addresses, EHLO and ID strings on every event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mailtls.web.describe import describe

NEUTRAL_KEYS = frozenset(
    {
        "id",
        "ts",
        "type",
        "conn",
        "protocol",
        "listener",
        "port",
        "tls",
        "run",
        "step",
        "security",
        "testcase",
        "active",
        "by",
        "duration",
        "starttls_offered",
        "auth_mechanisms",
        "advertised",
        "reason",
        "stage",
        "looks_like_tls",
        "version",
        "cipher",
        "implicit",
        "style",
        "tls_alert",
        "nbytes",
        "bytes_discarded",
        "mechanism",
        "secret_sent",
        "secret_in_clear",
        "outcome",
        "proof",
        "recipients",
        "client_hello_bytes",
        "bytes_in",
        "bytes_out",
    }
)
SHARE_HIDDEN = frozenset({"client", "cport", "value", "line", "username", "run", "code"})
RUN_RECORD_HIDDEN = frozenset({"addresses", "address", "client", "clients"})
EXACT = frozenset({"endpoint", "dedicated"})  # binding sources that name the run exactly


def _binding_source(record: dict[str, Any]) -> str | None:
    binding = record.get("binding")
    if isinstance(binding, dict):
        source = binding.get("source")
        return str(source) if source is not None else None
    return None


def _presents(record: dict[str, Any], code: str) -> bool:
    """The record presented the run's code: not a wrong password for its username."""
    return record.get("code") == code and record.get("proof") is not False


def visible_events(
    records: Iterable[dict[str, Any]], code: str, *, run_id: str, share: bool = False
) -> list[dict[str, Any]]:
    """Filter and reduce the records of run ``run_id`` for display, ordered by id.

    A connection not bound to the run is shown only when it logged in with the run's password
    (a username alone proves nothing: it travels in the clear).
    """
    records = sorted({int(r["id"]): r for r in records}.values(), key=lambda r: int(r["id"]))
    bound_conns = {r.get("conn") for r in records if r.get("run") == run_id}
    proven_conns = {r.get("conn") for r in records if r.get("code") == code and r.get("proof")}
    # a stranger: a wrong password for the run's username, or another run's code (a user who
    # typed someone else's port must not show their strings to that run's owner)
    strangers = {
        r.get("conn")
        for r in records
        if r.get("code") not in (None, code) or (r.get("code") == code and r.get("proof") is False)
    } - proven_conns
    bound_conns -= strangers  # bound, on the run's own endpoint too: a stranger's is left out
    owned_conns = proven_conns | {
        r.get("conn")
        for r in records
        if r.get("conn") not in strangers
        and ((_presents(r, code) and r.get("conn") in bound_conns) or _binding_source(r) in EXACT)
    }
    out: list[dict[str, Any]] = []
    for r in records:
        if r.get("conn") is not None and r.get("conn") not in bound_conns | owned_conns:
            continue  # someone else's connection that used the run's username, not its password
        if r.get("conn") is None:  # run records (run_created, step_started, ...)
            shown = {k: v for k, v in r.items() if k not in RUN_RECORD_HIDDEN}
        elif r.get("conn") in owned_conns:
            shown = dict(r)
        else:
            shown = {k: v for k, v in r.items() if k in NEUTRAL_KEYS}
            shown["reduced"] = True
        if share:
            shown = {k: v for k, v in shown.items() if k not in SHARE_HIDDEN}
            shown.pop("binding", None)
        summary = describe(shown)
        if summary:
            shown["summary"] = summary
        out.append(shown)
    return out
