"""${PORT} allocation."""

from __future__ import annotations

from .resolve_util import errors_of, plan_of


def test_default_start_port_is_5800() -> None:
    plan = plan_of("models: {m: {cmd: 'srv --port ${PORT}'}}")
    assert plan.models["m"].cmd[-1] == "5800"
    assert plan.models["m"].proxy == "http://localhost:5800"


def test_ports_follow_sorted_model_ids_and_only_port_users_consume_one() -> None:
    plan = plan_of(
        """
        startPort: 9000
        models:
          model2: {cmd: "srv ${PORT}"}
          fixed: {cmd: "srv --port 7000", proxy: "http://127.0.0.1:7000"}
          "author/model:F16": {cmd: "srv ${PORT}"}
          model1: {cmd: "srv ${PORT}"}
        """
    )
    assert {mid: m.proxy for mid, m in plan.models.items()} == {
        "author/model:F16": "http://localhost:9000",
        "fixed": "http://127.0.0.1:7000",
        "model1": "http://localhost:9001",
        "model2": "http://localhost:9002",
    }
    assert list(plan.models) == sorted(plan.models)


def test_port_reaches_cmd_stop_name_description_and_metadata() -> None:
    m = plan_of(
        """
        models:
          m:
            cmd: srv ${PORT}
            cmdStop: stop ${PORT}
            name: "m@${PORT}"
            description: "port ${PORT}"
            metadata: {port: "${PORT}", url: "http://x:${PORT}"}
        """
    ).models["m"]
    assert m.cmdStop == ("stop", "5800")
    assert (m.name, m.description) == ("m@5800", "port 5800")
    assert dict(m.metadata) == {"port": 5800, "url": "http://x:5800"}


def test_default_proxy_needs_port_in_cmd() -> None:
    assert errors_of("models: {m: {cmd: 'srv --port 8080'}}") == [
        (
            "models.m.proxy",
            "proxy uses ${PORT} but cmd does not - ${PORT} is only available when used in cmd "
            "(the default proxy is http://localhost:${PORT}; set proxy explicitly or use ${PORT} in cmd)",
        )
    ]


def test_explicit_proxy_with_port_but_cmd_without() -> None:
    assert errors_of("models: {m: {cmd: 'srv', proxy: 'http://h:${PORT}'}}") == [
        (
            "models.m.proxy",
            "proxy uses ${PORT} but cmd does not - ${PORT} is only available when used in cmd",
        )
    ]


def test_start_port_must_be_positive() -> None:
    assert errors_of("startPort: -1\nmodels: {}") == [
        ("startPort", "startPort must be >= 1, got -1")
    ]
    assert plan_of("startPort: 1\nmodels: {m: {cmd: 'srv ${PORT}'}}").models["m"].cmd == (
        "srv",
        "1",
    )


def test_start_port_must_be_an_integer() -> None:
    assert errors_of("startPort: abc") == [("startPort", "expected an integer, got string")]


def test_ports_past_65535_are_an_error() -> None:
    assert errors_of(
        """
        startPort: 65535
        models:
          a: {cmd: "srv ${PORT}"}
          b: {cmd: "srv ${PORT}"}
        """
    ) == [
        (
            "models.b.cmd",
            "no port left for ${PORT}: it would be 65536, above 65535 (lower startPort)",
        )
    ]


# -- port_hints: sticky ports for hot reload (a deliberate extension; swap-compile never passes them)


def ports_with(text: str, hints: dict[str, int] | None) -> dict[str, str]:
    from llama_swap.compiler.resolve import resolve

    from .resolve_util import doc

    plan, _ = resolve(doc(text), (), port_hints=hints)
    return {mid: m.proxy.rsplit(":", 1)[1] for mid, m in plan.models.items()}


THREE = """
startPort: 9000
models:
  b: {cmd: "srv ${PORT}"}
  c: {cmd: "srv ${PORT}"}
  fixed: {cmd: "srv 7000", proxy: "http://h:7000"}
  d: {cmd: "srv ${PORT}"}
"""


def test_without_hints_ports_are_consecutive_in_id_order() -> None:
    assert (
        ports_with(THREE, None)
        == ports_with(THREE, {})
        == {
            "b": "9000",
            "c": "9001",
            "d": "9002",
            "fixed": "7000",
        }
    )


def test_a_model_added_before_the_others_keeps_their_hinted_ports() -> None:
    before = {"b": 9000, "c": 9001, "d": 9002}
    added = THREE.replace("models:\n", 'models:\n  a: {cmd: "srv ${PORT}"}\n')
    assert ports_with(added, None)["b"] == "9001"  # Go's allocation shifts every later model
    assert ports_with(added, before) == {
        "a": "9003",
        "b": "9000",
        "c": "9001",
        "d": "9002",
        "fixed": "7000",
    }


def test_a_removed_model_leaves_a_gap_that_the_next_new_model_fills() -> None:
    hints = {"b": 9000, "c": 9001, "d": 9002}
    text = THREE.replace('  c: {cmd: "srv ${PORT}"}\n', '  e: {cmd: "srv ${PORT}"}\n')
    assert ports_with(text, hints) == {"b": "9000", "d": "9002", "e": "9001", "fixed": "7000"}


def test_unusable_hints_are_ignored() -> None:
    hints = {
        "b": 8999,  # below startPort
        "c": 9005,
        "d": 9005,  # already claimed by c (earlier in id order)
        "fixed": 9001,  # does not use ${PORT}: takes no port
        "gone": 9000,  # no such model
    }
    assert ports_with(THREE, hints) == {"b": "9000", "c": "9005", "d": "9001", "fixed": "7000"}
    assert ports_with(THREE, {"b": 70000}) == ports_with(THREE, None)


def test_compile_reports_ports_and_derive_ports_recovers_them_from_a_plan() -> None:
    from llama_swap.compiler.pipeline import compile_sources
    from llama_swap.compiler.ports import derive_ports

    text = THREE.replace(
        '  d: {cmd: "srv ${PORT}"}',
        '  d: {cmd: "srv --listen ${PORT}", proxy: "http://127.0.0.1:${PORT}/v1"}',
    )
    result = compile_sources([("a.yaml", text)], env={}, port_hints={"d": 9100})
    assert dict(result.ports) == {"b": 9000, "c": 9001, "d": 9100}
    # a fixed port is guessed too; harmless, hints only apply to models using ${PORT}
    assert derive_ports(result.plan) == {**result.ports, "fixed": 7000}
