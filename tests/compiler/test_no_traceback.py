"""Whatever the input, the compiler answers with a plan or a clean CompileError, never a traceback."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_swap.compiler.diagnostics import CompileError
from llama_swap.compiler.pipeline import compile_sources
from llama_swap.compiler.render import render_github, render_json, render_text

KEYS = [
    "models",
    "cmd",
    "proxy",
    "ttl",
    "aliases",
    "macros",
    "peers",
    "groups",
    "matrix",
    "routing",
    "router",
    "scheduler",
    "use",
    "settings",
    "members",
    "apiKeys",
    "hooks",
    "on_startup",
    "preload",
    "startPort",
    "globalTTL",
    "filters",
    "setParamsByID",
    "metadata",
    "vars",
    "sets",
    "env",
    "m",
    "${PORT}",
    "x.y",
    "",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        ["srv --port ${PORT}", "${MODEL_ID}", "${env.HOME}", "a & b", "'", "http://h:1"]
    ),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=25,
)
documents = st.dictionaries(keys, values, max_size=6)


def check(sources: list[tuple[str, str]]) -> None:
    try:
        compile_sources(sources, env={"HOME": "/root"})
    except CompileError as exc:
        assert exc.errors, "a CompileError must carry at least one error"
        texts = getattr(exc, "texts", {})
        render_text(exc.diagnostics, texts)
        render_json(exc.diagnostics)
        render_github(exc.diagnostics)


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(documents, min_size=1, max_size=3))
def test_random_documents_compile_or_fail_cleanly(docs: list[dict[str, Any]]) -> None:
    check([(f"f{i}.yaml", dump(d)) for i, d in enumerate(docs)])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS[:8]), values, max_size=3), st.sampled_from(KEYS[:10]))
def test_random_values_under_real_keys(model: dict[str, Any], section: str) -> None:
    check([("a.yaml", dump({"models": {"m": model}, section: model}))])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list("ab:- \n\t[]{}&*!|>'\"#%@`,?$.0~")), max_size=60))
def test_random_yaml_text_fails_cleanly(text: str) -> None:
    check([("a.yaml", text)])


names = st.sampled_from(["a", "b", "c.d", "e/f:1", "x"])
texts = st.sampled_from(
    [
        "srv --port ${PORT}",
        "srv ${m1}",
        "srv '${PORT}",
        "# c\nsrv \\\n ${PORT}",
        "${MODEL_ID}",
        "a|b",
        "+s",
        "a & b",
    ]
)
model = st.fixed_dictionaries(
    {"cmd": texts},
    optional={
        "proxy": st.sampled_from(["http://h:1", "http://localhost:${PORT}", "::bad", "${m1}"]),
        "ttl": st.integers(-1, 5),
        "aliases": st.lists(names, max_size=2),
        "macros": st.dictionaries(
            st.sampled_from(["m1", "m2"]), st.one_of(texts, st.integers()), max_size=2
        ),
        "filters": st.fixed_dictionaries(
            {},
            optional={
                "setParamsByID": st.dictionaries(
                    names, st.dictionaries(names, st.integers(), max_size=1), max_size=2
                ),
                "stripParams": st.sampled_from(["a, b", "${m1}", "model"]),
            },
        ),
        "metadata": st.dictionaries(names, st.one_of(texts, st.integers()), max_size=2),
        "checkEndpoint": st.sampled_from(["/health", "none", "${m1}"]),
    },
)
config = st.fixed_dictionaries(
    {"models": st.dictionaries(names, model, max_size=3)},
    optional={
        "macros": st.dictionaries(st.sampled_from(["m1", "m2"]), texts, max_size=2),
        "groups": st.dictionaries(
            names, st.fixed_dictionaries({"members": st.lists(names, max_size=3)}), max_size=2
        ),
        "matrix": st.fixed_dictionaries(
            {
                "vars": st.dictionaries(st.sampled_from(["a", "b"]), names, min_size=1),
                "sets": st.dictionaries(names, texts, min_size=1),
            }
        ),
        "routing": st.fixed_dictionaries(
            {},
            optional={
                "scheduler": st.fixed_dictionaries({"use": st.sampled_from(["serial", "fifo"])})
            },
        ),
        "hooks": st.fixed_dictionaries(
            {"on_startup": st.fixed_dictionaries({"preload": st.lists(names, max_size=2)})}
        ),
        "peers": st.dictionaries(
            names,
            st.fixed_dictionaries(
                {
                    "proxy": st.sampled_from(["http://p:1", "bad url"]),
                    "models": st.lists(names, min_size=1, max_size=2),
                }
            ),
            max_size=2,
        ),
    },
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(config, min_size=1, max_size=2))
def test_nearly_valid_configs_compile_or_fail_cleanly(docs: list[dict[str, Any]]) -> None:
    check([(f"f{i}.yaml", dump(d)) for i, d in enumerate(docs)])


# --- alias bombs ("billion laughs") ---------------------------------------------------------


def laughs(levels: int, width: int, *, merge: bool, where: str) -> str:
    """Each anchor repeats the previous one `width` times: width**levels values in all.

    With `merge` the repetition goes through `<<` merge keys (mappings merged
    into mappings) instead of lists; `where` is the key the last anchor is
    used under.
    """
    if merge:
        lines = ["x0: &x0 {" + ", ".join(f"k{i}: lol" for i in range(width)) + "}"]
        for n in range(1, levels + 1):
            lines.append(f"x{n}: &x{n} {{<<: [{', '.join([f'*x{n - 1}'] * width)}]}}")
    else:
        lines = ["x0: &x0 [" + ", ".join(["lol"] * width) + "]"]
        for n in range(1, levels + 1):
            lines.append(f"x{n}: &x{n} [{', '.join([f'*x{n - 1}'] * width)}]")
    lines.append(f"{where}: *x{levels}")
    return "\n".join(lines) + "\n"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(min_value=3, max_value=12),
    st.integers(min_value=2, max_value=10),
    st.booleans(),
    st.sampled_from(["models", "metadata", "apiKeys", "macros"]),
)
def test_alias_bombs_fail_fast(levels: int, width: int, merge: bool, where: str) -> None:
    """Any shape of bomb ends in diagnostics, never a traceback.  How fast it is refused is
    measured by bench/compile_speed.py, not asserted here (the machines are shared)."""
    check([("bomb.yaml", laughs(levels, width, merge=merge, where=where))])


def test_the_classic_billion_laughs_is_a_clean_error() -> None:
    for merge in (False, True):
        # 10**9 values: expanding them would never finish, so an answer at all shows the
        # bomb was refused before expansion.
        text = laughs(9, 10, merge=merge, where="models")
        try:
            compile_sources([("bomb.yaml", text)], env={})
        except CompileError as exc:
            assert any("too large" in d.message or "alias" in d.message for d in exc.errors)
        else:
            raise AssertionError("a billion laughs must not compile")
