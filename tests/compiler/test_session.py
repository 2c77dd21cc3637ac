"""A CompileSession gives byte-identical results to a fresh compile, edit after edit.

The session (compiler/session.py) caches parsing, schema checks, per-model
resolution and model JSON between compiles.  Each test replays a series of
edits to a set of fragments and compiles every state twice: through one
long-lived session and through the plain pipeline.  Plan JSON, digest, warnings
(with locations) and errors must be equal.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_swap.compiler.diagnostics import CompileError
from llama_swap.compiler.pipeline import compile_sources
from llama_swap.compiler.plan import Plan, plan_from_json, plan_to_dict, plan_to_json
from llama_swap.compiler.session import CompileSession

GLOBAL = """\
startPort: 9000
macros:
  srv: /opt/llama-server
  ctx: 4096
"""

MODELS_A = """\
models:
  beta:
    cmd: ${srv} --port ${PORT} -c ${ctx}
    aliases: [b]
    metadata: {port: "${PORT}", ctx: "${ctx}"}
  alpha:
    cmd: ${srv} --port ${PORT} --model ${MODEL_ID}
    filters:
      setParamsByID:
        "${MODEL_ID}:fast": {temperature: 0.1}
"""

MODELS_B = """\
models:
  gamma:
    cmd: ${srv} --port ${PORT}
    ttl: 30
  fixed:
    cmd: /bin/fixed --port 7000
    proxy: http://127.0.0.1:7000
    env: ["TOKEN=${env.TOKEN}"]
