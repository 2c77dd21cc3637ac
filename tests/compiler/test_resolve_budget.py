"""The budget router's settings, the models' `resources` and fifo's `maxWait`.

Errors come with file:line:col like every other compile error; the schema
catches the shape (types, signs), the resolver what needs the whole document
(undeclared resources, a model larger than a capacity).
"""

from __future__ import annotations

from llama_swap.compiler.plan import Budget, plan_from_dict, plan_to_dict

from .frontend_util import compile_err, compile_ok, src, where
from .resolve_util import errors_of, json_of, plan_of, warnings_of

BUDGET = """
routing:
  scheduler: {use: fifo}
  router:
    use: budget
    settings:
      budget:
        maxLoaded: 3
        resources: {vram: 24000, ram: 64000}
        probes: {vram: "nvidia-smi --query-gpu=memory.free --format=csv,noheader,nounits"}
models:
  big: {cmd: "srv ${PORT}", resources: {vram: 18000, ram: 4000}}
  small: {cmd: "srv ${PORT}", resources: {vram: 5000}}
  tiny: {cmd: "srv ${PORT}"}
"""


def test_a_budget_compiles_into_the_plan_with_the_models_declared_sizes() -> None:
    plan = plan_of(BUDGET)
    assert plan.routing.router == "budget"
    assert plan.routing.budget == Budget(
        maxLoaded=3,
        resources={"ram": 64000, "vram": 24000},
        probes={"vram": "nvidia-smi --query-gpu=memory.free --format=csv,noheader,nounits"},
        evictCosts={},
    )
    assert dict(plan.models["big"].resources) == {"ram": 4000, "vram": 18000}
    assert dict(plan.models["tiny"].resources) == {}


def test_the_plan_json_round_trips_and_omits_empty_resources() -> None:
    d = json_of(BUDGET)
    assert d["routing"]["router"]["settings"] == {
        "budget": {
            "maxLoaded": 3,
            "resources": {"ram": 64000, "vram": 24000},
            "probes": {"vram": "nvidia-smi --query-gpu=memory.free --format=csv,noheader,nounits"},
            "evictCosts": {},
        }
    }
    assert d["models"]["small"]["resources"] == {"vram": 5000}
    assert "resources" not in d["models"]["tiny"]
    assert plan_to_dict(plan_from_dict(d)) == d


def test_max_loaded_alone_is_enough() -> None:
    plan = plan_of(
        "routing: {scheduler: {use: fifo}, router: {use: budget, settings: {budget: {maxLoaded: 2}}}}\n"
        "models: {a: {cmd: 'srv ${PORT}'}}\n"
    )
    assert plan.routing.budget is not None and plan.routing.budget.maxLoaded == 2


def test_a_budget_without_max_loaded_or_resources_is_an_error() -> None:
    assert errors_of(
        "routing: {scheduler: {use: fifo}, router: {use: budget, settings: {budget: {}}}}\n"
        "models: {a: {cmd: 'srv ${PORT}'}}\n"
    ) == [("routing.router.settings.budget", "the budget router needs maxLoaded or resources (or both)")]


def test_use_budget_without_settings_is_an_error() -> None:
    assert errors_of(
        "routing: {scheduler: {use: fifo}, router: {use: budget}}\nmodels: {a: {cmd: 'srv ${PORT}'}}\n"
    ) == [
        (
            "routing.router.use",
            "routing.router.use is 'budget' but routing.router.settings.budget is not set",
        )
    ]


def test_an_undeclared_resource_and_an_oversized_model_are_errors() -> None:
    assert errors_of(
        BUDGET
        + "  huge: {cmd: 'srv ${PORT}', resources: {vram: 30000}}\n"
        + "  odd: {cmd: 'srv ${PORT}', resources: {gpu: 1}}\n"
    ) == [
        (
            "models.huge.resources.vram",
            "model 'huge' alone needs 30000 vram, more than the budget's capacity of 24000",
        ),
        (
            "models.odd.resources.gpu",
            "resource 'gpu' is not declared in routing.router.settings.budget.resources "
            "(declared: ram, vram)",
        ),
    ]


