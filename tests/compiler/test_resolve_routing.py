"""The routing block, groups and the matrix."""

from __future__ import annotations

import pytest

from .resolve_util import errors_of, json_of, plan_of, warnings_of

MODELS = """
models:
  a: {cmd: "srv ${PORT}", aliases: [alpha]}
  b: {cmd: "srv ${PORT}"}
  c: {cmd: "srv ${PORT}"}
"""


def groups_of(text: str) -> dict:
    return json_of(text)["routing"]["router"]["settings"]["groups"]


def test_defaults_to_serial_scheduler_and_group_router_with_one_default_group() -> None:
    routing = json_of(MODELS)["routing"]
    assert routing["scheduler"] == {"use": "serial", "settings": {"fifo": {"priority": {}}}}
    assert routing["router"] == {
        "use": "group",
        "settings": {
            "groups": {
                "(default)": {
                    "members": ["a", "b", "c"],
                    "swap": True,
                    "exclusive": True,
                    "persistent": False,
                }
            }
        },
    }


def test_group_defaults_and_default_group_gets_the_rest_sorted() -> None:
    groups = groups_of(
        MODELS
        + """
routing:
  router:
    use: group
    settings:
      groups:
        pair: {members: [c, a], swap: false}
"""
    )
    assert groups == {
        "(default)": {"members": ["b"], "swap": True, "exclusive": True, "persistent": False},
        "pair": {"members": ["c", "a"], "swap": False, "exclusive": True, "persistent": False},
    }


def test_legacy_top_level_groups_are_translated() -> None:
    plan = plan_of(MODELS + "groups:\n  g1: {members: [a, b], persistent: true}\n")
    assert plan.routing.router == "group"
    assert plan.routing.scheduler == "serial"
    assert plan.routing.groups["g1"].members == ("a", "b")
    assert plan.routing.groups["g1"].persistent is True
    assert plan.routing.groups["(default)"].members == ("c",)
    assert plan.group_of("c").name == "(default)"


def test_legacy_top_level_matrix_is_translated_and_expanded() -> None:
    routing = json_of(MODELS + "matrix:\n  vars: {x: a, y: b}\n  sets: {s: 'x & y'}\n")["routing"]
    assert routing["router"] == {
        "use": "matrix",
        "settings": {"matrix": {"vars": {"x": "a", "y": "b"}, "evictCosts": {},
                                "sets": [{"name": "s", "dsl": "x & y", "combinations": [["a", "b"]]}]}},
    }  # fmt: skip


def test_legacy_keys_with_routing_router_is_an_error() -> None:
    assert errors_of(MODELS + "groups: {g: {members: [a]}}\nrouting: {router: {use: group}}") == [
        (
            "groups",
            "config uses both the legacy top-level 'matrix'/'groups' keys and the 'routing.router' "
            "block; please migrate the top-level keys into 'routing.router' and remove them",
        )
    ]


def test_legacy_keys_with_only_a_scheduler_block_are_fine() -> None:
    plan = plan_of(MODELS + "groups: {g: {members: [a]}}\nrouting: {scheduler: {use: fifo}}")
    assert (plan.routing.scheduler, plan.routing.groups["g"].members) == ("fifo", ("a",))


def test_legacy_groups_and_matrix_together_is_an_error() -> None:
    assert errors_of(
        MODELS + "groups: {g: {members: [a]}}\nmatrix: {vars: {x: a}, sets: {s: x}}"
    ) == [("matrix", "config cannot use both 'groups' and 'matrix'")]


def test_router_use_matrix_without_settings() -> None:
    assert errors_of(MODELS + "routing: {router: {use: matrix}}") == [
        (
            "routing.router.use",
            "routing.router.use is 'matrix' but routing.router.settings.matrix is not set",
        )
    ]


def test_both_settings_with_use_group_ignores_the_matrix_with_a_warning() -> None:
    text = (
        MODELS
        + """
routing:
  scheduler: {use: fifo}
  router:
    use: group
    settings:
      groups: {g: {members: [a]}}
      matrix: {vars: {x: a}, sets: {s: "x & nonsense("}}
"""
    )
    assert plan_of(text).routing.router == "group"
    assert warnings_of(text) == [
        (
            "routing.router.settings.matrix",
            "ignored: routing.router.use is not 'matrix' (set use: matrix to enable the matrix router)",
        )
    ]


def test_unknown_router_and_scheduler() -> None:
    assert errors_of(MODELS + "routing: {router: {use: bogus}, scheduler: {use: lifo}}") == [
        ("routing.router.use", 'unknown router "bogus" (valid: group, matrix, budget)'),
        ("routing.scheduler.use", 'unknown scheduler "lifo" (valid: serial, fifo)'),
    ]


def test_fifo_priority_keys_resolve_aliases_to_ids() -> None:
    plan = plan_of(
        MODELS
        + "routing: {scheduler: {use: fifo, settings: {fifo: {priority: {alpha: 5, c: -1}}}}}"
    )
    assert plan.routing.scheduler == "fifo"
    assert dict(plan.routing.priority) == {"a": 5, "c": -1}


