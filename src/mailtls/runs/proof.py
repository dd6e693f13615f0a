"""Whether a credential a client presented is a run's own: its password, or the CRAM-MD5 digest
of it. Only such a login is evidence for the run; the username alone travels in the clear.

Comparisons are constant-time (``hmac.compare_digest``); nothing is kept. Imports only
``mailtls.protocols.base`` (the ``Credential`` type).
"""

from __future__ import annotations

import hashlib
import hmac

from mailtls.protocols.base import Credential


def presents(password: str, credential: Credential) -> bool:
    """Whether ``credential`` proves knowledge of ``password`` (the run's derived password)."""
    expected = password.encode("utf-8")
    if credential.password is not None:
        return hmac.compare_digest(credential.password, expected)
    if credential.challenge is not None and credential.response is not None:
        digest = hmac.new(expected, credential.challenge, hashlib.md5).hexdigest().encode()
        return hmac.compare_digest(credential.response.strip().lower(), digest)
    return False
