"""Helpers shared by the tests/test_data_*.py files: the shared data folder and a local HTTP server."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# Real data for the tests, never committed: ../shared/data beside the checkout (this project's CI),
# else the repository's own data/ folder, where mamlbook.data's downloads put it for a user.
_ROOTS = [Path(__file__).resolve().parents[2] / "shared" / "data", Path(__file__).resolve().parents[1] / "data"]


def _first_root(relative: str) -> Path:
    return next((root for root in _ROOTS if (root / relative).exists()), _ROOTS[0])


SHARED_DATA = _first_root("omniglot/images_background_small1.zip")
SMALL1 = SHARED_DATA / "omniglot" / "images_background_small1.zip"
SMALL2 = SHARED_DATA / "omniglot" / "images_background_small2.zip"
MINI_CSVS = _first_root("miniimagenet/train.csv") / "miniimagenet"

needs_omniglot = pytest.mark.skipif(
    not (SMALL1.is_file() and SMALL2.is_file()),
    reason=f"real Omniglot zips not found in {' or '.join(str(r / 'omniglot') for r in _ROOTS)}; "
           "get them with `python -c 'from mamlbook.data import download_omniglot_small as d; d()'` "
           "(writes data/omniglot/, SHA-256 checked)")
needs_mini_csvs = pytest.mark.skipif(
    not (MINI_CSVS / "train.csv").is_file(),
    reason=f"mini-ImageNet split CSVs not found in {' or '.join(str(r / 'miniimagenet') for r in _ROOTS)}; "
           "put train.csv, val.csv and test.csv (Ravi & Larochelle's split, see docs/data.md) in data/miniimagenet/")


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (behaviour, body)``; logs (path, Range header) per request.

    Behaviours: "ok" (whole body, honours Range), "html" (body as text/html), "truncate"
    (announces the full length, sends half, hangs up), "flaky" (truncates the first request,
    then honours Range), "norange" (always the whole body with 200, ignoring Range).
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):                       # keep pytest output clean
        pass

    def do_GET(self):
        rng = self.headers.get("Range")
        self.server.log.append((self.path, rng))
        if self.path not in self.server.routes:
            self.send_error(404)
            return
        behaviour, body = self.server.routes[self.path]
        hits = sum(1 for p, _ in self.server.log if p == self.path)
        start = int(rng.split("=")[1].split("-")[0]) if rng and behaviour in ("ok", "flaky") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "text/html; charset=utf-8" if behaviour == "html"
                         else "application/octet-stream")
        self.send_header("Content-Length", str(len(body) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Connection", "close")
        self.end_headers()
        if behaviour == "truncate" or (behaviour == "flaky" and hits == 1):
            self.wfile.write(body[start:len(body) // 2])
        else:
            self.wfile.write(body[start:])
        self.wfile.flush()
        self.close_connection = True


@contextmanager
def local_server(routes: dict[str, tuple[str, bytes]]):
    """A thread serving ``routes`` on 127.0.0.1; yields (base_url, request_log)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.routes, server.log = routes, []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.log
    finally:
        server.shutdown()
        server.server_close()


def make_fake_omniglot_root(root):
    """Both small background zips, in the real format, with 3 generated characters per alphabet."""
    from mamlbook.data import make_fake_omniglot
    for n in (1, 2):
        make_fake_omniglot(root / f"images_background_small{n}.zip", small=n, characters_per_alphabet=3)
    return root


# Bad files, made from good ones the way downloads and disks spoil them (tests/test_bad_files.py).
HTML_PAGE = (b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body><p>"
             b"Too many users have viewed or downloaded this file recently.</p></body></html>")
FAILURES = ("corrupt", "empty", "truncated", "html")


def spoil(data: bytes, failure: str, corrupt_at: int = 0) -> bytes:
    """``data`` (a good file's bytes) spoiled as ``failure`` says.

    "corrupt": 32 bytes from ``corrupt_at`` inverted (0: a damaged header); "empty": no bytes;
    "truncated": the first half only; "html": an HTML error page saved in the file's place.
    """
    if failure == "corrupt":
        end = corrupt_at + 32
        return data[:corrupt_at] + bytes(b ^ 0xFF for b in data[corrupt_at:end]) + data[end:]
    if failure == "empty":
        return b""
    if failure == "truncated":
        return data[:len(data) // 2]
    if failure == "html":
        return HTML_PAGE
    raise ValueError(f"unknown failure {failure!r}; use one of {FAILURES}")


def snapshot(folder) -> dict:
    """{relative path: (bytes, mtime in ns)} of each file under ``folder``; unchanged means untouched."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}
