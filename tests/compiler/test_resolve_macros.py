"""Macros."""

from __future__ import annotations

import pytest

from llama_swap.compiler.macros import format_value, validate_macro

from .resolve_util import errors_of, plan_of


def test_global_and_model_macros_and_port_inside_a_macro() -> None:
    plan = plan_of(
        """
        startPort: 9990
        macros:
          svr-path: "path/to/server"
          argOne: "--arg1"
          port-arg: "--port ${PORT}"
        models:
          model1:
            cmd: ${svr-path} ${argTwo} ${port-arg} ${argOne}
            cmdStop: stop --port ${PORT}
            macros:
              svr-path: "override/server"
              argTwo: "--arg2"
        """
    )
    m = plan.models["model1"]
    assert m.cmd == ("override/server", "--arg2", "--port", "9990", "--arg1")
    assert m.cmdStop == ("stop", "--port", "9990")
    assert m.proxy == "http://localhost:9990"


def test_model_id_macro_in_cmd_and_in_global_macros() -> None:
    plan = plan_of(
        """
        macros:
          docker-stop: docker stop ${MODEL_ID}
        models:
          "author/model:F16":
            cmd: run --name ${MODEL_ID} --port ${PORT}
            cmdStop: ${docker-stop}
        """
    )
    m = plan.models["author/model:F16"]
    assert m.cmd == ("run", "--name", "author/model:F16", "--port", "5800")
    assert m.cmdStop == ("docker", "stop", "author/model:F16")


def test_macro_in_macro_lifo_chain() -> None:
    plan = plan_of(
        """
        macros:
          a: "base"
          b: "${a}/mid"
          c: "${b}/top"
        models:
          m: {cmd: "srv ${c} ${PORT}"}
        """
    )
    assert plan.models["m"].cmd == ("srv", "base/mid/top", "5800")


def test_model_macro_override_changes_a_global_that_uses_it() -> None:
    plan = plan_of(
        """
        macros:
          base: /global
          full: ${base}/bin
        models:
          m:
            cmd: ${full} ${PORT}
            macros: {base: /model}
        """
    )
    assert plan.models["m"].cmd == ("/model/bin", "5800")


def test_macro_used_before_its_definition_is_an_error() -> None:
    assert errors_of(
        """
        macros:
          a: "${b}/x"
          b: "y"
        models:
          m: {cmd: "srv ${a} ${PORT}"}
        """
    ) == [
        (
            "models.m.cmd",
            "unknown macro '${b}': it is used by a macro defined before 'b'; "
            "a macro may only use macros defined earlier",
        )
    ]


def test_unknown_macros_name_each_field() -> None:
    errors = errors_of(
        """
        models:
          m:
            cmd: srv ${PORT} ${c1}
            cmdStop: stop ${c2}
            proxy: http://localhost:${PORT}/${c3}
            checkEndpoint: /${c4}
            filters: {stripParams: "${c5}"}
            name: "${c6}"
            description: "${c7}"
        """
    )
    assert errors == sorted(
        [
            ("models.m.cmd", "unknown macro '${c1}'"),
            ("models.m.cmdStop", "unknown macro '${c2}'"),
            ("models.m.proxy", "unknown macro '${c3}'"),
            ("models.m.checkEndpoint", "unknown macro '${c4}'"),
            ("models.m.filters.stripParams", "unknown macro '${c5}'"),
            ("models.m.name", "unknown macro '${c6}'"),
            ("models.m.description", "unknown macro '${c7}'"),
        ]
    )


def test_pid_is_only_for_cmd_stop() -> None:
    assert errors_of(
        """
        models:
          m: {cmd: "srv ${PORT} ${PID}"}
        """
    ) == [("models.m.cmd", "unknown macro '${PID}': ${PID} is only available in cmdStop")]


def test_port_is_substituted_in_every_field_of_its_model() -> None:
    plan = plan_of(
        """
        startPort: 6100
        models:
          m:
            cmd: "srv ${PORT}"
            checkEndpoint: "/health/${PORT}"
            env: ["PORT=${PORT}"]
            useModelName: "m-${PORT}"
            filters: {setParams: {port: "${PORT}"}}
        """
    )
    m = plan.models["m"]
    assert (m.checkEndpoint, m.env, m.useModelName) == ("/health/6100", ("PORT=6100",), "m-6100")
    assert dict(m.filters.setParams) == {"port": 6100}


def test_port_cannot_name_a_model() -> None:
    assert errors_of(
        """
        models:
          m: {cmd: "srv ${PORT}", aliases: ["m-${PORT}"]}
        """
    ) == [
        (
            "models.m.aliases",
            "macro '${PORT}' cannot be used in aliases: names a model answers to are "
            "resolved before ports are allocated",
        )
    ]


@pytest.mark.parametrize("name", ["PORT", "MODEL_ID", "PID"])
def test_reserved_names(name: str) -> None:
    assert errors_of(
        f"""
        macros: {{{name}: "1"}}
        models:
          m:
            cmd: srv ${{PORT}}
            macros: {{{name}: "2"}}
        """
    ) == [
        (f"macros.{name}", f"macro name '{name}' is reserved"),
        (f"models.m.macros.{name}", f"macro name '{name}' is reserved"),
    ]


