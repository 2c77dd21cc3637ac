"""`${PORT}` allocation (reference §2.13.3).

Ports are handed out from `startPort` in sorted model-id order, one per model
whose `cmd` (after macro expansion) contains `${PORT}`; other models consume
none.  The port replaces `${PORT}` in cmd, cmdStop, proxy, name, description
and (as an int) metadata.  A proxy that needs `${PORT}` when cmd does not use
it is an error: the default proxy is `http://localhost:${PORT}`, so a model
with a fixed port must set `proxy` itself.  Unlike the original, a port past
65535 is an error here rather than a failure at start time.
"""

from __future__ import annotations

from collections.abc import Sequence

from compiler.collect import Collector
from compiler.macros import substitute_one
from compiler.models import ModelDraft

SLUG = "${PORT}"
MAX_PORT = 65535
PORT_FIELDS = ("cmd", "cmdStop", "proxy", "name", "description")


def allocate_ports(c: Collector, drafts: Sequence[ModelDraft], start_port: int) -> None:
    """Assign ports in place; `drafts` must be sorted by model id."""
    next_port = start_port
    for d in drafts:
        cmd_has = SLUG in d.text["cmd"]
        if not cmd_has:
            if SLUG in d.text["proxy"]:
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
            continue
        port = next_port
        next_port += 1
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
