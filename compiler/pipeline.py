"""The compiler pipeline: fragments in, a frozen plan (or one CompileError with everything) out.

Per fragment: `${env.X}` substitution -> YAML parse with locations; then merge
of all fragments -> schema validation -> resolution (compiler.resolve) into
the plan.  Every stage collects diagnostics instead of stopping at the first;
the stages up to validation all run, so one run reports env, syntax, merge
and schema problems together.  Resolution builds the plan only from a clean,
schema-valid document; on an invalid one it still runs for its cross-reference
checks, keeping only findings about entities with no error yet.  Diagnostics the resolver raises carry a
key path but no location; we fill it in from the merged source map (nearest
existing ancestor).

`compile_sources` is pure; `compile_paths` adds the file reading of
compiler.load.  Any exception other than CompileError is a compiler bug.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, NoReturn, Protocol

from llama_swap.compiler.diagnostics import CompileError, Diagnostic, Location
from llama_swap.compiler.envsubst import EnvResult, substitute_env_traced
from llama_swap.compiler.load import config_schema, load_paths
from llama_swap.compiler.macro_tree import apply_macros
from llama_swap.compiler.merge import merge_fragments
from llama_swap.compiler.parse import ParsedSource, parse_source
from llama_swap.compiler.plan import Plan, Source
from llama_swap.compiler.redact import Redactor
from llama_swap.compiler.resolve import ModelStages, resolve
from llama_swap.compiler.sourcemap import KeyPath, SourceMap, display_path
from llama_swap.compiler.validate import ValidMemo, drop_empty_settings, validate


class CompileCache(ModelStages, Protocol):
    """What a cache kept between compiles (compiler.session.CompileSession) offers the pipeline.

    Declared here, on the side that uses it, so the pipeline needs nothing from
    the session module and the session can build on the pipeline.
    """

    def generation(self) -> AbstractContextManager[None]:
        """Held around one compile: the cache's lock and its bookkeeping of what was used."""
        ...

    def fragment(
        self, name: str, text: str, digest: str, env: Mapping[str, str]
    ) -> tuple[EnvResult, ParsedSource]: ...

    def valid_memo(self) -> ValidMemo: ...

    def count_valid_hits(self, memo: ValidMemo) -> None: ...


@dataclass(frozen=True, slots=True)
class CompileResult:
    plan: Plan
    warnings: tuple[Diagnostic, ...] = ()
    # Source texts as written (before env substitution), by file name, for excerpts.
    texts: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    # Model id -> the port `${PORT}` became; filled when a session or port_hints is given
    # (the plan itself does not record ports).
    ports: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)


def _resolve(
    doc: Mapping[str, Any], sources: tuple[Source, ...], **options: Any
) -> tuple[Plan, list[Diagnostic]]:
    """The one call into the back end (compiler.resolve); a seam tests use to fake a bug."""
    return resolve(doc, sources, **options)


_PATH_TOKEN = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def _keys_for(d: Diagnostic, smap: SourceMap) -> KeyPath:
    """The tuple key path of a diagnostic; a dotted path is matched greedily against the map."""
    if d.keys:
        return d.keys
    if not d.path:
        return ()
    tokens: list[str | int] = [
        int(idx) if idx else name for idx, name in _PATH_TOKEN.findall(d.path)
    ]
    keys: KeyPath = ()
    i = 0
    while i < len(tokens):
        if isinstance(tokens[i], int):
            keys, i = (*keys, tokens[i]), i + 1
            continue
        for j in range(len(tokens), i, -1):  # longest run of names first: ids may hold dots
            run = tokens[i:j]
            if any(isinstance(t, int) for t in run):
                continue
            candidate = (*keys, ".".join(str(t) for t in run))
            if candidate in smap or j == i + 1:
                keys, i = candidate, j
                break
    return keys


def _locate(diags: Sequence[Diagnostic], smap: SourceMap) -> list[Diagnostic]:
    out = []
    for d in diags:
        if d.location is None or d.location.line == 0:
            keys = _keys_for(d, smap)
            loc = smap.lookup(keys) or d.location
            d = replace(d, location=loc, keys=keys, path=d.path or display_path(keys))
        out.append(d)
    return out


def _not_under(diags: list[Diagnostic], reported: list[KeyPath]) -> list[Diagnostic]:
    """Drop schema complaints about values already reported (e.g. an unset `${env.X}` left literal)."""
    if not reported:
        return diags
    seen = set(reported)  # a path is "under" a reported one when one of its prefixes is one
    return [d for d in diags if not any(d.keys[:i] in seen for i in range(len(d.keys) + 1))]


