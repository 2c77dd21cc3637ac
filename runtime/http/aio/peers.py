"""Forwarding to peers: other OpenAI-compatible servers, often another llama-swap.

The request path is joined onto the peer's base URL (`https://host/api` +
`/v1/chat/completions` -> `https://host/api/v1/chat/completions`), `Host` is
the peer's, a configured `apiKey` replaces the client's credentials
(`Authorization: Bearer` and `x-api-key`), each peer has its own connection
pool and timeouts, and responses stream through (SSE gets
`X-Accel-Buffering: no`).  Any failure before the response starts is a 502
`peer proxy error: [<peer id>] <err>`, negotiated like every error of the proxy's own (the
OpenAI-shaped JSON unless the client asks for text).  No swapping, no concurrency limit,
no loading state.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from llama_swap.compiler.plan import Peer, Timeouts
from llama_swap.runtime.core.forwarding import no_headers_within
from llama_swap.runtime.http.aio.pooling import PoolConnector, UpstreamResponse
from llama_swap.runtime.http.aio.proxy import FORWARD_QUERY, UpstreamError, relay, request_headers
from llama_swap.runtime.http.observe.activity import ResponseMeter, tee_response
from llama_swap.runtime.http.render.errors import error_response


def join_url(base: str, path: str, query: str = "") -> str:
    """Base URL + request path with exactly one slash between; queries are concatenated."""
    parts = urlsplit(base)
    base_path = parts.path
    if base_path.endswith("/") and path.startswith("/"):
        joined = base_path + path[1:]
    elif base_path and not base_path.endswith("/") and not path.startswith("/"):
        joined = base_path + "/" + path
    else:
        joined = base_path + path
    queries = "&".join(q for q in (parts.query, query) if q)
    url = f"{parts.scheme}://{parts.netloc}{joined or '/'}"
    return f"{url}?{queries}" if queries else url


def peer_headers(headers: CIMultiDict[str], peer: Peer) -> CIMultiDict[str]:
    """Outgoing headers for a peer: its own Host, its apiKey (if any) instead of the client's."""
    out = CIMultiDict(headers)
    out.popall("Host", None)
    if peer.apiKey:
        out["Authorization"] = f"Bearer {peer.apiKey}"
        out["x-api-key"] = peer.apiKey
    return out


def client_timeout(t: Timeouts) -> aiohttp.ClientTimeout:
    """Connect-level timeouts; the response-header timeout is applied around the request."""
    return aiohttp.ClientTimeout(total=None, sock_connect=t.connect or None)


def peer_error(request: web.Request, peer: Peer, message: str) -> web.Response:
    """The 502 for a peer that could not be reached or failed before answering; it names the
    peer, so with several peers the client (and whoever reads the log) knows which is down."""
    return error_response(request.headers, 502, f"peer proxy error: [{peer.id}] {message}")


class PeerPool:
    """One client session per peer (recreated when its address or timeouts change)."""

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[Peer, aiohttp.ClientSession]] = {}

    def _session(self, peer: Peer) -> aiohttp.ClientSession:
        known = self._sessions.get(peer.id)
        if known is not None and known[0].proxy == peer.proxy and known[0].timeouts == peer.timeouts:
            return known[1]
        if known is not None:
            asyncio.get_running_loop().create_task(known[1].close())
        t = peer.timeouts
        session = aiohttp.ClientSession(
            connector=PoolConnector(
                peek=False, limit=100, limit_per_host=10, keepalive_timeout=t.idleConn or 90
            ),
            response_class=UpstreamResponse,
            timeout=client_timeout(t),
            auto_decompress=False,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            trust_env=True,
        )
        self._sessions[peer.id] = (peer, session)
        return session

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.close() for _, s in sessions), return_exceptions=True)

    async def forward(
        self, request: web.Request, peer: Peer, path: str, body: Any, *,
        meter: ResponseMeter | None = None,
    ) -> web.StreamResponse:
        """Proxy `request` (its path replaced by `path`) to `peer`; 502 on failure.
        `meter` (the activity log's) sees the response as it is relayed."""
        session = self._session(peer)
        url = join_url(peer.proxy, path, request.get(FORWARD_QUERY, request.query_string))
        headers = peer_headers(request_headers(request), peer)
        data: Any = body
        if body is not None and hasattr(body, "chunks"):
            data = getattr(body, "data", None)
            if not isinstance(data, bytes):
                if body.length is not None:
                    headers["Content-Length"] = str(body.length)
                data = body.chunks()
        try:
            async with asyncio.timeout(peer.timeouts.responseHeader or None):
                upstream = await session.request(
                    request.method, url, headers=headers, data=data, allow_redirects=False
                )
        except TimeoutError:
            return peer_error(request, peer, no_headers_within(peer.timeouts.responseHeader))
        except (aiohttp.ClientError, OSError) as exc:
            return peer_error(request, peer, str(exc) or type(exc).__name__)
        if meter is not None:
            tee_response(upstream, meter)
        try:
            return await relay(request, upstream)
        except UpstreamError as exc:
            return peer_error(request, peer, str(exc))
        except BaseException:
            upstream.close()
            raise
        finally:
            upstream.release()  # pooled or closed, as its head decided (pooling.py)
