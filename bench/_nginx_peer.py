"""nginx as a peer reverse proxy for the benchmarks, when it is installed.

Configured the way one would put nginx in front of a model server: HTTP/1.1 to the
upstream with a keep-alive pool, no response buffering (SSE passes at once), one
worker process (llama-swap is one process too; `--nginx-workers` changes it), any
body size, held in memory up to 4 MB (as llama-swap holds JSON bodies), and a POST
retried on a fresh connection when a pooled one turns out dead (llama-server closes
its connection after every stream; llama-swap retries such a request too).
Started in the foreground with its own prefix directory; stopped with the block.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _runtime_harness import free_port, stop_process, wait_healthy  # type: ignore[import-not-found]

CONFIG = """
daemon off;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    client_max_body_size 0;
    client_body_buffer_size 4m;
    upstream model {{ server {upstream}; keepalive 64; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_next_upstream error timeout non_idempotent;
        }}
    }}
}}
"""


def available() -> bool:
    return shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()


@contextlib.contextmanager
def nginx(upstream: str, workers: int = 1) -> Iterator[tuple[str, int]]:
    """Run nginx proxying to `upstream` ("host:port"); yields (url, pid)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory() as prefix:
        port = free_port()
        conf = Path(prefix) / "nginx.conf"
        conf.write_text(CONFIG.format(workers=workers, prefix=prefix, upstream=upstream, port=port))
        proc = subprocess.Popen([binary, "-p", prefix, "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_healthy(f"http://127.0.0.1:{port}/health")
            time.sleep(0.05)
            yield f"http://127.0.0.1:{port}", proc.pid
        finally:
            stop_process(proc)