def _scope(keys: KeyPath) -> KeyPath:
    """The entity a key path belongs to: one model, peer or group, the matrix, or a setting."""
    if keys[:4] in (
        ("routing", "router", "settings", "groups"),
        ("routing", "router", "settings", "matrix"),
    ):
        return keys[:5] if keys[3] == "groups" else keys[:4]
    if keys[:1] in (
        ("models",),
        ("peers",),
        ("groups",),
        ("profiles",),
        ("macros",),
        ("selectors",),
    ):
        return keys[:2]
    return keys[:1]


def _cross_checks_anyway(
    doc: Mapping[str, Any],
    smap: SourceMap,
    found: Sequence[Diagnostic],
    macro_leftovers: Sequence[Diagnostic] = (),
) -> list[Diagnostic]:
    """Resolver findings on a schema-invalid document, so one run reports everything.

    The resolver reads every value defensively, but what it says about an
    entity (a model, peer, group, macro, the matrix, a setting) that already has an
    error is a consequence of that error, so those findings are dropped; what
    it says about the other entities (unknown group members, alias clashes,
    unknown macros, ...) is kept.  Unknown keys do not count: the resolver
    ignores them; nor do macros left in a value (compiler.macro_tree): the
    resolver's findings about the same entity are kept, except those about
    the very value holding the leftover.  Runs only when every fragment parsed (a missing fragment
    would make references to its models look wrong).
    """
    leftovers = set(macro_leftovers)
    bad = [
        _scope(d.keys)
        for d in found
        if d.severity == "error"
        and d.keys
        and not d.message.startswith("unknown key '")
        and d not in leftovers
    ]
    try:
        _, extra = _resolve(doc, ())
    except CompileError as exc:
        extra = list(exc.diagnostics)
    except Exception:  # noqa: BLE001 - best effort: the errors already found get reported
        return []
    extra = _not_under(list(extra), [d.keys for d in leftovers if d.keys])
    bad_set = set(bad)
    above_bad = {b[:i] for b in bad for i in range(len(b) + 1)}  # every prefix of a bad scope
    out = []
    for d in _locate(extra, smap):
        scope = _scope(d.keys)
        # skip when the scope contains a bad one, or lies inside one
        if not scope or scope in above_bad or any(scope[:i] in bad_set for i in range(len(scope))):
            continue
        out.append(d)
    return out


@lru_cache(maxsize=1)
def _known_top_keys() -> frozenset[str]:
    """The top-level keys the schema describes (macro leftovers are checked only there)."""
    return frozenset(config_schema().get("properties", {}))


def _finish(diags: list[Diagnostic], strict: bool) -> list[Diagnostic]:
    """Apply --strict and drop exact duplicates, keeping order."""
    if strict:
        diags = [replace(d, severity="error") if d.severity == "warning" else d for d in diags]
    return list(dict.fromkeys(diags))


class _Output:
    """What a user is shown: locations in the files as written, and no secrets.

    Parsing and everything after it see the text after `${env.X}` substitution;
    diagnostics are moved back to the written text (a substituted value may be
    longer or shorter than its reference) and their messages redacted
    (compiler.redact), so neither the excerpt nor the message shows a value
    taken from the environment.
    """

    def __init__(
        self, texts: Mapping[str, str], written: Mapping[str, EnvResult], doc: Mapping[str, Any]
    ) -> None:
        self.texts = texts
        self._moved = {name: r for name, r in written.items() if r.substituted}
        # env problems are found on the written text already
        self._as_written = {d for r in written.values() for d in r.diagnostics}
        env_values = [(s.var, s.value) for r in written.values() for s in r.substituted]
        self._redactor = Redactor(doc, env_values)

    def _where(self, loc: Location | None) -> Location | None:
        r = self._moved.get(loc.file) if loc is not None else None
        return r.written_location(loc) if r is not None and loc is not None else loc

    def present(self, diags: Sequence[Diagnostic]) -> list[Diagnostic]:
        if not self._moved and not self._redactor:
            return list(diags)
        out = []
        for d in diags:
            if d not in self._as_written:
                d = replace(d, location=self._where(d.location), related=self._where(d.related))
            out.append(self._redactor.diagnostic(d))
        return out


def _raise(diags: list[Diagnostic], out: _Output) -> NoReturn:
    error = CompileError(out.present(diags))
    error.texts = dict(out.texts)  # type: ignore[attr-defined]
    raise error