def test_a_probe_for_an_undeclared_resource_and_unknown_evict_cost_models_are_errors() -> None:
    text = BUDGET.replace(
        'probes: {vram: "nvidia-smi --query-gpu=memory.free --format=csv,noheader,nounits"}',
        "probes: {disk: 'df'}\n        evictCosts: {ghost: 2, big: 3}",
    )
    assert errors_of(text) == [
        ("routing.router.settings.budget.evictCosts.ghost", "evictCosts names 'ghost', which is not a model id"),
        (
            "routing.router.settings.budget.probes.disk",
            "probe for resource 'disk', which budget.resources does not declare",
        ),
    ]


def test_shape_errors_carry_file_line_and_column() -> None:
    err = compile_err(
        src(
            "c.yaml",
            """\
            routing:
              scheduler:
                use: fifo
                settings: {fifo: {maxWait: -1}}
              router:
                use: budget
                settings:
                  budget:
                    maxLoaded: 0
                    resources: {vram: 24000}
            models:
              a:
                cmd: srv ${PORT}
                resources: {vram: -5}
              b:
                cmd: srv ${PORT}
                resources: {vram: lots}
            """,
        )
    )
    got = [(where(d), d.path) for d in err.errors]
    assert got == [
        ("c.yaml:4:32", "routing.scheduler.settings.fifo.maxWait"),
        ("c.yaml:9:20", "routing.router.settings.budget.maxLoaded"),
        ("c.yaml:14:23", "models.a.resources.vram"),
        ("c.yaml:17:23", "models.b.resources.vram"),
    ]


def test_resolver_errors_carry_file_line_and_column_too() -> None:
    err = compile_err(
        src(
            "c.yaml",
            """\
            routing:
              scheduler: {use: fifo}
              router: {use: budget, settings: {budget: {resources: {vram: 100}}}}
            models:
              a:
                cmd: srv ${PORT}
                resources:
                  vram: 101
            """,
        )
    )
    assert [(where(d), d.path, d.message) for d in err.errors] == [
        (
            "c.yaml:8:13",
            "models.a.resources.vram",
            "model 'a' alone needs 101 vram, more than the budget's capacity of 100",
        )
    ]


def test_budget_under_the_serial_scheduler_warns_like_groups_do() -> None:
    text = BUDGET.replace("scheduler: {use: fifo}", "scheduler: {use: serial}")
    assert (
        "routing.router.use",
        "the budget router has no effect with the serial scheduler, which keeps one model "
        "loaded at a time; set routing.scheduler.use: fifo to use it",
    ) in warnings_of(text)
    result = compile_ok(src("c.yaml", text))
    assert any(where(w) == "c.yaml:5:10" for w in result.warnings)


def test_resources_without_the_budget_router_are_ignored_with_a_warning() -> None:
    assert warnings_of("models: {a: {cmd: 'srv ${PORT}', resources: {vram: 1}}}\n") == [
        ("models.a.resources", "ignored: resources are used only by routing.router.use: budget")
    ]


def test_max_wait_is_read_in_seconds_and_kept_out_of_the_plan_when_off() -> None:
    on = plan_of(BUDGET.replace("scheduler: {use: fifo}", "scheduler: {use: fifo, settings: {fifo: {maxWait: 2.5}}}"))
    assert on.routing.maxWait == 2.5
    assert plan_to_dict(on)["routing"]["scheduler"]["settings"]["fifo"]["maxWait"] == 2.5
    off = json_of(BUDGET)
    assert off["routing"]["scheduler"]["settings"]["fifo"] == {"priority": {}}


def test_a_budget_plan_matches_the_plan_schema() -> None:
    import json
    from pathlib import Path

    import jsonschema

    from llama_swap.compiler.plan import plan_to_json

    schema = json.loads((Path(__file__).resolve().parents[2] / "schema" / "plan.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    text = BUDGET.replace("scheduler: {use: fifo}", "scheduler: {use: fifo, settings: {fifo: {maxWait: 3}}}")
    plan_json = json.loads(plan_to_json(plan_of(text)))
    assert [e.message for e in validator.iter_errors(plan_json)] == []
    plan_json["routing"]["router"]["settings"] = {}
    assert list(validator.iter_errors(plan_json))  # use: budget needs its settings