def test_fifo_priority_unknown_model_and_double_entry() -> None:
    assert errors_of(
        MODELS
        + "routing: {scheduler: {use: fifo, settings: {fifo: {priority: {nope: 1, a: 1, alpha: 2}}}}}"
    ) == sorted(
        [
            (
                "routing.scheduler.settings.fifo.priority.nope",
                'routing.scheduler.settings.fifo.priority references unknown model "nope"',
            ),
            (
                "routing.scheduler.settings.fifo.priority.alpha",
                "model 'a' is given a priority twice ('a' and 'alpha')",
            ),
        ]
    )


def test_priority_with_serial_scheduler_warns() -> None:
    assert warnings_of(MODELS + "routing: {scheduler: {settings: {fifo: {priority: {a: 1}}}}}") == [
        (
            "routing.scheduler.settings.fifo.priority",
            "has no effect with the serial scheduler (set routing.scheduler.use: fifo)",
        )
    ]


@pytest.mark.parametrize("prefix", ["groups", "routing.router.settings.groups"])
def test_group_membership_errors(prefix: str) -> None:
    block = "      g1: {members: [a, a, b]}\n      g2: {members: [b, alpha, ghost]}\n"
    if prefix == "groups":
        text = MODELS + "groups:\n" + block.replace("      ", "  ")
    else:
        text = (
            MODELS
            + "routing:\n  router:\n    settings:\n      groups:\n"
            + block.replace("      ", "        ")
        )
    assert errors_of(text) == sorted(
        [
            (f"{prefix}.g1.members[1]", "duplicate model member a found in group: g1"),
            (f"{prefix}.g2.members[0]", "model member b is used in multiple groups: g1 and g2"),
            (
                f"{prefix}.g2.members[1]",
                "group member 'alpha' is an alias of model 'a'; use the model id",
            ),
            (f"{prefix}.g2.members[2]", "group member 'ghost' is not a model id"),
        ]
    )


def test_default_group_name_is_reserved() -> None:
    assert errors_of(MODELS + "groups: {'(default)': {members: [a]}}") == [
        ("groups.(default)", "the group name '(default)' is reserved for models in no group")
    ]


MATRIX_MODELS = """
models:
  gemma: {cmd: "srv ${PORT}", aliases: [gem]}
  qwen: {cmd: "srv ${PORT}"}
  mistral: {cmd: "srv ${PORT}"}
  voxtral: {cmd: "srv ${PORT}"}
  llama70B: {cmd: "srv ${PORT}"}
  reranker: {cmd: "srv ${PORT}"}
"""


def matrix(body: str) -> str:
    indented = "\n".join("        " + line for line in body.strip().splitlines())
    return (
        MATRIX_MODELS
        + "routing:\n  router:\n    use: matrix\n    settings:\n      matrix:\n"
        + indented
        + "\n"
    )


P = "routing.router.settings.matrix"
LONG_KEY = "x" * 33
VAR_KEY_RULE = "must contain only alphanumeric, '-' or '.' characters and be 1-32 characters long"


def test_matrix_basic_expansion_in_definition_order() -> None:
    m = plan_of(
        matrix(
            """
vars: {g: gemma, q: qwen, m: mistral, v: voxtral, L: llama70B}
evict_costs: {L: 30, v: 50}
sets:
  standard: "(g | q | m) & v"
  full: "L"
"""
        )
    ).routing.matrix
    assert m is not None
    assert [(s.name, s.combinations) for s in m.sets] == [
        ("standard", (("gemma", "voxtral"), ("qwen", "voxtral"), ("mistral", "voxtral"))),
        ("full", (("llama70B",),)),
    ]
    assert dict(m.evictCosts) == {"llama70B": 30, "voxtral": 50}  # keyed by model id


