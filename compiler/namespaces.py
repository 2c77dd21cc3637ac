"""One name space for what a request may name: local models, peer models, selectors, pins.

A peer model answers to its fully qualified name `<peer>/<model>` (plain
concatenation, both parts may hold `/`) and, when exactly one peer offers it,
to its bare id; a bare id several peers offer means nothing (the Go original
since v250; it used to pick the first peer in sorted order).  A local id or
alias always wins over a bare peer name, so bare names may collide freely.

What cannot be told apart at request time is refused here, at compile time:
two peers producing the same full name, and a full name equal to a local model
id, a local alias (setParamsByID keys included), a selector id or a profile
pin key.  `NameSpace.resolve_base` is the base resolution selectors and
profiles use: a local model id or alias gives the model id, a peer name gives
the peer model's full name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from llama_swap.compiler.aliases import AliasTable
from llama_swap.compiler.collect import Collector
from llama_swap.compiler.plan import Model, Peer, PeerModel, peer_names


@dataclass(frozen=True)
class NameSpace:
    """The names known after models and peers are resolved."""

    aliases: AliasTable
    peers: Mapping[str, PeerModel]  # every name a peer model answers to

    @classmethod
    def build(cls, aliases: AliasTable, peers: Mapping[str, Peer]) -> NameSpace:
        return cls(aliases, peer_names(peers))

    def resolve_base(self, name: str) -> str | None:
        """A local model id (from an id or alias), a peer model's full name, or None."""
        local = self.aliases.resolve(name)
        if local is not None:
            return local
        found = self.peers.get(name)
        return f"{found.peer}/{found.model}" if found is not None else None

    def is_local(self, name: str) -> bool:
        return self.aliases.resolve(name) is not None

    def is_full_peer_name(self, name: str) -> bool:
        found = self.peers.get(name)
        return found is not None and name == f"{found.peer}/{found.model}"


def check_peer_namespace(
    c: Collector, aliases: AliasTable, peers: Mapping[str, Peer], models: Mapping[str, Model]
) -> None:
    """Report full peer names that are ambiguous or shadowed by a local model id or alias."""
    seen: dict[str, tuple[str, str]] = {}
    for pid in sorted(peers):
        for i, model in enumerate(peers[pid].models):
            fqn = f"{pid}/{model}"
            keys = ("peers", pid, "models", i)
            first = seen.get(fqn)
            if first is not None and first[0] != pid:
                c.error(
                    keys,
                    f'peer model name "{fqn}" is ambiguous between peers.{first[0]} model '
                    f'"{first[1]}" and peers.{pid} model "{model}"',
                )
                continue
            seen.setdefault(fqn, (pid, model))
            if fqn in aliases.model_ids:
                c.error(
                    ("models", fqn),
                    f'model ID "{fqn}" conflicts with fully qualified peer model name',
                )
            elif fqn in aliases.owner:
                owner = aliases.owner[fqn]
                by_id = owner in models and fqn in models[owner].filters.setParamsByID
                c.error(
                    ("models", owner, "filters", "setParamsByID", fqn)
                    if by_id
                    else ("models", owner, "aliases"),
                    f'model {owner} alias "{fqn}" conflicts with fully qualified peer model name',
                )


def check_against_peers(
    c: Collector, names: NameSpace, selectors: Iterable[str], pins: Mapping[str, Iterable[str]]
) -> None:
    """Selector ids and profile pin keys must not be full peer model names."""
    for sid in selectors:
        if names.is_full_peer_name(sid):
            c.error(
                ("selectors", sid),
                f'selector ID "{sid}" conflicts with fully qualified peer model name',
            )
    for profile, keys in pins.items():
        for pin in keys:
            if names.is_full_peer_name(pin):
                c.error(
                    ("profiles", profile, "pins", pin),
                    f'profile {profile} pin "{pin}" conflicts with fully qualified peer model name',
                )
