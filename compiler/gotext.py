"""Scalars as text, the way the Go original prints them with `%v`.

Config values that are numbers or booleans end up in strings (a macro's value
in a command line, an int where a string is expected); they must read exactly
as the Go program would have written them, so that a config behaves the same
under both implementations.  A leaf module: it imports nothing of the compiler.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any


def format_float(value: float) -> str:
    """A float as Go's `%v` prints it: shortest digits, exponent form outside [1e-4, 1e6)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    # value = 0.ds * 10**dp
    dp = len(digits) + exponent
    exp = dp - 1
    neg = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{neg}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if dp <= 0:
        return f"{neg}0.{'0' * -dp}{ds}"
    if dp >= len(ds):
        return f"{neg}{ds}{'0' * (dp - len(ds))}"
    return f"{neg}{ds[:dp]}.{ds[dp:]}"


def format_value(value: Any) -> str:
    """A scalar as text, as Go's `%v` formats it (`true`, `0.7`, `1e+06`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_float(value)
    return str(value)
