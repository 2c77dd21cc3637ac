"""Reading a model-dispatched request off an aiohttp request: which model it is for.

GET takes `?model=`/`?stream=`; JSON bodies are read whole and parsed by the shared
`from_json_body`; multipart forms are read only until their `model` field, the read-ahead
spooled to a temporary file and the rest left in the client stream; anything else is a
URL-encoded form.  Form lookups fall back to the URL query, as Go's `FormValue` does.
"""

from __future__ import annotations

import urllib.parse

from aiohttp import web

from llama_swap.compiler.plan import Plan
from llama_swap.runtime.http.request.body import (
    BodyTooLarge,
    BytesBody,
    SpooledBody,
    StreamBody,
    read_limited,
)
from llama_swap.runtime.http.request.extract import Extracted, from_json_body, no_model, resolved
from llama_swap.runtime.http.request.multipart_scan import (
    MultipartError,
    MultipartScanner,
    boundary_of,
)


async def extract(request: web.Request, plan: Plan) -> Extracted:
    """Identify the model of a model-dispatched request; raise RouteFailure(404) if none,
    BodyTooLarge (413) when a body read here crosses `maxRequestBody`."""
    query = request.rel_url.query
    limit = plan.settings.maxRequestBody
    if request.method == "GET":
        model = query.get("model", "")
        if not model:
            raise no_model()
        body = StreamBody(request.content, request.content_length, limit)
        return Extracted(model, resolved(plan, model), query.get("stream") == "true", body,
                         query=request.rel_url.raw_query_string)

    ctype = request.headers.get("Content-Type", "")
    if "application/json" in ctype:
        return from_json_body(plan, await read_limited(request.content, limit))
    if "multipart/form-data" in ctype:
        return await _from_multipart(request, plan, ctype, limit)
    raw = await read_limited(request.content, limit)
    form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    model = (form.get("model") or [""])[0] or query.get("model", "")
    stream = (form.get("stream") or [""])[0] or query.get("stream", "")
    if not model:
        raise no_model()
    return Extracted(model, resolved(plan, model), stream == "true", BytesBody(raw))


async def _from_multipart(request: web.Request, plan: Plan, ctype: str, limit: int) -> Extracted:
    spool = SpooledBody.new_spool()
    spooled = 0
    try:
        scanner = MultipartScanner(boundary_of(ctype))
        while "model" not in scanner.fields and not scanner.finished:
            chunk = await request.content.readany()
            if not chunk:
                break
            spool.write(chunk)
            spooled += len(chunk)
            if limit and spooled > limit:
                raise BodyTooLarge(limit)
            scanner.feed(chunk)
    except MultipartError:  # the original's form parser fails: no model could be identified
        spool.close()
        raise no_model() from None
    except BaseException:
        spool.close()
        raise
    query = request.rel_url.query
    field = scanner.fields.get("model")
    model = field.value.decode("utf-8", "replace") if field else query.get("model", "")
    stream_field = scanner.fields.get("stream")
    stream = stream_field.value.decode("utf-8", "replace") if stream_field else query.get("stream", "")
    body = SpooledBody(spool, spooled, request.content, request.content_length, limit=limit)
    if not model:
        body.close()
        raise no_model()
    return Extracted(model, resolved(plan, model), stream == "true", body, multipart_model=field)
