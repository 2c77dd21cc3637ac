"""schema/config.schema.json: a valid 2020-12 schema that describes every config key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from llama_swap.compiler.load import config_schema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema" / "config.schema.json"

TIMEOUT_KEYS = (
    "connect",
    "keepalive",
    "responseHeader",
    "tlsHandshake",
    "expectContinue",
    "idleConn",
)
# Every key of the reference's tables, as a path of property names ("*" = any map key).
EVERY_KEY = [
    "healthCheckTimeout",
    "logRequests",
    "logLevel",
    "logTimeFormat",
    "logToStdout",
    "metricsMaxInMemory",
    "captureBuffer",
    "maxRequestBody",
    "performance.disabled",
    "performance.every",
    "globalTTL",
    "startPort",
    "macros",
    "models",
    "profiles",
    "groups",
    "matrix",
    "routing",
    "hooks.on_startup.preload",
    "sendLoadingState",
    "includeAliasesInList",
    "apiKeys",
    "peers",
    "upstream.ignorePaths",
    # §2.3 per model
    *(
        f"models.*.{k}"
        for k in (
            "cmd",
            "cmdStop",
            "proxy",
            "aliases",
            "env",
            "checkEndpoint",
            "ttl",
            "unlisted",
            "useModelName",
            "name",
            "description",
            "concurrencyLimit",
            "filters",
            "macros",
            "metadata",
            "sendLoadingState",
            "timeouts",
            "capabilities",
            "healthCheckTimeout",
        )
    ),
    # §2.4 timeouts, §2.5 filters, §2.6 capabilities
    *(f"{scope}.*.timeouts.{k}" for scope in ("models", "peers") for k in TIMEOUT_KEYS),
    "models.*.filters.stripParams",
    "models.*.filters.strip_params",
    "models.*.filters.setParams",
    "models.*.filters.setParamsByID",
    *(f"models.*.capabilities.{k}" for k in ("in", "out", "tools", "reranker", "context")),
    # §2.7 peers
    *(f"peers.*.{k}" for k in ("proxy", "apiKey", "models", "filters", "timeouts")),
    "peers.*.filters.stripParams",
    "peers.*.filters.setParams",
    "peers.*.filters.setParamsByID",
    # §2.9 routing, §2.10-2.12 groups and matrix
    "routing.router.use",
    "routing.router.settings.groups",
    "routing.router.settings.matrix",
    "routing.scheduler.use",
    "routing.scheduler.settings.fifo.priority",
    *(
        f"{scope}.*.{k}"
        for scope in ("groups", "routing.router.settings.groups")
        for k in ("members", "swap", "exclusive", "persistent")
    ),
    *(
        f"{scope}.{k}"
        for scope in ("matrix", "routing.router.settings.matrix")
        for k in ("vars", "evict_costs", "sets")
    ),
]


def deref(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def find(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    node = schema
    for part in dotted.split("."):
        node = deref(schema, node)
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    return deref(schema, node)


def test_schema_is_valid_against_its_metaschema() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_the_compiler_loads_the_same_schema_it_ships() -> None:
    assert config_schema() == json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert (
        SCHEMA_FILE.parent / "__init__.py"
    ).exists()  # `schema` is a package: importlib.resources


@pytest.mark.parametrize("dotted", EVERY_KEY)
def test_every_documented_key_is_described(dotted: str) -> None:
    node = find(config_schema(), dotted)
    assert node.get("description"), f"{dotted} has no description"


def test_every_property_everywhere_has_a_description() -> None:
    missing: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                if "$ref" not in prop and not prop.get("description"):
                    missing.append(f"{where}.{name}")
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(config_schema(), "$")
    assert missing == []


def test_scheduler_and_router_enums_and_defaults() -> None:
    schema = config_schema()
    use = find(schema, "routing.scheduler.use")
    assert (use["enum"], use["default"]) == (["serial", "fifo"], "serial")
    router = find(schema, "routing.router.use")
    assert (router["enum"], router["default"]) == (["group", "matrix", "budget"], "group")


@pytest.mark.parametrize(
    ("dotted", "default"),
    [
        ("healthCheckTimeout", 120),
        ("logLevel", "info"),
        ("logToStdout", "proxy"),
        ("metricsMaxInMemory", 1000),
        ("captureBuffer", 5),
        ("maxRequestBody", 268435456),
        ("performance.every", "5s"),
        ("globalTTL", 0),
        ("startPort", 5800),
        ("models.*.checkEndpoint", "/health"),
        ("models.*.ttl", -1),
        ("models.*.proxy", "http://localhost:${PORT}"),
        ("models.*.timeouts.responseHeader", 0),
        ("peers.*.timeouts.responseHeader", 60),
        ("groups.*.swap", True),
        ("groups.*.exclusive", True),
        ("groups.*.persistent", False),
    ],
)
def test_defaults_match_the_reference(dotted: str, default: Any) -> None:
    assert find(config_schema(), dotted)["default"] == default


def test_a_full_example_config_is_valid() -> None:
    example = {
        "healthCheckTimeout": 60,
        "logLevel": "debug",
        "logToStdout": "both",
        "performance": {"every": "1m30s"},
        "startPort": 9000,
        "macros": {"bin": "/opt/llama-server", "ctx": 8192, "flash": True},
        "models": {
            "llama": {
                "cmd": "${bin} --port ${PORT}",
                "aliases": ["gpt-4o"],
                "env": ["CUDA_VISIBLE_DEVICES=0"],
                "checkEndpoint": "none",
                "ttl": -1,
                "filters": {
                    "stripParams": "temperature, top_p",
                    "setParamsByID": {"llama-hot": {"temperature": 1.2}},
                },
                "metadata": {"any": [1, {"x": None}]},
                "sendLoadingState": None,
                "capabilities": {"in": ["text", "image"], "context": 8192},
                "timeouts": {"responseHeader": 30},
            }
        },
        "routing": {
            "router": {
                "use": "matrix",
                "settings": {"matrix": {"vars": {"l": "llama"}, "sets": {"s": "l"}}},
            },
            "scheduler": {"use": "fifo", "settings": {"fifo": {"priority": {"llama": 3}}}},
        },
        "hooks": {"on_startup": {"preload": ["llama"]}},
        "apiKeys": ["sk-1"],
        "peers": {"p": {"proxy": "http://10.0.0.2:8080", "models": ["big"], "apiKey": "k"}},
        "upstream": {"ignorePaths": ["^/static/"]},
    }
    errors = list(Draft202012Validator(config_schema()).iter_errors(example))
    assert errors == []


EXAMPLES = SCHEMA_FILE.parents[1] / "fragments.example"


@pytest.mark.parametrize("fragment", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_the_editor_modeline_finds_the_schema_and_each_fragment_passes_on_its_own(
    fragment: str,
) -> None:
    # yaml-language-server reads `# yaml-language-server: $schema=<path>` from the first line,
    # resolves the path against the file, and checks the file alone (not the merged config).
    import re

    import yaml

    path = EXAMPLES / fragment
    first = path.read_text(encoding="utf-8").splitlines()[0]
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
    assert match, first
    assert (path.parent / match.group(1)).resolve() == SCHEMA_FILE
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    refs = re.findall(r'"\$ref": "([^"]*)"', SCHEMA_FILE.read_text(encoding="utf-8"))
    assert refs and all(r.startswith("#/$defs/") for r in refs)  # no fetch beyond the file
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert [e.message for e in Draft202012Validator(schema).iter_errors(doc)] == []
