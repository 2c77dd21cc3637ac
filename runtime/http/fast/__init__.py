"""The fast path: plain JSON inference requests served by a lean asyncio protocol in
front of the aiohttp app, which serves everything else (server.py)."""
