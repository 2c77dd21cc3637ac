"""Properties of the resolved plan as a whole: determinism, round trip, schema, all errors at once."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from llama_swap.compiler.plan import plan_from_dict, plan_to_dict, plan_to_json
from llama_swap.compiler.resolve import resolve

from .resolve_util import doc, errors_of

SCHEMA = Path(__file__).resolve().parents[2] / "schema" / "plan.schema.json"

RICH = """
startPort: 7000
globalTTL: 300
apiKeys: [k1]
macros: {bin: /opt/llama-server, temp: 0.6}
models:
  zeta: {cmd: "${bin} --port ${PORT}", aliases: [z], metadata: {t: "${temp}", port: "${PORT}"}}
  alpha:
    cmd: "${bin} --port ${PORT}"
    cmdStop: "kill ${PID}"
    filters: {stripParams: "top_k", setParamsByID: {"${MODEL_ID}-hot": {temperature: 1.2}}}
    capabilities: {in: [text], out: [text], tools: true}
  fixed: {cmd: "vllm serve x --port 8001", proxy: "http://127.0.0.1:8001", ttl: 0}
routing:
  scheduler: {use: fifo, settings: {fifo: {priority: {z: 3}}}}
  router: {settings: {groups: {pair: {members: [alpha, zeta], swap: false}}}}
peers:
  far: {proxy: "https://far.example", apiKey: k, models: [big]}
hooks: {on_startup: {preload: [z]}}
"""


def test_same_input_gives_the_same_bytes_whatever_the_key_order() -> None:
    d1 = doc(RICH)
    d2 = doc(RICH)
    d2["models"] = dict(reversed(list(d2["models"].items())))
    d2["peers"] = dict(reversed(list(d2["peers"].items())))
    assert plan_to_json(resolve(d1, ())[0]) == plan_to_json(resolve(d2, ())[0])


def test_plan_round_trips_through_json() -> None:
    plan, _ = resolve(doc(RICH), ())
    again = plan_from_dict(json.loads(plan_to_json(plan)))
    assert plan_to_dict(again) == plan_to_dict(plan)
    assert again == plan


def test_plan_json_matches_the_plan_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for text in (
        RICH,
        "{}",
        "models: {m: {cmd: 'x ${PORT}'}}\nmatrix: {vars: {a: m}, sets: {s: a}}",
    ):
        plan, _ = resolve(doc(text), ())
        errors = list(validator.iter_errors(json.loads(plan_to_json(plan))))
        assert errors == [], [e.message for e in errors]


def test_the_plan_schema_rejects_a_broken_plan() -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    plan = json.loads(plan_to_json(resolve(doc(RICH), ())[0]))
    plan["models"]["alpha"]["cmd"] = "not an argv list"
    del plan["routing"]
    messages = sorted(e.message for e in validator.iter_errors(plan))
    assert messages == [
        "'not an argv list' is not of type 'array'",
        "'routing' is a required property",
    ]


def test_every_error_is_reported_in_one_run() -> None:
    errors = errors_of(
        """
        startPort: 0
        logToStdout: loud
        macros: {PORT: 1}
        models:
          a: {cmd: "srv ${x}"}
          b: {cmd: "srv ${PORT}", ttl: -5}
        groups: {g: {members: [ghost]}}
        hooks: {on_startup: {preload: [nope]}}
        """
    )
    assert [path for path, _ in errors] == sorted(
        [
            "startPort",
            "logToStdout",
            "macros.PORT",
            "models.a.cmd",
            "models.a.proxy",
            "models.b.ttl",
            "groups.g.members[0]",
            "hooks.on_startup.preload[0]",
        ]
    )


def test_diagnostics_carry_tuple_keys_for_ids_with_dots() -> None:
    import pytest

    from llama_swap.compiler.diagnostics import CompileError

    with pytest.raises(CompileError) as info:
        resolve({"models": {"org/m.v1": {"cmd": "srv ${nope} ${PORT}"}}}, ())
    [d] = info.value.errors
    assert d.keys == ("models", "org/m.v1", "cmd")
    assert d.path == "models.org/m.v1.cmd" and d.location is None


def test_the_example_plan_is_frozen_round_trips_and_matches_the_plan_schema() -> None:
    import dataclasses

    import pytest

    from llama_swap.compiler.pipeline import compile_paths
    from llama_swap.compiler.plan import plan_from_json

    example = SCHEMA.parents[1] / "fragments.example"
    plan = compile_paths(None, str(example), env={}).plan
    text = plan_to_json(plan)
    assert plan_from_json(text) == plan
    assert plan_to_json(plan_from_json(text)) == text
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    assert [e.message for e in validator.iter_errors(json.loads(text))] == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.models = {}  # type: ignore[misc]
    model = next(iter(plan.models.values()))
    with pytest.raises(TypeError):
        plan.models["new"] = model  # type: ignore[index]
    with pytest.raises(TypeError):
        model.metadata["x"] = 1  # type: ignore[index]
    assert isinstance(model.cmd, tuple)


def test_plans_with_selectors_profiles_and_peer_names_round_trip_and_match_the_schema() -> None:
    from llama_swap.compiler.pipeline import compile_paths
    from llama_swap.compiler.plan import PeerModel, plan_from_json

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    cases = Path(__file__).parent / "cases"
    for name in ("selectors-fields", "profiles-map", "peers-namespaces", "macros-everywhere"):
        plan = compile_paths(str(cases / name / "config.yaml"), None, env={}).plan
        text = plan_to_json(plan)
        again = plan_from_json(text)
        assert again == plan and plan_to_json(again) == text, name
        assert dict(again.peerNames) == dict(plan.peerNames), name
        assert [e.message for e in validator.iter_errors(json.loads(text))] == [], name
    peers = compile_paths(str(cases / "peers-namespaces" / "config.yaml"), None, env={}).plan
    assert peers.selectors["pick"].resolved == ("p1/shared", "p2/unique", "p2/p1/model", "p1/model")
    assert peers.peer_model("shared") is None  # offered by two peers: only by full name
    assert peers.peer_model("p2/p1/model") == PeerModel("p2", "p1/model")