def _compile(
    files: Sequence[tuple[str, str, str]],
    env: Mapping[str, str] | None,
    strict: bool,
    port_hints: Mapping[str, int] | None = None,
    session: CompileCache | None = None,
) -> CompileResult:
    env = os.environ if env is None else env
    diags: list[Diagnostic] = []
    parsed: list[ParsedSource] = []
    texts: dict[str, str] = {}
    written: dict[str, EnvResult] = {}
    for name, text, digest in files:
        if session is not None:
            subst, source = session.fragment(name, text, digest, env)
        else:
            subst = substitute_env_traced(name, text, env)
            source = parse_source(name, subst.text)
        texts[name] = text
        written[name] = subst
        diags.extend(subst.diagnostics)
        diags.extend(source.diagnostics)
        parsed.append(source)

    doc, smap, conflicts = merge_fragments(parsed)
    out = _Output(texts, written, doc)
    diags.extend(_not_under(conflicts, [d.keys for d in diags if d.keys]))
    doc = drop_empty_settings(doc)
    doc, leftovers = apply_macros(doc, _known_top_keys())
    leftovers = _locate(leftovers, smap)
    diags.extend(leftovers)
    memo = session.valid_memo() if session is not None else None
    found = validate(doc, smap, strict=strict, memo=memo)
    if session is not None and memo is not None:
        session.count_valid_hits(memo)
    diags.extend(_not_under(found, [d.keys for d in diags if d.keys]))
    diags = _finish(diags, strict)
    if any(d.severity == "error" for d in diags):
        if not any(s.diagnostics for s in parsed):
            diags.extend(_cross_checks_anyway(doc, smap, diags, leftovers))
        _raise(_finish(diags, strict), out)

    sources = tuple(Source(name, digest) for name, _, digest in files)
    ports: dict[str, int] = {}
    extra: dict[str, Any] = {}
    if session is not None or port_hints is not None:
        extra = {"port_hints": port_hints, "stages": session, "ports_out": ports}
    try:
        plan, resolved = _resolve(doc, sources, **extra)
    except CompileError as exc:
        _raise(_finish(diags + _locate(exc.diagnostics, smap), strict), out)
    diags = _finish(diags + _locate(resolved, smap), strict)
    if any(d.severity == "error" for d in diags):
        _raise(diags, out)
    warnings = tuple(sorted(out.present(diags), key=Diagnostic.sort_key))
    return CompileResult(plan=plan, warnings=warnings, texts=texts, ports=ports)


def compile_files(
    files: Sequence[tuple[str, str, str]],
    *,
    env: Mapping[str, str] | None = None,
    strict: bool = False,
    port_hints: Mapping[str, int] | None = None,
    session: CompileCache | None = None,
) -> CompileResult:
    """Compile (name, text, sha256) fragments in merge order.

    `port_hints` (model id -> port) make `${PORT}` numbers sticky (compiler.ports,
    for hot reload); `session` (compiler.session) reuses work from earlier
    compiles without changing the result.  With either, `CompileResult.ports`
    holds each model's allocated port.
    """
    with session.generation() if session is not None else nullcontext():
        return _compile(files, env, strict, port_hints, session)


def compile_sources(
    sources: Sequence[tuple[str, str]],
    *,
    env: Mapping[str, str] | None = None,
    strict: bool = False,
    port_hints: Mapping[str, int] | None = None,
    session: CompileCache | None = None,
) -> CompileResult:
    """Compile (name, text) fragments in merge order; `env` defaults to os.environ."""
    return compile_files(
        hashed_files(sources), env=env, strict=strict, port_hints=port_hints, session=session
    )


def compile_paths(
    config: str | None,
    config_dir: str | None,
    *,
    strict: bool = False,
    env: Mapping[str, str] | None = None,
    port_hints: Mapping[str, int] | None = None,
    session: CompileCache | None = None,
) -> CompileResult:
    """Read --config / --config-dir (compiler.load) and compile them."""
    return compile_files(
        read_files(config, config_dir),
        env=env,
        strict=strict,
        port_hints=port_hints,
        session=session,
    )


def hashed_files(sources: Sequence[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(name, text) fragments as the (name, text, sha256) triples `compile_files` takes."""
    return [
        (name, text, hashlib.sha256(text.encode("utf-8")).hexdigest()) for name, text in sources
    ]


def read_files(config: str | None, config_dir: str | None) -> list[tuple[str, str, str]]:
    """--config / --config-dir read (compiler.load) into the triples `compile_files` takes."""
    return [(f.path, f.text, f.sha256) for f in load_paths(config, config_dir)]
