"""Top-level defaults and per-model defaults: ttl, concurrency, loading state, timeouts, capabilities."""

from __future__ import annotations

import pytest

from llama_swap.compiler.defaults import format_duration, parse_duration
from llama_swap.compiler.plan import Settings, Timeouts
from llama_swap.compiler.profiles import LEGACY_WARNING

from .resolve_util import errors_of, json_of, plan_of

ONE = "models: {m: {cmd: 'srv ${PORT}'}}\n"


def test_all_defaults() -> None:
    plan = plan_of(ONE)
    assert plan.settings == Settings()
    m = plan.models["m"]
    assert (m.checkEndpoint, m.ttl, m.concurrencyLimit, m.unlisted, m.useModelName) == (
        "/health",
        0,
        10,
        False,
        "",
    )
    assert (m.env, m.aliases, m.sendLoadingState) == ((), (), False)
    assert m.timeouts == Timeouts(
        connect=30, keepalive=30, responseHeader=0, tlsHandshake=10, expectContinue=1, idleConn=90
    )


def test_empty_document_yields_a_plan_of_defaults() -> None:
    plan = plan_of({})
    assert dict(plan.models) == {} and plan.settings == Settings()
    assert plan.routing.groups["(default)"].members == ()


@pytest.mark.parametrize(("value", "expected"), [(5, 15), (15, 15), (300, 300)])
def test_health_check_timeout_minimum_is_15(value: int, expected: int) -> None:
    assert plan_of(f"healthCheckTimeout: {value}").settings.healthCheckTimeout == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "5s"),
        ("0s", "5s"),
        ("15s", "15s"),
        ("1m30s", "1m30s"),
        ("90s", "1m30s"),
        ("1h", "1h0m0s"),
    ],
)
def test_performance_every(text: str | None, expected: str) -> None:
    doc = {"performance": {"every": text}} if text else {}
    assert plan_of(doc).settings.performanceEvery == expected


def test_performance_every_minimum_and_syntax() -> None:
    assert errors_of("performance: {every: 4s}") == [
        ("performance.every", "every must be at least 5s, got 4s")
    ]
    assert errors_of("performance: {every: 10}") == [
        ("performance.every", "expected a duration string such as '15s' or '1m30s', got int")
    ]
    assert errors_of("performance: {every: ten}") == [
        ("performance.every", 'invalid duration "ten"')
    ]


def test_duration_round_trip() -> None:
    assert parse_duration("1m30.5s") == 90_500_000_000
    assert format_duration(parse_duration("2h3m4s")) == "2h3m4s"
    assert format_duration(1_500_000) == "1.5ms"
    with pytest.raises(ValueError, match="missing unit"):
        parse_duration("5")


def test_performance_disabled() -> None:
    assert plan_of("performance: {disabled: true}").settings.performanceDisabled is True


def test_global_ttl_is_the_model_default() -> None:
    plan = plan_of(
        """
        globalTTL: 600
        models:
          inherit: {cmd: "srv ${PORT}"}
          explicit_default: {cmd: "srv ${PORT}", ttl: -1}
          never: {cmd: "srv ${PORT}", ttl: 0}
          own: {cmd: "srv ${PORT}", ttl: 30}
        """
    )
    assert {k: m.ttl for k, m in plan.models.items()} == {
        "explicit_default": 600,
        "inherit": 600,
        "never": 0,
        "own": 30,
    }


def test_negative_ttls() -> None:
    assert errors_of("globalTTL: -1\nmodels: {m: {cmd: 'srv ${PORT}', ttl: -2}}") == [
        ("globalTTL", "globalTTL must be >= 0, got -1"),
        ("models.m.ttl", "invalid TTL value -2 (use -1 for globalTTL, 0 to never unload)"),
    ]


@pytest.mark.parametrize(("value", "expected"), [(None, 10), (0, 10), (-3, 10), (1, 1), (50, 50)])
def test_concurrency_limit_default(value: int | None, expected: int) -> None:
    doc = {"models": {"m": {"cmd": "srv ${PORT}", "concurrencyLimit": value}}}
    assert plan_of(doc).models["m"].concurrencyLimit == expected


def test_send_loading_state_inherits_the_global_value() -> None:
    plan = plan_of(
        """
        sendLoadingState: true
        models:
          inherit: {cmd: "srv ${PORT}"}
          quiet: {cmd: "srv ${PORT}", sendLoadingState: false}
        """
    )
    assert (plan.models["inherit"].sendLoadingState, plan.models["quiet"].sendLoadingState) == (
        True,
        False,
    )


