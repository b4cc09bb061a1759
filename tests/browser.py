"""A page in real headless Chromium, served over loopback HTTP, posting one JSON result back.

Tests put the files a page needs in a folder; the page ends by `fetch("/result", {method:
"POST", body: JSON.stringify(...)})`, and `run_page` returns what it posted.
"""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def run_page(
    site: Path,
    page: str,
    profile: Path,
    *,
    requests: list[str] | None = None,
    immutable: str | None = None,
    timeout: float = 120,
) -> dict[str, Any]:
    """Open `site/page` in headless Chromium and return the JSON object it posts to /result;
    every path the browser asks for is appended to `requests`, if given. Files whose path starts
    with `immutable` are served as a web server serves content-addressed files: cached for a
    year, never revalidated."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: apt-get install chromium (.ci/run does)")
    received: dict[str, Any] = {}
    arrived = threading.Event()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(site), **kwargs)

        def do_GET(self) -> None:
            if requests is not None:
                requests.append(self.path)
            super().do_GET()

        def end_headers(self) -> None:
            if immutable is not None and self.path.startswith(immutable):
                self.send_header("Cache-Control", "public, max-age=31536000, immutable")
            super().end_headers()

        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.update(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()
            arrived.set()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{page}"
    browser = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert arrived.wait(timeout), f"{page} never reported back"
    finally:
        browser.kill()
        browser.wait()
        server.shutdown()
        server.server_close()
    return received
