"""Write the pre-compressed `.gz` siblings of the UI's text assets.

The UI serves `app.js.gz` instead of `app.js` to a client that accepts gzip
(runtime/routes/ui.py, through aiohttp's FileResponse).  The siblings are
committed so an installed package needs no build step; run this after editing
a file in runtime/web/ui/static/ (tests/web/test_ui_assets.py fails while a
sibling is stale).  Output is deterministic: no file name or time in the header.

Run: .venv/bin/python scripts/compress_ui.py
"""

from __future__ import annotations

import gzip
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "runtime" / "http" / "aio" / "ui" / "static"
COMPRESSED = (".js", ".css", ".svg", ".html")


def compressed(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def sources() -> list[Path]:
    return sorted(p for p in STATIC.iterdir() if p.suffix in COMPRESSED)


def main() -> None:
    for path in sources():
        target = path.with_name(path.name + ".gz")
        data = compressed(path.read_bytes())
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
            print(f"wrote {target.relative_to(ROOT)} "
                  f"({path.stat().st_size} -> {len(data)} bytes)")


if __name__ == "__main__":
    main()
