"""Shared test helpers.

``require_tool(name)``: skip when a system program is missing on a developer's laptop, but fail
when ``MAILTLS_REQUIRE_SYSTEM=1`` (CI), so a missing install step can never pass silently.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(*names: str) -> str:
    """Return the path of the first program found among ``names``; skip or fail if none."""
    for name in names:
        path = shutil.which(name) or (
            f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
        )
        if path:
            return path
    msg = f"system program {' or '.join(names)} is not installed"
    if os.environ.get("MAILTLS_REQUIRE_SYSTEM") == "1":
        pytest.fail(msg + " (MAILTLS_REQUIRE_SYSTEM=1)")
    pytest.skip(msg)
