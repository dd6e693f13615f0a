"""Journal line encoding: one record as one compact JSON object, ``id`` first, then ``ts``.

Uses ``orjson`` when it is installed (several times faster than ``json``), else a ``json`` C
encoder built once. Both give compact JSON that ``json.loads`` reads back to the same record;
``orjson`` writes non-ASCII characters as UTF-8 where ``json`` writes ``\\uXXXX`` escapes. Whatever
``orjson`` refuses or would treat differently from ``json`` (lone surrogates from undecodable client
bytes, integers beyond 64 bits, non-string keys, ``str``/``int`` subclasses, dataclasses) is
encoded by ``json`` instead, so the accepted records and their meaning do not depend on
whether ``orjson`` is installed (except NaN and infinities, which ``orjson`` writes as ``null``:
not JSON either way, and records hold none). Only the standard library (and optionally ``orjson``).
"""

from __future__ import annotations

import json
import time
from json.encoder import encode_basestring_ascii
from typing import Any


def _optional_orjson() -> Any:
    try:
        import orjson
    except ImportError:
        return None
    return orjson


_orjson: Any = _optional_orjson()  # optional speed-up, see the module docstring
BACKEND = "orjson" if _orjson is not None else "json"

_json_encoder = json.JSONEncoder(separators=(",", ":"))
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
# the C encoder JSONEncoder.encode builds on every call, built once (same arguments)
_json_chunks: Any = (
    _c_make_encoder(
        {}, _json_encoder.default, encode_basestring_ascii, None, ":", ",", False, False, True
    )
    if _c_make_encoder is not None
    else None
)


def _json_bytes(obj: Any) -> bytes:
    if _json_chunks is not None:
        return "".join(_json_chunks(obj, 0)).encode()
    return _json_encoder.encode(obj).encode()


if _orjson is not None:
    _dumps = _orjson.dumps
    _OPTS = (
        _orjson.OPT_PASSTHROUGH_DATACLASS
        | _orjson.OPT_PASSTHROUGH_DATETIME
        | _orjson.OPT_PASSTHROUGH_SUBCLASS
    )
    _ORJSON_ERROR: type[Exception] = _orjson.JSONEncodeError

    def dumps(obj: Any) -> bytes:
        """Compact JSON of ``obj`` (see the module docstring for the backends)."""
        try:
            data: bytes = _dumps(obj, None, _OPTS)
        except _ORJSON_ERROR:
            return _json_bytes(obj)
        return data

else:
    dumps = _json_bytes


def encode_line(rid: int, record: dict[str, Any]) -> tuple[bytes, Any]:
    """The journal line (no newline) of ``record`` as record ``rid``, and its ``ts``.

    ``id`` comes first, then ``ts`` (now, unless the record has one), then the record's fields in
    their order. The record's own ``id`` (and a ``ts`` of None) is replaced.
    """
    ts = record.get("ts")
    if "id" in record or ("ts" in record and ts is None):
        record = {k: v for k, v in record.items() if k != "id" and (k != "ts" or ts is not None)}
    body = dumps(record)
    if ts is None:
        ts = time.time()
        head = b'{"id":%d,"ts":%s' % (rid, repr(ts).encode())
    else:
        head = b'{"id":%d' % rid
    if body == b"{}":
        return head + b"}", ts
    return head + b"," + body[1:], ts
