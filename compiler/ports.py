"""`${PORT}` allocation.

Ports are handed out from `startPort` in sorted model-id order, one per model
whose `cmd` (after macro expansion) contains `${PORT}`; other models consume
none.  The port replaces `${PORT}` in cmd, cmdStop, proxy, checkEndpoint, name,
description and every other field of the model but its aliases (as an int where
a value is exactly `${PORT}`).  A proxy that needs `${PORT}` when cmd does not use
it is an error: the default proxy is `http://localhost:${PORT}`, so a model
with a fixed port must set `proxy` itself.  Unlike the original, a port past
65535 is an error here rather than a failure at start time.

Optional `hints` (used by hot reload, never by `swap-compile`) keep a running
model's port when other models are added or removed; see `allocate_ports`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from llama_swap.compiler.collect import Collector
from llama_swap.compiler.macros import substitute_one
from llama_swap.compiler.models import ModelDraft
from llama_swap.compiler.plan import Plan

SLUG = "${PORT}"
MAX_PORT = 65535
PORT_FIELDS = ("cmd", "cmdStop", "proxy", "checkEndpoint", "name", "description")
# Model keys whose `${PORT}` is not substituted from the raw value: the text fields above
# and metadata (drafted separately), and the keys that name the model (resolved earlier).
_RAW_SKIPPED = frozenset({*PORT_FIELDS, "metadata", "macros", "aliases"})


def _claim_hints(
    users: Sequence[ModelDraft], start_port: int, hints: Mapping[str, int] | None
) -> tuple[dict[str, int], set[int]]:
    """The hinted ports models keep (first come in id order), and the set of them."""
    claimed: dict[str, int] = {}
    taken: set[int] = set()
    for d in users:
        hint = (hints or {}).get(d.id)
        if (
            isinstance(hint, int)
            and not isinstance(hint, bool)
            and start_port <= hint <= MAX_PORT
            and hint not in taken
        ):
            claimed[d.id] = hint
            taken.add(hint)
    return claimed, taken


def _report_port_without_cmd(c: Collector, d: ModelDraft) -> None:
    """A proxy that needs ${PORT} when cmd has none cannot be resolved."""
    if SLUG not in d.text["proxy"]:
        return
    d.reported.add("proxy")
    c.error(
        ("models", d.id, "proxy"),
        "proxy uses ${PORT} but cmd does not - ${PORT} is only available when used "
        "in cmd"
        + (
            ""
            if "proxy" in d.raw
            else " (the default proxy is http://localhost:${PORT}; "
            "set proxy explicitly or use ${PORT} in cmd)"
        ),
    )


def _apply_port(c: Collector, d: ModelDraft, port: int) -> None:
    """Substitute `port` for ${PORT} in the draft's fields and metadata."""
    if port > MAX_PORT:
        d.reported.add("proxy")
        c.error(
            ("models", d.id, "cmd"),
            f"no port left for ${{PORT}}: it would be {port}, above {MAX_PORT} (lower startPort)",
        )
    d.port = port
    for name in PORT_FIELDS:
        d.text[name] = d.text[name].replace(SLUG, str(port))
    d.metadata = substitute_one(d.metadata, "PORT", port)
    # Every other field of the model too (env, ttl, useModelName, setParams, ...), typed.
    d.raw = {k: v if k in _RAW_SKIPPED else _port_into(k, v, port) for k, v in d.raw.items()}


def _port_into(key: str, value: object, port: int) -> object:
    if key == "filters" and isinstance(value, dict):
        return {
            fk: fv if fk == "setParamsByID" else substitute_one(fv, "PORT", port)
            for fk, fv in value.items()
        }
    return substitute_one(value, "PORT", port)


def allocate_ports(
    c: Collector,
    drafts: Sequence[ModelDraft],
    start_port: int,
    hints: Mapping[str, int] | None = None,
) -> None:
    """Assign ports in place; `drafts` must be sorted by model id.

    `hints` (model id -> port, e.g. the ports of the plan running before a
    reload) make ports sticky: a model that uses `${PORT}` keeps its hinted
    port when it lies in [startPort, 65535] and no model earlier in id order
    claimed it; every other model takes the lowest number from startPort up
    that no hinted model claimed.  Without hints this is the original's
    allocation: consecutive numbers in sorted id order.
    """
    claimed, taken = _claim_hints([d for d in drafts if SLUG in d.text["cmd"]], start_port, hints)
    next_port = start_port
    for d in drafts:
        if SLUG not in d.text["cmd"]:
            _report_port_without_cmd(c, d)
            continue
        if d.id in claimed:
            port = claimed[d.id]
        else:
            while next_port in taken:
                next_port += 1
            port = next_port
            next_port += 1
        _apply_port(c, d, port)


def derive_ports(plan: Plan) -> dict[str, int]:
    """Best guess of each model's `${PORT}` in a plan (which does not record it).

    A model's port is taken to be its proxy URL's port when that number also
    appears in its command, which holds for the default proxy
    (`http://localhost:${PORT}`) and for any proxy written with `${PORT}`.
    Only for `port_hints`: a wrong guess costs stickiness, never correctness.
    """
    out: dict[str, int] = {}
    for mid, m in plan.models.items():
        try:
            port = urlsplit(m.proxy).port
        except ValueError:
            continue
        if port is not None and str(port) in " ".join(m.cmd):
            out[mid] = port
    return out
