"""Aliases: one global name space shared by model ids, aliases and peers.

A requested name resolves to a model id first, then to an alias.  Aliases are
unique across models; explicit `aliases` are registered before anything else
so they win; each `setParamsByID` key other than the model's own id becomes
an alias of that model (appended to its alias list in sorted order).  Unlike
the original, a name that a peer serves may not also be a local model id or
alias: the local one would silently shadow the peer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llama_swap.compiler.collect import Collector, get_list, type_name


@dataclass
class AliasTable:
    """alias -> model id, plus each model's alias list in registration order."""

    model_ids: frozenset[str]
    owner: dict[str, str] = field(default_factory=dict)
    by_model: dict[str, list[str]] = field(default_factory=dict)

    def resolve(self, name: str) -> str | None:
        if name in self.model_ids:
            return name
        return self.owner.get(name)

    def add(self, alias: str, model_id: str) -> None:
        self.owner[alias] = model_id
        self.by_model.setdefault(model_id, []).append(alias)

    def sorted_map(self) -> dict[str, str]:
        return {a: self.owner[a] for a in sorted(self.owner)}


def register_explicit(c: Collector, models: Mapping[str, Mapping[str, Any]]) -> AliasTable:
    """Register every model's `aliases` (models in sorted id order); report duplicates."""
    table = AliasTable(model_ids=frozenset(models))
    for mid in sorted(models):
        keys = ("models", mid, "aliases")
        table.by_model.setdefault(mid, [])
        for i, alias in enumerate(get_list(c, keys, models[mid].get("aliases"))):
            if not isinstance(alias, str):
                c.error((*keys, i), f"expected a string, got {type_name(alias)}")
                continue
            if alias in table.owner:
                other = table.owner[alias]
                where = "this model" if other == mid else f"model '{other}'"
                c.error((*keys, i), f"duplicate alias '{alias}': already used by {where}")
                continue
            if alias in table.model_ids:
                c.warn(
                    (*keys, i),
                    f"alias '{alias}' has no effect: a model with that id exists and model ids "
                    "win over aliases",
                )
            table.add(alias, mid)
    return table


def register_set_params_by_id(
    c: Collector, table: AliasTable, model_id: str, names: Iterable[str]
) -> None:
    """Make each setParamsByID key (already macro-substituted) an alias of `model_id`."""
    keys = ("models", model_id, "filters", "setParamsByID")
    for name in sorted(names):
        if name == model_id:
            continue
        if name in table.model_ids:
            c.error((*keys, name), f"key '{name}' conflicts with an existing model ID")
            continue
        owner = table.owner.get(name)
        if owner is not None:
            if owner != model_id:
                c.error(
                    (*keys, name),
                    f"duplicate alias '{name}' in filters.setParamsByID, already used by model {owner}",
                )
            continue
        table.add(name, model_id)


def check_peer_names(c: Collector, table: AliasTable, peers: Mapping[str, list[str]]) -> None:
    """A peer's model name must not be a local model id or alias."""
    for pid in sorted(peers):
        for i, name in enumerate(peers[pid]):
            keys = ("peers", pid, "models", i)
            if name in table.model_ids:
                c.error(
                    keys,
                    f"peer model '{name}' collides with the local model of the same id; "
                    "requests for it would never reach the peer",
                )
            elif name in table.owner:
                c.error(
                    keys,
                    f"peer model '{name}' collides with an alias of local model "
                    f"'{table.owner[name]}'; requests for it would never reach the peer",
                )
