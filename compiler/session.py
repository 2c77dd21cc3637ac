"""A compile session: the same compiler, remembering work between compiles of one config.

Why: hot reload recompiles a config of hundreds of models in dozens of fragments
when one fragment changed.  Most of the work (parsing the unchanged fragments,
checking the unchanged models against the schema, resolving them, serialising
them for the plan digest) gives the same answer as last time.  A
`CompileSession` (the runtime's reloader keeps one) remembers those answers,
keyed by everything each one depends on:

- a fragment's env substitution and parse: (file name, sha256 of its text, the
  values of the `${env.X}` variables it names);
- a model's schema check: the model's canonical JSON (only *valid* results are
  remembered: an invalid model is checked afresh, so its errors are unchanged);
- a model's first resolve pass: (id, its canonical JSON, the global macros, the
  broken global macro names); its second pass additionally the allocated port,
  what the port stage reported, `globalTTL`, `sendLoadingState` and `unloadTimeout`.  The alias
  registration between the two halves of the second pass involves other models
  and always runs;
- a model's JSON text in the plan: the `Model` object itself (unchanged models
  come out of the cache as the very same object).

Invariant: a session's result (plan JSON, warnings, errors) is byte-identical to
`compiler.pipeline`'s without a session (tests/compiler/test_session.py).
Entries not used by the latest successful compile are dropped at the next one.
A session is not for concurrent use; a lock serialises callers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from llama_swap.compiler import models as model_stage
from llama_swap.compiler.aliases import AliasTable, register_set_params_by_id
from llama_swap.compiler.collect import Collector
from llama_swap.compiler.diagnostics import Diagnostic
from llama_swap.compiler.envsubst import ENV_REF, EnvResult, substitute_env_traced
from llama_swap.compiler.macros import Macro
from llama_swap.compiler.merge import IDENTITY_MAPS
from llama_swap.compiler.models import ModelDraft
from llama_swap.compiler.parse import ParsedSource, parse_source
from llama_swap.compiler.pipeline import CompileResult, compile_paths, compile_sources
from llama_swap.compiler.plan import Capabilities, Model, Plan, Settings, model_json, plan_to_json
from llama_swap.compiler.sourcemap import KeyPath
from llama_swap.compiler.validate import ValidMemo

K = TypeVar("K")
V = TypeVar("V")
_MISSING: Any = object()
# Rotate anyway after this many failed compiles in a row (bounds memory).
_MAX_FAILED_GENERATIONS = 3


class _GenCache(Generic[K, V]):
    """A dict that forgets what one generation (one compile) did not use."""

    __slots__ = ("cur", "prev")

    def __init__(self) -> None:
        self.cur: dict[K, V] = {}
        self.prev: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        value = self.cur.get(key, _MISSING)
        if value is _MISSING:
            value = self.prev.pop(key, _MISSING)
            if value is _MISSING:
                return None
            self.cur[key] = value
        return value  # type: ignore[no-any-return]

    def put(self, key: K, value: V) -> None:
        self.cur[key] = value

    def rotate(self) -> None:
        self.prev, self.cur = self.cur, {}

    def __len__(self) -> int:
        return len(self.cur) + len(self.prev)


class _KeySet:
    """The set interface ValidMemo needs, over a generation cache."""

    def __init__(self, cache: _GenCache[str, bool]) -> None:
        self._cache = cache

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._cache.get(key) is not None

    def add(self, key: str) -> None:
        self._cache.put(key, True)


def _spine_copy(value: Any, path: KeyPath = ()) -> Any:
    """A copy of a fragment's value that merging may mutate, sharing every entity.

    The merge mutates only mappings that are not entities (it adds keys to them);
    an entity (a model, a peer, a group...) is inserted whole and never changed,
    and lists are concatenated into new lists.  So copying the mappings down to
    the identity maps is enough to keep a cached fragment pristine.
    """
    if not isinstance(value, dict):
        return value
    if path in IDENTITY_MAPS:
        return dict(value)
    return {k: _spine_copy(v, (*path, k)) for k, v in value.items()}


@dataclasses.dataclass(frozen=True, slots=True)
class _Fragment:
    env: EnvResult
    parsed: ParsedSource


@dataclasses.dataclass(frozen=True, slots=True)
class _Finished:
    capabilities: Capabilities
    before_aliases: tuple[Diagnostic, ...]
    model: Model
    after_aliases: tuple[Diagnostic, ...]


class CompileSession:
    """Compile entry points like compiler.pipeline's, reusing unchanged work; see the module doc."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._fragments: _GenCache[tuple[str, str, tuple[tuple[str, str | None], ...]], _Fragment]
        self._fragments = _GenCache()
        self._valid: _GenCache[str, bool] = _GenCache()
        self._prepared: _GenCache[tuple[Any, ...], tuple[ModelDraft, tuple[Diagnostic, ...]]]
        self._prepared = _GenCache()
        self._finished: _GenCache[tuple[Any, ...], _Finished] = _GenCache()
        self._model_text: _GenCache[int, tuple[Model, str]] = _GenCache()
        self._caches: tuple[_GenCache[Any, Any], ...] = (
            self._fragments,
            self._valid,
            self._prepared,
            self._finished,
            self._model_text,
        )
        self._failed_in_a_row = 0
        self._rotate_next = False
        self._keys: dict[int, tuple[Any, str | None]] = {}  # per compile: id -> (obj, JSON)
        self.stats: dict[str, int] = dict.fromkeys(
            ("compiles", "fragment_hits", "valid_hits", "prepare_hits", "finish_hits", "json_hits"),
            0,
        )

    # -- entry points ------------------------------------------------------------------------

    def compile_paths(
        self,
        config: str | None,
        config_dir: str | None,
        *,
        strict: bool = False,
        env: Mapping[str, str] | None = None,
        port_hints: Mapping[str, int] | None = None,
    ) -> CompileResult:
        """`compiler.pipeline.compile_paths` through this session; result `.ports` is filled."""
        return compile_paths(
            config, config_dir, strict=strict, env=env, port_hints=port_hints, session=self
        )

    def compile_sources(
        self,
        sources: Sequence[tuple[str, str]],
        *,
        env: Mapping[str, str] | None = None,
        strict: bool = False,
        port_hints: Mapping[str, int] | None = None,
    ) -> CompileResult:
        """`compiler.pipeline.compile_sources` through this session; result `.ports` is filled."""
        return compile_sources(sources, env=env, strict=strict, port_hints=port_hints, session=self)

    def plan_json(self, plan: Plan) -> str:
        """`compiler.plan.plan_to_json(plan)`, reusing the text of models seen before."""
        with self._lock:
            return plan_to_json(plan, model_text=self._text_of)

    def plan_digest(self, plan: Plan) -> str:
        """sha256 (hex) of `plan_json(plan)`: the digest `swap-compile`'s output has."""
        return hashlib.sha256(self.plan_json(plan).encode("utf-8")).hexdigest()

    # -- the generation ----------------------------------------------------------------------

    @contextmanager
    def generation(self) -> Iterator[None]:
        """One compile: entries the previous successful compile did not use are forgotten first.

        A failed compile keeps the previous generation (the next edit usually
        fixes the error and needs those entries), but only for a few failures in
        a row, so a config that keeps failing cannot grow the caches for ever.
        """
        with self._lock:
            if self._rotate_next or self._failed_in_a_row >= _MAX_FAILED_GENERATIONS:
                for cache in self._caches:
                    cache.rotate()
                self._failed_in_a_row = 0
            self._keys = {}
            self.stats["compiles"] += 1
            try:
                yield
            except BaseException:
                self._failed_in_a_row += 1
                self._rotate_next = False
                raise
            finally:
                self._keys = {}
            self._rotate_next = True

    def key_of(self, value: Any) -> str | None:
        """Canonical JSON of a plain value (order-preserving; None when not JSON), memoised by id."""
        hit = self._keys.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        try:
            key: str | None = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            key = None
        self._keys[id(value)] = (value, key)
        return key

    # -- hooks used by compiler.pipeline ------------------------------------------------------

    def fragment(
        self, name: str, text: str, digest: str, env: Mapping[str, str]
    ) -> tuple[EnvResult, ParsedSource]:
        """Env substitution and parse of one fragment (cached); the value is safe to merge."""
        names = sorted(set(ENV_REF.findall(text))) if "${env." in text else []
        key = (name, digest, tuple((n, env.get(n)) for n in names))
        hit = self._fragments.get(key)
        if hit is None:
            subst = substitute_env_traced(name, text, env)
            hit = _Fragment(subst, parse_source(name, subst.text))
            self._fragments.put(key, hit)
        else:
            self.stats["fragment_hits"] += 1
        p = hit.parsed
        mergeable = ParsedSource(p.name, _spine_copy(p.value), p.smap, list(p.diagnostics))
        env_result = dataclasses.replace(hit.env, diagnostics=list(hit.env.diagnostics))
        return env_result, mergeable

    def valid_memo(self) -> ValidMemo:
        memo = ValidMemo(self.key_of, _KeySet(self._valid))
        return memo

    def count_valid_hits(self, memo: ValidMemo) -> None:
        self.stats["valid_hits"] += memo.hits

    # -- compiler.resolve's ModelStages --------------------------------------------------------

    def prepare(
        self, c: Collector, mid: str, raw_value: Any, global_macros: list[Macro], broken: set[str]
    ) -> ModelDraft:
        raw_key = self.key_of(raw_value) if isinstance(raw_value, dict) else None
        macros_key = self.key_of(global_macros)
        if raw_key is None or macros_key is None:
            return model_stage.prepare(c, mid, raw_value, global_macros, broken)
        key = (mid, raw_key, macros_key, tuple(sorted(broken)))
        hit = self._prepared.get(key)
        if hit is None:
            sub = Collector()
            draft = model_stage.prepare(sub, mid, raw_value, global_macros, broken)
            draft.cache_key = key
            hit = (draft, tuple(sub.diagnostics))
            self._prepared.put(key, hit)
        else:
            self.stats["prepare_hits"] += 1
        draft, diags = hit
        c.diagnostics.extend(diags)
        # allocate_ports rewrites text, reported, port and metadata: hand out a copy
        return dataclasses.replace(draft, text=dict(draft.text), reported=set(draft.reported))

    def finish(self, c: Collector, d: ModelDraft, settings: Settings, aliases: AliasTable) -> Model:
        if d.cache_key is None:
            return model_stage.finish(c, d, settings, aliases)
        key = (
            d.cache_key,
            d.port,
            tuple(sorted(d.reported)),
            settings.globalTTL,
            settings.sendLoadingState,
            settings.unloadTimeout,
        )
        hit = self._finished.get(key)
        if hit is not None:
            self.stats["finish_hits"] += 1
            c.diagnostics.extend(hit.before_aliases)
            register_set_params_by_id(c, aliases, d.id, d.set_params_by_id)
            c.diagnostics.extend(hit.after_aliases)
            model_aliases = tuple(aliases.by_model.get(d.id, ()))
            if hit.model.aliases == model_aliases:
                return hit.model
            model = dataclasses.replace(hit.model, aliases=model_aliases)
            self._finished.put(key, dataclasses.replace(hit, model=model))
            return model
        before = Collector()
        capabilities = model_stage.finish_checks(before, d)
        c.diagnostics.extend(before.diagnostics)
        register_set_params_by_id(c, aliases, d.id, d.set_params_by_id)
        after = Collector()
        model_aliases = tuple(aliases.by_model.get(d.id, ()))
        model = model_stage.build_model(after, d, settings, capabilities, model_aliases)
        c.diagnostics.extend(after.diagnostics)
        self._finished.put(
            key,
            _Finished(capabilities, tuple(before.diagnostics), model, tuple(after.diagnostics)),
        )
        return model

    # -- plan JSON -----------------------------------------------------------------------------

    def _text_of(self, model: Model) -> str:
        hit = self._model_text.get(id(model))
        if hit is not None and hit[0] is model:
            self.stats["json_hits"] += 1
            return hit[1]
        text = model_json(model)
        self._model_text.put(id(model), (model, text))
        return text
