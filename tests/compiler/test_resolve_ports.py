"""${PORT} allocation (reference §2.13.3; Go TestConfig_AutomaticPortAssignments, TestConfig_MacroModelId)."""

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
