"""Schema validation of the merged document: plain messages, exact locations, unknown-key warnings."""

from __future__ import annotations

import pytest

from llama_swap.compiler.render import render_text

from .frontend_util import compile_err, compile_ok, src, summary, where

MODEL = "  m:\n    cmd: srv --port ${PORT}\n"


def test_unknown_key_is_a_warning_with_a_did_you_mean() -> None:
    result = compile_ok(src("a.yaml", f"healthCheckTimout: 30\nmodels:\n{MODEL}"))
    (w,) = result.warnings
    assert w.severity == "warning"
    assert (
        w.message == "unknown key 'healthCheckTimout' (ignored); did you mean 'healthCheckTimeout'?"
    )
    assert where(w) == "a.yaml:1:1"
    assert result.plan.settings.healthCheckTimeout == 120  # ignored, like the original


def test_unknown_keys_are_found_at_every_level() -> None:
    result = compile_ok(
        src(
            "a.yaml",
            """
            models:
              m:
                cmd: srv --port ${PORT}
                proxi: http://x
                timeouts: {conect: 5}
            routing:
              scheduler: {uze: fifo}
            something: else
            """,
        )
    )
    assert [(w.path, w.message) for w in result.warnings] == [
        ("models.m.proxi", "unknown key 'proxi' (ignored); did you mean 'proxy'?"),
        ("models.m.timeouts.conect", "unknown key 'conect' (ignored); did you mean 'connect'?"),
        ("routing.scheduler.uze", "unknown key 'uze' (ignored); did you mean 'use'?"),
        ("something", "unknown key 'something' (ignored)"),
    ]


def test_free_form_maps_accept_any_key() -> None:
    result = compile_ok(
        src(
            "a.yaml",
            """
            models:
              m:
                cmd: srv --port ${PORT}
                metadata: {anything: {goes: [1, 2]}}
                filters: {setParams: {whatever: 1}}
            """,
        )
    )
    assert result.warnings == ()


def test_strict_turns_warnings_into_errors() -> None:
    err = compile_err(src("a.yaml", f"globalTTl: 5\nmodels:\n{MODEL}"), strict=True)
    assert summary(err) == [
        ("a.yaml:1:1", "globalTTl", "unknown key 'globalTTl'; did you mean 'globalTTL'?")
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "models:\n  m:\n    cmd: srv\n    ttl: soon\n",
            [("a.yaml:4:10", "models.m.ttl", 'expected an integer, got a string "soon"')],
            id="type errors point at the value",
        ),
        pytest.param(
            "models:\n  m:\n    proxy: http://x:1\n",
            [("a.yaml:2:3", "models.m.cmd", "required key 'cmd' is missing")],
            id="a missing required key points at the owner",
        ),
        pytest.param(
            "routing:\n  scheduler:\n    use: lifo\n",
            [
                (
                    "a.yaml:3:10",
                    "routing.scheduler.use",
                    'must be one of "serial", "fifo"; got "lifo"',
                )
            ],
            id="enum errors list the choices",
        ),
        pytest.param(
            "macros:\n  ok: 1\n  MODEL_ID: x\n  'bad name': 2\n",
            [
                ("a.yaml:3:3", "macros.MODEL_ID", '"MODEL_ID" is a reserved name'),
                (
                    "a.yaml:4:3",
                    "macros.bad name",
                    "key name \"bad name\": may contain only letters, digits, '_' and '-'",
                ),
            ],
            id="bad key names point at the key",
        ),
        pytest.param(
            "globalTTL: 1\nglobalTTL: 2\n",
            [
                (
                    "a.yaml:2:1",
                    "globalTTL",
                    "key 'globalTTL' is defined twice in this mapping (first at line 1)",
                )
            ],
            id="a duplicate key in one file is an error",
        ),
        pytest.param(
            # `on`/`yes` are strings (not booleans), so they are wrong for a boolean key
            "sendLoadingState: yes\n",
            [
                (
                    "a.yaml:1:19",
                    "sendLoadingState",
                    'expected a boolean (true/false), got a string "yes"',
                )
            ],
            id="YAML 1.2 scalars like the original",
        ),
        pytest.param(
            "macros:\n  q:\napiKeys: [~]\nmodels:\n  m:\n    cmd:\n  n:\n",
            [
                (
                    "a.yaml:2:5",
                    "macros.q",
                    "expected a string or a number or a boolean (true/false), got an empty value",
                ),
                ("a.yaml:3:11", "apiKeys[0]", "expected a string, got an empty value"),
                ("a.yaml:6:9", "models.m.cmd", "required key 'cmd' is empty"),
                ("a.yaml:7:5", "models.n", "expected a mapping, got an empty value"),
            ],
            id="empty entities, macros, list items and required keys stay errors",
        ),
    ],
)
def test_schema_errors_in_one_file_are_reported_where_they_stand(
    text: str, expected: list[tuple[str, str, str]]
) -> None:
    assert summary(compile_err(src("a.yaml", text))) == expected