"""

# (fragment name, new text) edits, applied in order; None removes the fragment.
EDITS: list[tuple[str, str | None]] = [
    ("10-a.yaml", MODELS_A.replace("ttl: 30", "ttl: 31")),  # no-op edit of a
    ("20-b.yaml", MODELS_B.replace("ttl: 30", "ttl: 60")),  # live change
    ("00-global.yaml", GLOBAL.replace("ctx: 4096", "ctx: 8192")),  # global macro change
    ("00-global.yaml", GLOBAL + "globalTTL: 120\n"),  # settings used by models
    ("00-global.yaml", GLOBAL + "globalTTL: 120\nsendLoadingState: true\n"),
    ("20-b.yaml", MODELS_B + "  aaa-first:\n    cmd: ${srv} --port ${PORT}\n"),  # shifts ports
    ("20-b.yaml", MODELS_B + "  alpha:\n    cmd: dup\n"),  # duplicate model: merge error
    ("20-b.yaml", MODELS_B + "  broken: [not, a, mapping\n"),  # bad YAML
    ("20-b.yaml", MODELS_B + "  bad:\n    cmd: 5\n    ttl: soon\n    healthCheckTimout: 1\n"),
    ("20-b.yaml", MODELS_B + "  odd:\n    cmd: srv ${PORT}\n    healthCheckTimout: 1\n"),  # warning
    ("10-a.yaml", MODELS_A.replace("aliases: [b]", "aliases: [b, alpha:fast]")),  # alias clash
    ("10-a.yaml", MODELS_A.replace("aliases: [b]", "aliases: [c]")),  # alias change only
    ("20-b.yaml", MODELS_B.replace("${PORT}", "${PORTX}")),  # unknown macro
    ("20-b.yaml", MODELS_B),
    ("00-global.yaml", GLOBAL.replace("startPort: 9000", "startPort: 9100")),
    ("30-c.yaml", "models:\n  zeta:\n    cmd: z ${PORT}\n    proxy: http://h:${PORT}\n"),
    ("30-c.yaml", None),
    ("00-global.yaml", "macros:\n  srv: [a list]\n"),  # broken global macro
    ("00-global.yaml", GLOBAL),
]


def outcome(result: Any) -> tuple[Any, ...]:
    """Everything a compile tells its caller, in comparable form."""
    if isinstance(result, CompileError):
        return ("error", result.diagnostics, getattr(result, "texts", None))
    return ("ok", plan_to_json(result.plan), result.warnings, dict(result.texts))


def plain(sources: Sequence[tuple[str, str]], env: Mapping[str, str]) -> tuple[Any, ...]:
    try:
        return outcome(compile_sources(sources, env=env))
    except CompileError as exc:
        return outcome(exc)


def cached(
    session: CompileSession, sources: Sequence[tuple[str, str]], env: Mapping[str, str]
) -> tuple[Any, ...]:
    try:
        result = session.compile_sources(sources, env=env)
    except CompileError as exc:
        return outcome(exc)
    text = plan_to_json(result.plan)
    assert session.plan_json(result.plan) == text
    assert session.plan_digest(result.plan) == hashlib.sha256(text.encode()).hexdigest()
    return outcome(result)


def replay(edits: Sequence[tuple[str, str | None]], env: Mapping[str, str]) -> list[str]:
    files: dict[str, str] = {"00-global.yaml": GLOBAL, "10-a.yaml": MODELS_A, "20-b.yaml": MODELS_B}
    session = CompileSession()
    kinds = []
    for step in [None, *edits]:
        if step is not None:
            name, text = step
            if text is None:
                files.pop(name, None)
            else:
                files[name] = text
        sources = sorted(files.items())
        want = plain(sources, env)
        got = cached(session, sources, env)
        assert got == want, f"session differs after {step}"
        kinds.append(want[0])
    return kinds


def test_a_series_of_edits_compiles_identically_with_and_without_a_session() -> None:
    kinds = replay(EDITS, {"TOKEN": "t0"})
    assert "error" in kinds and kinds[-1] == "ok"  # the series covers both outcomes


def test_a_changed_environment_is_not_served_from_the_cache() -> None:
    session = CompileSession()
    sources = [("00-global.yaml", GLOBAL), ("10-a.yaml", MODELS_A), ("20-b.yaml", MODELS_B)]
    for env in ({"TOKEN": "one"}, {"TOKEN": "two"}, {}, {"TOKEN": "one"}):
        assert cached(session, sources, env) == plain(sources, env)


def test_the_session_reuses_unchanged_work() -> None:
    session = CompileSession()
    sources = [("00-global.yaml", GLOBAL), ("10-a.yaml", MODELS_A), ("20-b.yaml", MODELS_B)]
    first = session.compile_sources(sources, env={"TOKEN": "t"}).plan
    session.plan_digest(first)
    edited = [*sources[:2], ("20-b.yaml", MODELS_B.replace("ttl: 30", "ttl: 60"))]
    second = session.compile_sources(edited, env={"TOKEN": "t"}).plan
    assert session.stats["fragment_hits"] == 2
    assert second.models["alpha"] is first.models["alpha"]  # unchanged models: the same object
    assert second.models["gamma"].ttl == 60
    session.plan_digest(second)
    assert session.stats["json_hits"] >= 3


def test_cached_fragments_are_not_changed_by_merging() -> None:
    # Two fragments adding to the same non-entity mappings: a merge that mutated a
    # cached fragment would leak the other fragment's keys into the next compile.
    one = (
        "a.yaml",
        "hooks: {on_startup: {preload: [m1]}}\nmodels: {m1: {cmd: x, proxy: 'http://h:1'}}\n",
    )
    two = (
        "b.yaml",
        "hooks: {on_startup: {preload: [m2]}}\nmodels: {m2: {cmd: x, proxy: 'http://h:2'}}\n",
    )
    session = CompileSession()
    for sources in ([one, two], [one], [one, two], [two]):
        assert cached(session, sources, {}) == plain(sources, {})


fragment_versions = st.sampled_from([text for _, text in EDITS if text is not None] + [MODELS_A])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["00-global.yaml", "10-a.yaml", "20-b.yaml", "30-c.yaml"]),
            st.one_of(st.none(), fragment_versions),
        ),
        max_size=8,
    )
)
def test_any_edit_sequence_compiles_identically(edits: list[tuple[str, str | None]]) -> None:
    replay(edits, {"TOKEN": "x"})


# -- plan JSON: the spliced serialisation equals plain json.dumps --------------------------


def test_plan_json_equals_json_dumps_of_the_plan_dict() -> None:
    text = textwrap.dedent(
        """\
        models:
          "ünï \\"quoted\\" \\\\ id":
            cmd: srv ${PORT}
            description: "line\\nbreak \\u2028"
            metadata: {nested: {list: [1, 2.5, true, null]}, "  \\"models\\": {}": x}
          'models': {cmd: 'y ${PORT}'}
        """
    )
    for sources in ([("a.yaml", text)], [("empty.yaml", "")]):
        plan = compile_sources(sources, env={}).plan
        expected = json.dumps(plan_to_dict(plan), indent=2, ensure_ascii=False) + "\n"
        assert plan_to_json(plan) == expected
        assert CompileSession().plan_json(plan) == expected
        assert plan_to_json(plan_from_json(expected)) == expected
    assert plan_to_json(Plan()) == json.dumps(plan_to_dict(Plan()), indent=2) + "\n"
