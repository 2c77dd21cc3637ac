"""Everything the HTTP side shares, built once at startup and handed to whoever serves.

Why one typed object: route modules, the middleware stack and the fast path all need
the router, the logs, the in-flight counter, the activity log, the capture store, the
event hub, the activity store and the client pools.  Built in one place (`aio.app.create_services`), they
are wired to each other once (the in-flight counter and the activity log publish to the
hub; router and reload events reach every listener), so no module depends on another
having registered first, and nothing is looked up by a string key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from llama_swap.compiler.plan import Plan
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.engine.router import Router
from llama_swap.runtime.http.listeners import EventListeners
from llama_swap.runtime.http.observe.activity import ActivityLog
from llama_swap.runtime.http.observe.activity_store import ActivityStore
from llama_swap.runtime.http.observe.captures import CaptureStore
from llama_swap.runtime.http.observe.events import EventHub
from llama_swap.runtime.http.observe.inflight import InflightTracker
from llama_swap.runtime.http.observe.prom import ProxyMetrics

if TYPE_CHECKING:  # the client pools are the aiohttp front door's; only their types here
    from llama_swap.runtime.engine.reload import Reloader
    from llama_swap.runtime.http.aio.peers import PeerPool
    from llama_swap.runtime.http.aio.proxy import UpstreamPool

class FastPathCounters:
    """What the fast path did, for `/metrics`."""

    __slots__ = ("served", "handed_off")

    def __init__(self) -> None:
        self.served = 0  # requests served by the fast path
        self.handed_off = 0  # client connections it handed to the aiohttp server


@dataclass(eq=False)
class Services:
    """One running server's shared parts."""

    router: Router
    upstreams: UpstreamPool
    peers: PeerPool
    proxy_log: LogBuffer
    upstream_log: LogBuffer
    listeners: EventListeners
    hub: EventHub
    inflight: InflightTracker
    activity: ActivityLog
    captures: CaptureStore
    store: ActivityStore  # the persistent history the activity log feeds
    metrics: ProxyMetrics  # what /metrics exposes
    version: str = "0"
    reloader: Reloader | None = None  # set when the server can reload its config
    fast_path: FastPathCounters | None = None  # set when the fast path is in front

    @property
    def plan(self) -> Plan:
        """The router's current plan: read per request, so a hot reload applies at once."""
        return self.router.plan
