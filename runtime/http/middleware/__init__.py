"""The HTTP surface's own small rules, as plain values: CORS (cors.py) and the router's
answers worded as Go's ServeMux words them (mux.py).  The aiohttp middleware that applies
them, with auth and the access log, is runtime/http/aio/stack.py."""
