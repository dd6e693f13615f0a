"""Retention: raw identifiers are pruned after ``settings.retention_days`` (DESIGN §9).

Verdicts and findings stay (they are recomputed from the pruned events, which keep every fact a
verdict needs: types, TLS state, connection ids, outcomes); what goes is what identifies a
person: client addresses are cut to their network (/24 or /48), client ports dropped, EHLO and
IMAP ID strings, transcript arguments and keyed-hash usernames removed, the addresses in run
records removed. A pruned record carries ``"pruned": true``; pruning it again changes nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Any, Protocol

from mailtls.protocols.imap import COMMANDS as IMAP_COMMANDS

log = logging.getLogger("mailtls.retention")

DROP_KEYS = ("cport", "addresses", "address", "login_addresses")
REPLACE_KEYS = ("value",)  # EHLO/HELO names, IMAP ID fields
DAY = 86400.0


class Prunable(Protocol):
    def prune(self, older_than: float, transform: Any) -> int: ...


def _network(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "<pruned>"
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


IMAP_VERBS = frozenset(IMAP_COMMANDS)  # the IMAP core's own command table


def _verb_only(line: str) -> str:
    """Keep the command verb (after an IMAP tag, the tag and verb); drop every argument."""
    words = line.split(" ", 2)
    if len(words) > 1 and words[1].upper() in IMAP_VERBS:
        return f"{words[0]} {words[1]}"
    return words[0]


def scrub(record: dict[str, Any]) -> dict[str, Any]:
    """The pruned form of one record (pure)."""
    if record.get("pruned"):
        return record
    out = {k: v for k, v in record.items() if k not in DROP_KEYS}
    if isinstance(out.get("client"), str):
        out["client"] = _network(out["client"])
    for key in REPLACE_KEYS:
        if key in out:
            out[key] = "<pruned>"
    if isinstance(out.get("line"), str):
        out["line"] = _verb_only(out["line"])
    if isinstance(out.get("lines"), list):  # the sample of an unbound connection's summary
        out["lines"] = [_verb_only(line) for line in out["lines"] if isinstance(line, str)]
    if isinstance(out.get("username"), str) and out["username"].startswith("h:"):
        out["username"] = "<pruned>"
    out["pruned"] = True
    return out


def prune_once(store: Prunable, retention_days: float, now: float | None = None) -> int:
    cutoff = (time.time() if now is None else now) - retention_days * DAY
    changed = store.prune(cutoff, scrub)
    if changed:
        log.info(
            "retention: pruned identifiers from %d record(s) older than %g days",
            changed,
            retention_days,
        )
    return changed


RETRY = 600.0  # seconds before a failed prune is tried again


async def prune_periodically(
    store: Prunable, retention_days: float, every: float = DAY, retry: float = RETRY
) -> None:
    """Prune at start and then daily, in a worker thread (compaction reads the journal).

    A failed prune (a full disk, say) is logged once with its cause and tried again after
    ``retry`` seconds, for as long as it fails; it never stops the pruner."""
    failing = ""
    while True:
        try:
            await asyncio.to_thread(prune_once, store, retention_days)
        except Exception as exc:  # a task boundary: the pruner must outlive any failure
            if str(exc) != failing:
                log.error("retention pruning failed (%s); retrying every %g s", exc, retry)
                failing = str(exc)
            await asyncio.sleep(retry)
            continue
        if failing:
            log.info("retention pruning works again")
            failing = ""
        await asyncio.sleep(every)