def test_ignore_paths_default_custom_and_invalid() -> None:
    default = Settings().ignorePaths
    assert plan_of("upstream: {}").settings.ignorePaths == default
    assert plan_of("upstream: {ignorePaths: []}").settings.ignorePaths == default
    assert plan_of("upstream: {ignorePaths: ['^/static/']}").settings.ignorePaths == ("^/static/",)
    [(path, message)] = errors_of("upstream: {ignorePaths: ['ok', '(unclosed']}")
    assert path == "upstream.ignorePaths[1]"
    assert message.startswith('invalid regular expression "(unclosed": ')


def test_log_to_stdout_enum() -> None:
    assert plan_of("logToStdout: both").settings.logToStdout == "both"
    assert errors_of("logToStdout: loud") == [
        ("logToStdout", "logToStdout must be one of: proxy, upstream, both, none")
    ]


def test_api_keys() -> None:
    assert plan_of("apiKeys: [k1, k2]").settings.apiKeys == ("k1", "k2")
    assert errors_of("apiKeys: ['ok', '', 'has space']") == [
        ("apiKeys[1]", "empty api key found in apiKeys"),
        ("apiKeys[2]", "api key cannot contain spaces"),
    ]


def test_metrics_and_capture_buffer_clamps() -> None:
    s = plan_of("metricsMaxInMemory: 0\ncaptureBuffer: -4").settings
    assert (s.metricsMaxInMemory, s.captureBuffer) == (1000, 0)


def test_max_request_body_defaults_to_256_mib_takes_0_for_no_limit_and_refuses_negatives() -> None:
    assert plan_of("").settings.maxRequestBody == 256 << 20
    assert plan_of("maxRequestBody: 0").settings.maxRequestBody == 0
    assert plan_of("maxRequestBody: 1048576").settings.maxRequestBody == 1 << 20
    assert errors_of("maxRequestBody: -1") == [
        ("maxRequestBody", "maxRequestBody must be >= 0 (0 = no limit), got -1")
    ]


def test_model_timeouts_custom_and_zero() -> None:
    m = plan_of(
        "models: {m: {cmd: 'srv ${PORT}', timeouts: {connect: 5, responseHeader: 120, idleConn: 0}}}"
    ).models["m"]
    assert m.timeouts == Timeouts(
        connect=5, keepalive=30, responseHeader=120, tlsHandshake=10, expectContinue=1, idleConn=0
    )


def test_capabilities() -> None:
    caps = json_of(
        "models: {m: {cmd: 'srv ${PORT}', capabilities: {in: [text, image], out: [text], tools: true, context: 8192}}}"
    )["models"]["m"]["capabilities"]
    assert caps == {
        "in": ["text", "image"],
        "out": ["text"],
        "tools": True,
        "reranker": False,
        "context": 8192,
    }
    assert errors_of(
        "models: {m: {cmd: 'srv ${PORT}', capabilities: {in: [video], out: [smell], context: -1}}}"
    ) == [
        ("models.m.capabilities.context", "capabilities.context: must be >= 0"),
        (
            "models.m.capabilities.in[0]",
            "capabilities.in: invalid modality 'video', must be one of: text, audio, image",
        ),
        (
            "models.m.capabilities.out[0]",
            "capabilities.out: invalid modality 'smell', must be one of: text, audio, image",
        ),
    ]


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        (
            "localhost:8080",
            "invalid proxy URL 'localhost:8080': must be an absolute http:// or https:// URL with a host",
        ),
        ("http://h:99999", "invalid proxy URL 'http://h:99999': Port out of range 0-65535"),
        ("", "invalid proxy URL '': must be an absolute http:// or https:// URL with a host"),
    ],
)
def test_proxy_url_is_checked(proxy: str, message: str) -> None:
    assert errors_of(f"models: {{m: {{cmd: srv, proxy: '{proxy}'}}}}") == [
        ("models.m.proxy", message)
    ]


def test_check_endpoint_none_is_normalised() -> None:
    assert (
        plan_of("models: {m: {cmd: 'srv ${PORT}', checkEndpoint: ' none '}}")
        .models["m"]
        .checkEndpoint
        == "none"
    )


def test_per_model_health_check_timeout_is_ignored_with_a_warning() -> None:
    from .resolve_util import warnings_of

    assert warnings_of("models: {m: {cmd: 'srv ${PORT}', healthCheckTimeout: 500}}") == [
        (
            "models.m.healthCheckTimeout",
            "ignored: the global healthCheckTimeout applies to every model",
        )
    ]


def test_the_legacy_profile_list_is_accepted_with_a_warning_and_ignored() -> None:
    from .resolve_util import plan_of, warnings_of

    assert warnings_of("profiles: {p: [m]}\n" + ONE) == [("profiles.p", LEGACY_WARNING)]
    assert dict(plan_of("profiles: {p: [m]}\n" + ONE).profiles) == {}
