"""JSON on the request path: orjson's speed with the standard library's meaning.

Why two codecs: the proxy parses every request body (for its model) and every answer
(for its token counts), and writes every activity row as JSON; orjson does each several
times faster than `json`.  But what a document *means* must not depend on which parser
read it: the two front doors, the filters that rewrite a body, and the Go original all
read JSON as Python's `json` does -- NaN and Infinity, lone surrogate escapes and
integers of any size included -- and orjson refuses the first two and reads a long
integer as a float.  So `loads` lets orjson read only documents where the two agree: one
with a run of 19 or more digits (a number that may not fit 64 bits) goes to `json`
directly, and one orjson refuses gets `json`'s verdict, errors included.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# 19 digits in a row: maybe an integer beyond 64 bits, which orjson reads as a float
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


def loads(raw: bytes) -> Any:
    """`json.loads(raw)`, faster for the documents orjson reads the same way."""
    if _LONG_NUMBER.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # json decides: it may accept (NaN, a lone surrogate) or raise its error
    return json.loads(raw)


def dumps(value: Any, *, sort_keys: bool = False) -> str:
    """Compact JSON text, non-ASCII kept as is.  Unlike `json.dumps`, NaN and the
    infinities are written as null (callers write only finite figures); values orjson
    cannot write (an integer beyond 64 bits, a lone surrogate) get `json.dumps`'s text."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0).decode()
    except TypeError:  # orjson.JSONEncodeError: a long integer, a lone surrogate, ...
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)