def test_all_schema_errors_are_reported_sorted_by_file_and_line() -> None:
    err = compile_err(
        src("b.yaml", "apiKeys: ['a b']\nstartPort: 0\n"),
        src("a.yaml", "models:\n  m:\n    cmd: ''\n    env: [NOEQUALS]\nglobalTTL: -1\n"),
    )
    assert [(where(d), d.path) for d in err.errors] == [
        ("a.yaml:3:10", "models.m.cmd"),
        ("a.yaml:4:11", "models.m.env[0]"),
        ("a.yaml:5:12", "globalTTL"),
        ("b.yaml:1:11", "apiKeys[0]"),
        ("b.yaml:2:12", "startPort"),
    ]


def test_yaml_syntax_errors_come_with_a_location_and_other_files_still_checked() -> None:
    err = compile_err(src("a.yaml", "models: [\n"), src("b.yaml", "globalTTL: x\n"))
    assert [(where(d).rsplit(":", 1)[0], d.message.split(":")[0]) for d in err.errors] == [
        ("a.yaml:2", "invalid YAML"),
        ("b.yaml:1", 'expected an integer, got a string "x"'),
    ]


def test_top_level_must_be_a_mapping() -> None:
    err = compile_err(src("a.yaml", "- models\n"))
    assert "must be a mapping" in err.errors[0].message


def test_rendered_text_shows_the_line_and_a_caret() -> None:
    err = compile_err(src("conf/20-models.yaml", "models:\n  llama:\n    ttl: soon\n    cmd: x\n"))
    assert render_text(err.diagnostics, err.texts) == (
        'conf/20-models.yaml:3:10: models.llama.ttl: expected an integer, got a string "soon"\n'
        "        ttl: soon\n"
        "             ^\n"
        "found 1 error\n"
    )


def test_resolver_errors_get_locations_from_the_source_map() -> None:
    err = compile_err(
        src("a.yaml", "models:\n  a.b:\n    cmd: srv --port ${PORT}\n    aliases: [x]\n"),
        src("b.yaml", "models:\n  c:\n    cmd: srv --port ${UNDEFINED}\n    proxy: http://h:1\n"),
    )
    (d,) = err.errors
    assert (where(d), d.path) == ("b.yaml:3:10", "models.c.cmd")


def test_resolver_paths_are_looked_up_with_dotted_model_ids() -> None:
    err = compile_err(
        src("a.yaml", "models:\n  a.b:\n    cmd: srv --port ${PORT}\n    aliases: [x]\n"),
        src("b.yaml", "models:\n  c:\n    cmd: srv --port ${PORT}\n    aliases: [x]\n"),
    )
    (d,) = err.errors
    assert (where(d), d.keys) == ("b.yaml:4:15", ("models", "c", "aliases", 0))


def test_a_setting_left_empty_keeps_its_default_like_the_original() -> None:
    text = (
        "globalTTL:\nhealthCheckTimeout: ~\napiKeys:\nmacros:\nhooks:\nrouting:\n"
        "models:\n  m:\n    cmd: srv --port ${PORT}\n    env:\n    ttl:\n    filters:\n"
        "      setParams: {keep: null}\n    metadata: {keep: ~}\n"
    )
    plan = compile_ok(src("a.yaml", text)).plan
    assert (plan.settings.globalTTL, plan.settings.healthCheckTimeout) == (0, 120)
    assert plan.settings.apiKeys == ()
    model = plan.models["m"]
    assert (model.env, model.ttl) == ((), 0)
    assert dict(model.filters.setParams) == {"keep": None}  # free-form values pass nulls through
    assert dict(model.metadata) == {"keep": None}