def test_pid_is_a_reserved_macro_name() -> None:
    assert validate_macro("PID", "x") == "macro name 'PID' is reserved"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("s", "plain", None),
        ("i", 42, None),
        ("f", 0.5, None),
        ("b", True, None),
        (
            "l",
            [1],
            "macro 'l' has invalid type list, must be a scalar type (string, int, float, or bool)",
        ),
        (
            "m",
            {"k": 1},
            "macro 'm' has invalid type mapping, must be a scalar type (string, int, float, or bool)",
        ),
        (
            "n",
            None,
            "macro 'n' has invalid type null, must be a scalar type (string, int, float, or bool)",
        ),
        ("self", "a ${self}", "macro 'self' contains self-reference"),
        (
            "bad name",
            "x",
            "macro name 'bad name' contains invalid characters, must match pattern ^[a-zA-Z0-9_-]+$",
        ),
        ("x" * 64, "v", "macro name '" + "x" * 64 + "' exceeds maximum length of 63 characters"),
    ],
)
def test_macro_validation(name: str, value: object, message: str | None) -> None:
    assert validate_macro(name, value) == message


def test_broken_macro_is_reported_once_not_again_where_used() -> None:
    assert errors_of(
        """
        macros:
          bad: [1, 2]
        models:
          m: {cmd: "srv ${bad} ${PORT}"}
        """
    ) == [
        (
            "macros.bad",
            "macro 'bad' has invalid type list, must be a scalar type (string, int, float, or bool)",
        )
    ]


def test_typed_macros_in_metadata() -> None:
    plan = plan_of(
        """
        macros:
          temp: 0.7
          ctx: 4096
          fast: true
          label: "hello"
        models:
          m:
            cmd: srv ${PORT}
            metadata:
              temperature: ${temp}
              context: ${ctx}
              fast: ${fast}
              label: ${label}
              text: "ctx=${ctx} temp=${temp}"
              port: ${PORT}
              id: ${MODEL_ID}
              nested:
                list: ["${ctx}", "x-${label}", {deep: "${fast}"}]
        """
    )
    assert dict(plan.models["m"].metadata) == {
        "temperature": 0.7,
        "context": 4096,
        "fast": True,
        "label": "hello",
        "text": "ctx=4096 temp=0.7",
        "port": 5800,
        "id": "m",
        "nested": plan.models["m"].metadata["nested"],
    }
    nested = plan.models["m"].metadata["nested"]
    assert nested["list"][0] == 4096 and nested["list"][1] == "x-hello"
    assert nested["list"][2]["deep"] is True


def test_model_macro_precedence_in_metadata() -> None:
    plan = plan_of(
        """
        macros: {a: global, b: only-global}
        models:
          m:
            cmd: srv ${PORT}
            macros: {a: model}
            metadata: {a: "${a}", b: "${b}"}
        """
    )
    assert dict(plan.models["m"].metadata) == {"a": "model", "b": "only-global"}


def test_unknown_macro_in_metadata() -> None:
    assert errors_of(
        """
        models:
          m:
            cmd: srv ${PORT}
            metadata: {deep: [{x: "${nope}"}]}
        """
    ) == [("models.m.metadata", "unknown macro '${nope}'")]


def test_macros_in_name_and_description() -> None:
    plan = plan_of(
        """
        macros: {family: Llama}
        models:
          m:
            cmd: srv ${PORT}
            name: "${family} (${MODEL_ID})"
            description: "served on ${PORT}"
        """
    )
    assert plan.models["m"].name == "Llama (m)"
    assert plan.models["m"].description == "served on 5800"


def test_env_and_aliases_and_use_model_name_get_macros_too() -> None:
    plan = plan_of(
        """
        macros: {x: X}
        models:
          m:
            cmd: srv ${PORT}
            env: ["A=${x}"]
            aliases: ["${MODEL_ID}-${x}"]
            useModelName: "${x}"
        """
    )
    assert plan.models["m"].env == ("A=X",)
    assert plan.models["m"].aliases == ("m-X",)
    assert plan.models["m"].useModelName == "X"


def test_a_model_macro_does_not_reach_another_model() -> None:
    assert errors_of(
        """
        models:
          a: {cmd: "srv ${PORT}", macros: {LOCAL: x}, env: ["A=${LOCAL}"]}
          b: {cmd: "srv ${PORT}", env: ["B=${LOCAL}"]}
        """
    ) == [("models.b.env[0]", "unknown macro '${LOCAL}'")]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (0.7, "0.7"),
        (5.0, "5"),
        (123456.0, "123456"),
        (1234567.0, "1.234567e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (-2.5, "-2.5"),
        ("s", "s"),
    ],
)
def test_values_are_formatted_as_the_original_prints_them(value: object, text: str) -> None:
    assert format_value(value) == text
