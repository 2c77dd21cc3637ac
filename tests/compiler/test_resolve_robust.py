"""The resolver never raises anything but CompileError, whatever the document holds.

The pipeline only hands it schema-valid documents, but the resolver must not
depend on that for its own safety: odd types become diagnostics.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_swap.compiler.diagnostics import CompileError
from llama_swap.compiler.plan import plan_to_json
from llama_swap.compiler.resolve import resolve

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-70000, 70000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            "",
            "a",
            "srv ${PORT}",
            "${x}",
            "${MODEL_ID}",
            "http://h:1",
            "g & q",
            "(",
            "x",
            "matrix",
            "group",
            "fifo",
            "a | +b",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                [
                    "a",
                    "b",
                    "x",
                    "g",
                    "cmd",
                    "members",
                    "vars",
                    "sets",
                    "evict_costs",
                    "router",
                    "scheduler",
                    "settings",
                    "use",
                    "groups",
                    "matrix",
                    "fifo",
                    "priority",
                    "on_startup",
                    "preload",
                    "proxy",
                    "models",
                    "ignorePaths",
                    "every",
                ]
            ),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=10,
)
MODEL_KEYS = [
    "cmd",
    "cmdStop",
    "proxy",
    "checkEndpoint",
    "ttl",
    "aliases",
    "env",
    "filters",
    "macros",
    "metadata",
    "capabilities",
    "timeouts",
    "concurrencyLimit",
    "name",
    "sendLoadingState",
]
TOP_KEYS = [
    "healthCheckTimeout",
    "startPort",
    "globalTTL",
    "macros",
    "apiKeys",
    "upstream",
    "performance",
    "logToStdout",
    "groups",
    "matrix",
    "routing",
    "hooks",
    "peers",
    "profiles",
]
models = st.dictionaries(
    st.sampled_from(["a", "b", "org/m.v1"]),
    st.one_of(values, st.dictionaries(st.sampled_from(MODEL_KEYS), values, max_size=5)),
    max_size=3,
)
documents = st.fixed_dictionaries({"models": models}, optional={k: values for k in TOP_KEYS})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_resolve_returns_a_plan_or_raises_compile_error(doc: dict[str, Any]) -> None:
    try:
        plan, _ = resolve(doc, ())
    except CompileError as e:
        assert e.errors, "a CompileError always carries at least one error"
        assert all(d.keys and d.path for d in e.errors if d.keys != ())
        return
    plan_to_json(plan)
