"""JSON on the request path: orjson's speed with the standard library's meaning.

Why two codecs: the proxy parses every request body (for its model) and every answer
(for its token counts), and writes every activity row as JSON; orjson does each several
times faster than `json`.  But what a document *means* must not depend on which parser
read it: the two front doors, the filters that rewrite a body, and the Go original all
read JSON as Python's `json` does -- NaN and Infinity, lone surrogate escapes and
integers of any size included -- and orjson refuses the first two and reads a long
integer as a float.  So `loads` lets orjson read only documents where the two agree: one
with a run of 19 or more digits (a number that may not fit 64 bits) goes to `json`
directly, and one orjson refuses gets `json`'s verdict, errors included.  Small documents
(most requests and answers) gain the most; big ones go to `json` (see ORJSON_MAX).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# 19 digits in a row: maybe an integer beyond 64 bits, which orjson reads as a float.
# Found by mapping every digit to "0" and anything else to "." (two C passes over the
# bytes: several times cheaper than a regular expression, which tries every position).
_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2E for b in range(256))
_LONG_NUMBER = b"0" * 19
# Beyond this size the documents are mostly text (long prompts), which `json` scans about
# as fast, and the digit check would cost more than orjson saves.
ORJSON_MAX = 16 * 1024


def loads(raw: bytes) -> Any:
    """`json.loads(raw)`, faster for the documents orjson reads the same way."""
    if len(raw) <= ORJSON_MAX and _LONG_NUMBER not in raw.translate(_DIGITS_ONLY):
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
