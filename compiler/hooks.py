"""`hooks.on_startup.preload`: the models to start when the server starts.

Entries are trimmed, blanks skipped, aliases resolved to model ids, order and
duplicates kept.  Unlike the original, which silently drops names it cannot
resolve, an unknown name (or a name only a peer serves) is an error: a typo
here would otherwise go unnoticed until someone wonders why nothing preloads.
"""

from __future__ import annotations

from typing import Any

from llama_swap.compiler.aliases import AliasTable
from llama_swap.compiler.collect import Collector, get_list, get_map, type_name
from llama_swap.compiler.commands import go_trim
from llama_swap.compiler.plan import Peer


def resolve_preload(
    c: Collector, doc: dict[str, Any], aliases: AliasTable, peers: dict[str, Peer]
) -> tuple[str, ...]:
    hooks = get_map(c, ("hooks",), doc.get("hooks"))
    on_startup = get_map(c, ("hooks", "on_startup"), hooks.get("on_startup"))
    keys = ("hooks", "on_startup", "preload")
    out: list[str] = []
    for i, entry in enumerate(get_list(c, keys, on_startup.get("preload"))):
        if not isinstance(entry, str):
            c.error((*keys, i), f"expected a model name, got {type_name(entry)}")
            continue
        name = go_trim(entry)
        if not name:
            continue
        model = aliases.resolve(name)
        if model is not None:
            out.append(model)
            continue
        peer = next((p.id for p in peers.values() if name in p.models), None)
        if peer is not None:
            c.error(
                (*keys, i),
                f"cannot preload '{name}': it is served by peer '{peer}', not a local model",
            )
        else:
            c.error((*keys, i), f"cannot preload '{name}': no local model or alias has that name")
    return tuple(out)
