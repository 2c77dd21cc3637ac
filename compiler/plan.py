"""The compiled plan: the one artefact the runtime loads.

The compiler's output and the runtime's input meet here, so this module owns
both directions: `plan_from_dict` (JSON -> frozen dataclasses) and
`plan_to_dict` (dataclasses -> JSON-ready dict with a deterministic key
order).  Everything is frozen: dataclasses are `frozen=True, slots=True`,
sequences are tuples and mappings are read-only `MappingProxyType`s, so a
plan can be shared across tasks and swapped by replacing one reference.

Field names are the JSON names (camelCase where the config uses camelCase);
they are fixed because other tools read the plan.  See docs/plan.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

PLAN_VERSION = 1
REDACTED = "***REDACTED***"

JSON = Any


def freeze(value: JSON) -> JSON:
    """Return a deeply read-only copy of a JSON value (dict -> MappingProxyType, list -> tuple)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: JSON) -> JSON:
    """Inverse of `freeze`: plain dicts and lists, ready for `json.dumps`."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


def _empty_map() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Upstream HTTP client timeouts in seconds; 0 disables that timeout."""

    connect: int = 30
    keepalive: int = 30
    responseHeader: int = 0
    tlsHandshake: int = 10
    expectContinue: int = 1
    idleConn: int = 90


