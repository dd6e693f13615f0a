"""Find a run by its session code or by its share token, through public interfaces only.

The run manager answers ``get(run_id)``, ``find_by_result_token`` and ``result_token``; it has
no lookup by session code. Both lookups here read the store's ``run_created`` records (which
carry the run id and its code) incrementally: every call asks only for records newer than the
last one seen, so an unknown code or token costs one indexed query, never a scan.

The share token is a one-way function of the result token: whoever holds the shareable link
cannot derive the owner's result link (which shows addresses and client names and offers
deletion). Must not import ``mailtls.net``; uses the run manager and store only via their public
methods.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from typing import Any, Protocol


class RunRecords(Protocol):
    def query(
        self, *, types: list[str] | None = None, after_id: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]: ...


class Tokens(Protocol):
    def result_token(self, run: Any) -> str: ...


MAX_TOKEN_CHARS = 64


def share_token(result_token: str) -> str:
    """The shareable view's token: 192 bits, derived one way from the result token."""
    digest = hashlib.sha256(b"mailtls share view\x00" + result_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode("ascii")


class RunIndex:
    """session code -> run id and share token -> run id, learnt from ``run_created`` records."""

    def __init__(self, store: Any, manager: Any) -> None:
        self._store = store
        self._manager = manager
        self._lock = threading.Lock()
        self._last_id = 0
        self._by_code: dict[str, str] = {}
        self._by_share: dict[str, str] = {}

    def _refresh(self) -> None:
        with self._lock:
            records = self._store.query(types=["run_created"], after_id=self._last_id)
            for record in records:
                self._last_id = max(self._last_id, int(record.get("id", 0)))
                run_id, code = record.get("run"), record.get("code")
                if not isinstance(run_id, str):
                    continue
                if isinstance(code, str):
                    self._by_code[code] = run_id
                self._by_share[share_token(self._manager.result_token(run_id))] = run_id

    def run_id_for_code(self, code: str) -> str | None:
        if code not in self._by_code:
            self._refresh()
        return self._by_code.get(code)

    def run_id_for_share(self, token: str) -> str | None:
        if len(token) > MAX_TOKEN_CHARS:
            return None
        if token not in self._by_share:
            self._refresh()
        return self._by_share.get(token)
