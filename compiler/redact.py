"""Keeping secrets out of compile errors and warnings.

Diagnostics are printed on terminals and in CI logs, so they must not carry an
api key.  Keys usually come from the environment (`${env.KEY}`), which is
substituted before parsing: a message quoting a value would otherwise quote
the key.  `Redactor` rewrites messages:

- every api key (`apiKeys` items, peers' `apiKey`) becomes `***REDACTED***`
  wherever it appears; a diagnostic about one of those fields loses the
  field's value even when it is short;
- any other value taken from the environment goes back to the reference it
  came from (`${env.NAME}`), as the line is written in the file, when it is
  long enough (8 characters) not to be mistaken for ordinary words and numbers.

Source lines are printed as written (see compiler.envsubst.EnvResult), so
those never show substituted values.  Pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from llama_swap.compiler.diagnostics import Diagnostic
from llama_swap.compiler.gotext import format_value
from llama_swap.compiler.plan import REDACTED
from llama_swap.compiler.sourcemap import KeyPath

MIN_SECRET = 3  # shorter api keys are only redacted in diagnostics about their own field
MIN_ENV_VALUE = 8


def _forms(value: Any) -> set[str]:
    """The ways a message may quote a value."""
    if isinstance(value, str):
        return {value, json.dumps(value, ensure_ascii=False)[1:-1]} - {""}
    if isinstance(value, bool | int | float):
        return {format_value(value), json.dumps(value)}
    return set()


def secret_fields(doc: Mapping[str, Any]) -> list[tuple[KeyPath, Any]]:
    """Every api key in a (merged) config document, with its key path."""
    out: list[tuple[KeyPath, Any]] = []
    keys = doc.get("apiKeys")
    if isinstance(keys, list):
        out.extend((("apiKeys", i), v) for i, v in enumerate(keys))
    peers = doc.get("peers")
    if isinstance(peers, Mapping):
        for pid, peer in peers.items():
            if isinstance(peer, Mapping) and "apiKey" in peer:
                out.append((("peers", str(pid), "apiKey"), peer["apiKey"]))
    return out


class Redactor:
    """Rewrites diagnostics so that no api key and no long environment value shows."""

    def __init__(self, doc: Mapping[str, Any], env_values: Iterable[tuple[str, str]]) -> None:
        self._fields: dict[KeyPath, set[str]] = {}
        everywhere: dict[str, str] = {}
        for keys, value in secret_fields(doc):
            forms = _forms(value)
            self._fields[keys] = forms
            everywhere.update((f, REDACTED) for f in forms if len(f) >= MIN_SECRET)
        for var, value in env_values:
            for form in _forms(value):
                if len(form) >= MIN_ENV_VALUE:
                    everywhere.setdefault(form, "${env." + var + "}")
        # longest first, so a key containing another is replaced whole
        self._everywhere = sorted(everywhere.items(), key=lambda kv: -len(kv[0]))

    def __bool__(self) -> bool:
        return bool(self._fields or self._everywhere)

    def message(self, message: str, keys: KeyPath = ()) -> str:
        for form, by in self._everywhere:
            if form in message:
                message = message.replace(form, by)
        for depth in range(1, len(keys) + 1):  # the field is a prefix of the diagnostic's path
            for form in sorted(self._fields.get(keys[:depth], ()), key=len, reverse=True):
                message = message.replace(form, REDACTED)
        return message

    def diagnostic(self, d: Diagnostic) -> Diagnostic:
        message = self.message(d.message, d.keys)
        return d if message == d.message else replace(d, message=message)