@dataclass(frozen=True, slots=True)
class Filters:
    """Request-body rewrites applied before forwarding (already sanitised: no `model` key)."""

    stripParams: tuple[str, ...] = ()
    setParams: Mapping[str, Any] = field(default_factory=_empty_map)
    setParamsByID: Mapping[str, Mapping[str, Any]] = field(default_factory=_empty_map)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a model can do, rendered into /v1/models records."""

    in_: tuple[str, ...] = ()
    out: tuple[str, ...] = ()
    tools: bool = False
    reranker: bool = False
    context: int = 0


@dataclass(frozen=True, slots=True)
class Model:
    """One local model, fully resolved: macros expanded, port allocated, argv split."""

    id: str
    cmd: tuple[str, ...]
    cmdStop: tuple[str, ...] | None
    proxy: str
    checkEndpoint: str
    ttl: int
    env: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    unlisted: bool = False
    useModelName: str = ""
    concurrencyLimit: int = 10
    filters: Filters = field(default_factory=Filters)
    metadata: Mapping[str, Any] = field(default_factory=_empty_map)
    name: str = ""
    description: str = ""
    sendLoadingState: bool = False
    timeouts: Timeouts = field(default_factory=Timeouts)
    capabilities: Capabilities = field(default_factory=Capabilities)
    # declared sizes for the budget router, in the user's units (resource name -> amount)
    resources: Mapping[str, float] = field(default_factory=_empty_map)
    # Seconds a graceful stop (unload, ttl) may take before SIGKILL; the global value filled in.
    unloadTimeout: int = 10


@dataclass(frozen=True, slots=True)
class Peer:
    """A remote OpenAI-compatible server (often another llama-swap) serving `models`."""

    id: str
    proxy: str
    apiKey: str = ""
    models: tuple[str, ...] = ()
    filters: Filters = field(default_factory=Filters)
    timeouts: Timeouts = field(default_factory=lambda: Timeouts(responseHeader=60))


SELECTOR_STRATEGIES = ("warm", "pin", "spillover")


@dataclass(frozen=True, slots=True)
class Selector:
    """A virtual model id that picks one of its targets per request (runtime/core/selectors.py).

    `targets` are as configured (the name a chosen request is rewritten to);
    `resolved[i]` is what `targets[i]` means: a local model id, or a peer model's
    fully qualified `peer/model` name.
    """

    id: str
    strategy: str  # one of SELECTOR_STRATEGIES
    targets: tuple[str, ...]
    resolved: tuple[str, ...]
    name: str = ""
    description: str = ""
    unlisted: bool = False
    metadata: Mapping[str, Any] = field(default_factory=_empty_map)
    spillover: int = 1  # spillover strategy: requests per active target before spilling


@dataclass(frozen=True, slots=True)
class Profile:
    """A named set of pins: while active, a request for a pin key is served by its target."""

    id: str
    description: str
    pins: Mapping[str, str]  # pin key -> target (a model name or selector id); "" disables


@dataclass(frozen=True, slots=True)
class PeerModel:
    """One model a peer offers, under its fully qualified name `<peer>/<model>`."""

    peer: str
    model: str  # the peer's own id for it, sent upstream


def peer_names(peers: Mapping[str, Peer]) -> dict[str, PeerModel]:
    """Every name a peer model answers to: each `peer/model`, then each bare model id
    offered by exactly one peer (unless it is itself some peer model's full name)."""
    full: dict[str, PeerModel] = {}
    offered: dict[str, set[str]] = {}
    for pid in sorted(peers):
        for model in peers[pid].models:
            full.setdefault(f"{pid}/{model}", PeerModel(pid, model))
            offered.setdefault(model, set()).add(pid)
    names = dict(full)
    for model, pids in offered.items():
        if len(pids) == 1 and model not in full:
            names[model] = PeerModel(next(iter(pids)), model)
    return names


@dataclass(frozen=True, slots=True)
class Group:
    """A group of the group router: eviction rules for its members (see docs/schedulers.md)."""

    name: str
    members: tuple[str, ...]
    swap: bool = True
    exclusive: bool = True
    persistent: bool = False


@dataclass(frozen=True, slots=True)
class MatrixSet:
    """One named matrix set, its DSL text and its expansion into model-id combinations."""

    name: str
    dsl: str
    combinations: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class Matrix:
    """The matrix router's settings; `sets` is in solver (topological, then definition) order."""

    vars: Mapping[str, str]
    evictCosts: Mapping[str, int]
    sets: tuple[MatrixSet, ...]


@dataclass(frozen=True, slots=True)
class Budget:
    """The budget router's settings: what may be loaded at once (see docs/schedulers.md).

    `maxLoaded` 0 means no count limit; `resources` are named capacities in the
    user's units; `probes` maps a resource to a shell command printing its free
    amount now; `evictCosts` (model id -> cost) breaks ties between equally idle models.
    """

    maxLoaded: int = 0
    resources: Mapping[str, float] = field(default_factory=_empty_map)
    probes: Mapping[str, str] = field(default_factory=_empty_map)
    evictCosts: Mapping[str, int] = field(default_factory=_empty_map)


@dataclass(frozen=True, slots=True)
class Routing:
    """Which scheduler and which router (eviction policy) the runtime uses."""

    scheduler: str = "serial"
    priority: Mapping[str, int] = field(default_factory=_empty_map)
    router: str = "group"
    groups: Mapping[str, Group] = field(default_factory=_empty_map)
    matrix: Matrix | None = None
    budget: Budget | None = None
    maxWait: float = 0  # fifo: seconds after which a waiting request is served next; 0 = off


@dataclass(frozen=True, slots=True)
class Source:
    path: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Settings:
    """Every top-level setting with its default filled in."""

    healthCheckTimeout: int = 120
    logLevel: str = "info"
    logTimeFormat: str = ""
    logToStdout: str = "proxy"
    metricsMaxInMemory: int = 1000
    captureBuffer: int = 5
    maxRequestBody: int = 256 << 20  # bytes; 0 = no limit
    performanceDisabled: bool = False
    performanceEvery: str = "5s"
    globalTTL: int = 0
    startPort: int = 5800
    sendLoadingState: bool = False
    includeAliasesInList: bool = False
    apiKeys: tuple[str, ...] = ()
    ignorePaths: tuple[str, ...] = (r".*\.(js|json|css|png|gif|jpg|jpeg|ico|txt)$",)
    unloadTimeout: int = 10


@dataclass(frozen=True, slots=True)
class Plan:
    """The whole resolved configuration. `models` and `peers` are keyed by id (sorted)."""

    sources: tuple[Source, ...] = ()
    settings: Settings = field(default_factory=Settings)
    routing: Routing = field(default_factory=Routing)
    models: Mapping[str, Model] = field(default_factory=_empty_map)
    aliases: Mapping[str, str] = field(default_factory=_empty_map)
    peers: Mapping[str, Peer] = field(default_factory=_empty_map)
    preload: tuple[str, ...] = ()
    planVersion: int = PLAN_VERSION
    selectors: Mapping[str, Selector] = field(default_factory=_empty_map)
    profiles: Mapping[str, Profile] = field(default_factory=_empty_map)
    # Derived from `peers` (not serialised): every name a peer model answers to.
    peerNames: Mapping[str, PeerModel] = field(
        init=False, repr=False, compare=False, default_factory=_empty_map
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "peerNames", MappingProxyType(peer_names(self.peers)))

    def resolve(self, name: str) -> str | None:
        """Map a requested name (model id first, then alias) to a local model id."""
        if name in self.models:
            return name
        return self.aliases.get(name)

    def peer_model(self, name: str) -> PeerModel | None:
        """The peer model `name` means: a `peer/model` name first, else a bare model id
        offered by exactly one peer; an id several peers offer means none."""
        return self.peerNames.get(name)

    def peer_for(self, name: str) -> Peer | None:
        """The peer serving `name` (see `peer_model`), or None."""
        found = self.peerNames.get(name)
        return self.peers[found.peer] if found is not None else None

    def group_of(self, model_id: str) -> Group | None:
        for group in self.routing.groups.values():
            if model_id in group.members:
                return group
        return None

    def has_redacted_secrets(self) -> bool:
        return REDACTED in self.settings.apiKeys or any(
            p.apiKey == REDACTED for p in self.peers.values()
        )


# ---------------------------------------------------------------------------
# JSON <-> dataclasses. The JSON layout is documented in docs/plan.md and
# described by schema/plan.schema.json.
# ---------------------------------------------------------------------------


def _timeouts_to_dict(t: Timeouts) -> dict[str, int]:
    return {f.name: getattr(t, f.name) for f in fields(t)}


def _filters_to_dict(f: Filters) -> dict[str, Any]:
    return {
        "stripParams": list(f.stripParams),
        "setParams": thaw(f.setParams),
        "setParamsByID": thaw(f.setParamsByID),
    }


def _model_to_dict(m: Model) -> dict[str, Any]:
    return {
        "cmd": list(m.cmd),
        "cmdStop": None if m.cmdStop is None else list(m.cmdStop),
        "proxy": m.proxy,
        "checkEndpoint": m.checkEndpoint,
        "ttl": m.ttl,
        "env": list(m.env),
        "aliases": list(m.aliases),
        "unlisted": m.unlisted,
        "useModelName": m.useModelName,
        "concurrencyLimit": m.concurrencyLimit,
        "filters": _filters_to_dict(m.filters),
        "metadata": thaw(m.metadata),
        "name": m.name,
        "description": m.description,
        "sendLoadingState": m.sendLoadingState,
        "timeouts": _timeouts_to_dict(m.timeouts),
        "capabilities": {
            "in": list(m.capabilities.in_),
            "out": list(m.capabilities.out),
            "tools": m.capabilities.tools,
            "reranker": m.capabilities.reranker,
            "context": m.capabilities.context,
        },
        "unloadTimeout": m.unloadTimeout,
    } | ({"resources": dict(m.resources)} if m.resources else {})


def _routing_to_dict(r: Routing) -> dict[str, Any]:
    settings: dict[str, Any]
    if r.router == "matrix" and r.matrix is not None:
        settings = {
            "matrix": {
                "vars": dict(r.matrix.vars),
                "evictCosts": dict(r.matrix.evictCosts),
                "sets": [
                    {
                        "name": s.name,
                        "dsl": s.dsl,
                        "combinations": [list(c) for c in s.combinations],
                    }
                    for s in r.matrix.sets
                ],
            }
        }
    elif r.router == "budget" and r.budget is not None:
        b = r.budget
        settings = {
            "budget": {
                "maxLoaded": b.maxLoaded,
                "resources": dict(b.resources),
                "probes": dict(b.probes),
                "evictCosts": dict(b.evictCosts),
            }
        }
    else:
        settings = {
            "groups": {
                name: {
                    "members": list(g.members),
                    "swap": g.swap,
                    "exclusive": g.exclusive,
                    "persistent": g.persistent,
                }
                for name, g in r.groups.items()
            }
        }
    return {
        "scheduler": {
            "use": r.scheduler,
            "settings": {
                "fifo": {"priority": dict(r.priority)}
                | ({"maxWait": r.maxWait} if r.maxWait > 0 else {})
            },
        },
        "router": {"use": r.router, "settings": settings},
    }


def plan_to_dict(plan: Plan, *, with_models: bool = True) -> dict[str, Any]:
    """The plan as a JSON-ready dict, keys in the documented order (`models` empty if not `with_models`)."""
    s = plan.settings
    return {
        "planVersion": plan.planVersion,
        "sources": [{"path": src.path, "sha256": src.sha256} for src in plan.sources],
        "healthCheckTimeout": s.healthCheckTimeout,
        "logLevel": s.logLevel,
        "logTimeFormat": s.logTimeFormat,
        "logToStdout": s.logToStdout,
        "metricsMaxInMemory": s.metricsMaxInMemory,
        "captureBuffer": s.captureBuffer,
        "maxRequestBody": s.maxRequestBody,
        "performance": {"disabled": s.performanceDisabled, "every": s.performanceEvery},
        "globalTTL": s.globalTTL,
        "unloadTimeout": s.unloadTimeout,
        "startPort": s.startPort,
        "sendLoadingState": s.sendLoadingState,
        "includeAliasesInList": s.includeAliasesInList,
        "apiKeys": list(s.apiKeys),
        "upstream": {"ignorePaths": list(s.ignorePaths)},
        "routing": _routing_to_dict(plan.routing),
        "models": {mid: _model_to_dict(m) for mid, m in plan.models.items()} if with_models else {},
        "aliases": dict(plan.aliases),
        "peers": {
            pid: {
                "proxy": p.proxy,
                "apiKey": p.apiKey,
                "models": list(p.models),
                "filters": _filters_to_dict(p.filters),
                "timeouts": _timeouts_to_dict(p.timeouts),
            }
            for pid, p in plan.peers.items()
        },
        "hooks": {"on_startup": {"preload": list(plan.preload)}},
        "selectors": {
            sid: {
                "strategy": s.strategy,
                "targets": list(s.targets),
                "resolved": list(s.resolved),
                "name": s.name,
                "description": s.description,
                "unlisted": s.unlisted,
                "metadata": thaw(s.metadata),
                "spillover": s.spillover,
            }
            for sid, s in plan.selectors.items()
        },
        "profiles": {
            pid: {"description": p.description, "pins": dict(p.pins)}
            for pid, p in plan.profiles.items()
        },
    }


def model_json(model: Model) -> str:
    """One model's JSON text exactly as it appears inside `plan_to_json` (nested two levels)."""
    return json.dumps(_model_to_dict(model), indent=2, ensure_ascii=False).replace("\n", "\n    ")


# With indent=2 the top-level "models" key is the only line that starts with exactly two
# spaces and `"models"` (string contents never hold a raw newline), so this is unambiguous.
_MODELS_SLOT = '\n  "models": {},\n'


def plan_to_json(plan: Plan, *, model_text: Callable[[Model], str] | None = None) -> str:
    """Deterministic JSON text (same plan -> same bytes), newline-terminated.

    Equal to `json.dumps(plan_to_dict(plan), indent=2, ensure_ascii=False) + "\\n"`.
    The models (most of a big plan) are serialised one by one and spliced in, so a
    caller that re-serialises plans sharing `Model` objects can pass `model_text`
    (default `model_json`) to reuse each model's text; see compiler.session.
    """
    text = model_json if model_text is None else model_text
    d = plan_to_dict(plan, with_models=False)
    head = json.dumps(d, indent=2, ensure_ascii=False) + "\n"
    if not plan.models:
        return head
    body = ",\n".join(
        f"    {json.dumps(mid, ensure_ascii=False)}: {text(m)}" for mid, m in plan.models.items()
    )
    before, slot, after = head.partition(_MODELS_SLOT)
    assert slot, "plan_to_dict lost its models key"
    return f'{before}\n  "models": {{\n{body}\n  }},\n{after}'


def _timeouts_from(d: Mapping[str, Any] | None, default: Timeouts) -> Timeouts:
    if not d:
        return default
    return Timeouts(
        **{f.name: int(d.get(f.name, getattr(default, f.name))) for f in fields(Timeouts)}
    )


def _filters_from(d: Mapping[str, Any] | None) -> Filters:
    d = d or {}
    return Filters(
        stripParams=tuple(d.get("stripParams", ())),
        setParams=freeze(d.get("setParams", {})),
        setParamsByID=freeze(d.get("setParamsByID", {})),
    )


def _model_from(mid: str, d: Mapping[str, Any]) -> Model:
    caps = d.get("capabilities") or {}
    return Model(
        id=mid,
        cmd=tuple(d["cmd"]),
        cmdStop=None if d.get("cmdStop") is None else tuple(d["cmdStop"]),
        proxy=d["proxy"],
        checkEndpoint=d.get("checkEndpoint", "/health"),
        ttl=int(d.get("ttl", 0)),
        env=tuple(d.get("env", ())),
        aliases=tuple(d.get("aliases", ())),
        unlisted=bool(d.get("unlisted", False)),
        useModelName=d.get("useModelName", ""),
        concurrencyLimit=int(d.get("concurrencyLimit", 10)),
        filters=_filters_from(d.get("filters")),
        metadata=freeze(d.get("metadata", {})),
        name=d.get("name", ""),
        description=d.get("description", ""),
        sendLoadingState=bool(d.get("sendLoadingState", False)),
        timeouts=_timeouts_from(d.get("timeouts"), Timeouts()),
        capabilities=Capabilities(
            in_=tuple(caps.get("in", ())),
            out=tuple(caps.get("out", ())),
            tools=bool(caps.get("tools", False)),
            reranker=bool(caps.get("reranker", False)),
            context=int(caps.get("context", 0)),
        ),
        resources=freeze(d.get("resources", {})),
        unloadTimeout=int(d.get("unloadTimeout", 10)),
    )


def _routing_from(d: Mapping[str, Any]) -> Routing:
    sched = d.get("scheduler") or {}
    router = d.get("router") or {}
    settings = router.get("settings") or {}
    use = router.get("use", "group")
    matrix = None
    budget = None
    groups: dict[str, Group] = {}
    if use == "budget":
        b = settings["budget"]
        budget = Budget(
            maxLoaded=int(b.get("maxLoaded", 0)),
            resources=freeze(b.get("resources", {})),
            probes=freeze(b.get("probes", {})),
            evictCosts=freeze(b.get("evictCosts", {})),
        )
    elif use == "matrix":
        m = settings["matrix"]
        matrix = Matrix(
            vars=freeze(m.get("vars", {})),
            evictCosts=freeze(m.get("evictCosts", {})),
            sets=tuple(
                MatrixSet(
                    name=s["name"],
                    dsl=s["dsl"],
                    combinations=tuple(tuple(c) for c in s["combinations"]),
                )
                for s in m.get("sets", ())
            ),
        )
    else:
        for name, g in (settings.get("groups") or {}).items():
            groups[name] = Group(
                name=name,
                members=tuple(g.get("members", ())),
                swap=bool(g.get("swap", True)),
                exclusive=bool(g.get("exclusive", True)),
                persistent=bool(g.get("persistent", False)),
            )
    fifo = (sched.get("settings") or {}).get("fifo") or {}
    return Routing(
        scheduler=sched.get("use", "serial"),
        priority=freeze(fifo.get("priority", {})),
        router=use,
        groups=MappingProxyType(groups),
        matrix=matrix,
        budget=budget,
        maxWait=fifo.get("maxWait", 0),
    )


def plan_from_dict(d: Mapping[str, Any]) -> Plan:
    """Build a frozen Plan from its JSON form (validate against plan.schema.json first)."""
    if d.get("planVersion") != PLAN_VERSION:
        raise ValueError(
            f"unsupported planVersion {d.get('planVersion')!r} (expected {PLAN_VERSION})"
        )
    perf = d.get("performance") or {}
    defaults = Settings()
    settings = Settings(
        healthCheckTimeout=int(d.get("healthCheckTimeout", defaults.healthCheckTimeout)),
        logLevel=d.get("logLevel", defaults.logLevel),
        logTimeFormat=d.get("logTimeFormat", defaults.logTimeFormat),
        logToStdout=d.get("logToStdout", defaults.logToStdout),
        metricsMaxInMemory=int(d.get("metricsMaxInMemory", defaults.metricsMaxInMemory)),
        captureBuffer=int(d.get("captureBuffer", defaults.captureBuffer)),
        maxRequestBody=int(d.get("maxRequestBody", defaults.maxRequestBody)),
        performanceDisabled=bool(perf.get("disabled", False)),
        performanceEvery=perf.get("every", defaults.performanceEvery),
        globalTTL=int(d.get("globalTTL", 0)),
        startPort=int(d.get("startPort", defaults.startPort)),
        sendLoadingState=bool(d.get("sendLoadingState", False)),
        includeAliasesInList=bool(d.get("includeAliasesInList", False)),
        apiKeys=tuple(d.get("apiKeys", ())),
        ignorePaths=tuple((d.get("upstream") or {}).get("ignorePaths", defaults.ignorePaths)),
        unloadTimeout=int(d.get("unloadTimeout", defaults.unloadTimeout)),
    )
    peers = {
        pid: Peer(
            id=pid,
            proxy=p["proxy"],
            apiKey=p.get("apiKey", ""),
            models=tuple(p.get("models", ())),
            filters=_filters_from(p.get("filters")),
            timeouts=_timeouts_from(p.get("timeouts"), Timeouts(responseHeader=60)),
        )
        for pid, p in sorted((d.get("peers") or {}).items())
    }
    return Plan(
        planVersion=PLAN_VERSION,
        sources=tuple(Source(s["path"], s["sha256"]) for s in d.get("sources", ())),
        settings=settings,
        routing=_routing_from(d.get("routing") or {}),
        models=MappingProxyType(
            {mid: _model_from(mid, m) for mid, m in sorted((d.get("models") or {}).items())}
        ),
        aliases=freeze(dict(sorted((d.get("aliases") or {}).items()))),
        peers=MappingProxyType(peers),
        preload=tuple(((d.get("hooks") or {}).get("on_startup") or {}).get("preload", ())),
        selectors=MappingProxyType(
            {
                sid: Selector(
                    id=sid,
                    strategy=s["strategy"],
                    targets=tuple(s["targets"]),
                    resolved=tuple(s["resolved"]),
                    name=s.get("name", ""),
                    description=s.get("description", ""),
                    unlisted=bool(s.get("unlisted", False)),
                    metadata=freeze(s.get("metadata", {})),
                    spillover=int(s.get("spillover", 1)),
                )
                for sid, s in sorted((d.get("selectors") or {}).items())
            }
        ),
        profiles=MappingProxyType(
            {
                pid: Profile(id=pid, description=p.get("description", ""), pins=freeze(p["pins"]))
                for pid, p in sorted((d.get("profiles") or {}).items())
            }
        ),
    )


def plan_from_json(text: str) -> Plan:
    return plan_from_dict(json.loads(text))
