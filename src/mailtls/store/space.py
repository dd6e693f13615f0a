"""The free-space floor of the data disk: checked every few seconds, acted on by the store.

Below ``min_free_mb`` the store stops recording traffic that names no run (``set_low_space``),
the run manager refuses new runs (503) and one warning line is logged per check; once free
space is back above the floor (plus a margin, so it does not flap) everything resumes by itself.
Only the standard library.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Protocol

log = logging.getLogger("mailtls.store")

MB = 1024 * 1024
MARGIN = 1.1  # recover only above floor * MARGIN


class Floored(Protocol):
    data_dir: Path

    @property
    def low_space(self) -> bool: ...
    def set_low_space(self, low: bool) -> None: ...


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def check_free_space(store: Floored, min_free_mb: float) -> bool:
    """Update the store's low-space state from the disk; returns it."""
    floor = min_free_mb * MB
    if floor <= 0:
        store.set_low_space(False)
        return False
    try:
        free = free_bytes(store.data_dir)
    except OSError as exc:
        log.error("cannot check free space of %s: %s", store.data_dir, exc.strerror)
        return store.low_space
    was = store.low_space
    low = free < floor * MARGIN if was else free < floor
    store.set_low_space(low)
    if low:
        log.warning(
            "data disk %s: %.0f MB free, below the floor of %g MB: not recording unbound "
            "traffic, refusing new runs",
            store.data_dir,
            free / MB,
            min_free_mb,
        )
    elif was:
        log.info(
            "data disk %s: %.0f MB free again; recording everything", store.data_dir, free / MB
        )
    return low


async def watch_free_space(store: Floored, min_free_mb: float, every: float) -> None:
    while True:
        check_free_space(store, min_free_mb)
        await asyncio.sleep(every)