def test_matrix_refs_expand_in_topological_order() -> None:
    m = plan_of(
        matrix(
            """
vars: {g: gemma, q: qwen, m: mistral, v: voxtral, e: reranker}
sets:
  mega: "+with_tts & e"
  llms: "g | q | m"
  with_tts: "+llms & v"
"""
        )
    ).routing.matrix
    assert m is not None
    assert [s.name for s in m.sets] == ["llms", "with_tts", "mega"]
    assert sum(len(s.combinations) for s in m.sets) == 9
    assert m.sets[2].combinations[0] == ("gemma", "reranker", "voxtral")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "vars: {g: gemma}\nsets: {combo: 'g & voxtal'}",
            [(f"{P}.sets.combo", 'unknown var or model "voxtal" at position 4')],
        ),
        (
            "sets: {combo: 'gem & qwen'}",
            [
                (
                    f"{P}.sets.combo",
                    'unknown var or model "gem" at position 0 '
                    "(an alias of 'gemma'; use the model id or a var)",
                )
            ],
        ),
        (
            f"vars: {{{LONG_KEY}: gemma, a_b: gemma, 'a b': gemma}}\nsets: {{s: qwen}}",
            [
                (f"{P}.vars.{LONG_KEY}", f'var key "{LONG_KEY}" {VAR_KEY_RULE}'),
                (f"{P}.vars.a_b", f'var key "a_b" {VAR_KEY_RULE}'),
                (f"{P}.vars.a b", f'var key "a b" {VAR_KEY_RULE}'),
            ],
        ),
        (
            "vars: {x: nonexistent, y: gem}\nsets: {s: x}",
            [
                (f"{P}.vars.x", 'var key "x" references unknown model "nonexistent"'),
                (
                    f"{P}.vars.y",
                    'var key "y" references unknown model "gem" (an alias of \'gemma\'; use the model id)',
                ),
            ],
        ),
        (
            "vars: {g: gemma}\nevict_costs: {g: 0, z: 3}\nsets: {s: g}",
            [
                (f"{P}.evict_costs.g", 'evict_cost for "g" must be a positive integer, got 0'),
                (f"{P}.evict_costs.z", 'evict_costs: unknown var or model "z"'),
            ],
        ),
        (
            "vars: {g: gemma}\nsets: {a: '+b', b: '+a'}",
            [(f"{P}.sets.a", 'circular reference detected involving set "a"')],
        ),
        (
            "vars: {g: gemma}\nsets: {a: 'g & +missing'}",
            [(f"{P}.sets.a", 'set "a" references undefined set "missing"')],
        ),
        (
            "vars: {g: gemma}\nsets: {}",
            [(P, "matrix must define at least one set")],
        ),
        (
            "vars: {}\nsets: {s: g}",
            [(f"{P}.sets.s", 'unknown var or model "g" at position 0')],
        ),
        (
            "vars: {g: gemma}\nsets: {s: '(g', t: 'g @'}",
            [
                (f"{P}.sets.s", "parse: missing closing parenthesis for '(' at position 0"),
                (f"{P}.sets.t", "tokenize: unexpected character '@' at position 2"),
            ],
        ),
    ],
)
def test_matrix_errors(body: str, expected: list[tuple[str, str]]) -> None:
    assert errors_of(matrix(body)) == sorted(expected)


def test_matrix_has_no_combination_cap() -> None:
    # 5 x 5 x 5 x 5 x 5 = 3125 combinations in one set: the 1000 cap of old is gone.
    side = "(gemma | qwen | mistral | voxtral | reranker)"
    five = " & ".join([side] * 5)
    m = plan_of(matrix(f"sets: {{big: '{five}', other: 'llama70B'}}")).routing.matrix
    assert m is not None
    assert [s.name for s in m.sets] == ["big", "other"]
    # combinations are deduplicated after sorting: 31 distinct non-empty subsets of 5 models
    assert len(m.sets[0].combinations) == 31


def test_matrix_vars_are_optional_and_sets_may_name_models_directly() -> None:
    m = plan_of(
        matrix(
            "vars: {g: gemma, long-var.name: qwen}\n"
            "evict_costs: {voxtral: 50, g: 3}\n"
            "sets: {base: 'g | long-var.name', combo: '+base & voxtral', solo: llama70B}"
        )
    ).routing.matrix
    assert m is not None
    assert dict(m.evictCosts) == {"gemma": 3, "voxtral": 50}
    assert [(s.name, s.combinations) for s in m.sets] == [
        ("base", (("gemma",), ("qwen",))),
        ("combo", (("gemma", "voxtral"), ("qwen", "voxtral"))),
        ("solo", (("llama70B",),)),
    ]


def test_a_var_wins_over_a_model_id_of_the_same_name() -> None:
    m = plan_of(matrix("vars: {qwen: gemma}\nsets: {s: 'qwen & mistral'}")).routing.matrix
    assert m is not None
    assert m.sets[0].combinations == (("gemma", "mistral"),)


def test_matrix_only_config_has_no_groups() -> None:
    plan = plan_of(matrix("vars: {g: gemma}\nsets: {s: g}"))
    assert plan.routing.router == "matrix"
    assert dict(plan.routing.groups) == {}


def test_groups_or_matrix_with_the_serial_scheduler_warn() -> None:
    serial_groups = MODELS + "groups: {g: {members: [a]}}"
    assert warnings_of(serial_groups) == [
        (
            "groups",
            "groups have no effect with the serial scheduler, which runs one model at a time; "
            "set routing.scheduler.use: fifo to use them",
        )
    ]
    serial_matrix = (
        MODELS
        + "routing: {router: {use: matrix, settings: {matrix: {vars: {x: a}, sets: {s: x}}}}}"
    )
    assert warnings_of(serial_matrix) == [
        (
            "routing.router.settings.matrix",
            "the matrix has no effect with the serial scheduler, which runs one model at a time; "
            "set routing.scheduler.use: fifo to use them",
        )
    ]
    assert warnings_of(MODELS) == []
    assert (
        warnings_of(MODELS + "groups: {g: {members: [a]}}\nrouting: {scheduler: {use: fifo}}") == []
    )
