"""The review page's HTTP server: standard library only, bound to 127.0.0.1, one self-contained page.

Routes: ``GET /`` (page.html), ``GET /api/info``, ``GET /api/items?offset=&limit=&status=&cls=``,
``GET /img?p=<image>[&w=<thumbnail width>]``, ``POST /api/decide`` and ``POST /api/export`` (JSON bodies).
An image is served only when it is one of the review's images *and* its real path lies inside the data set's
image root (no ``..``, absolute paths or symlinks out of it). Requests must name this server as their Host
and POSTs must be JSON, so other web sites open in the browser cannot drive it.
"""

from __future__ import annotations

import io
import json
import mimetypes
import threading
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlparse

from wsml._types import PathLike
from wsml.tools.review.export import export_review

PAGE = Path(__file__).with_name("page.html")
HOST = "127.0.0.1"


def resolve_image(root: PathLike, image: str, allowed: set) -> Optional[Path]:
    """The file of ``image`` when it is allowed and really inside ``root``; else None."""
    if image not in allowed:
        return None
    root = Path(root).resolve()
    path = (root / image).resolve()
    if root not in path.parents or not path.is_file():
        return None
    return path


@lru_cache(maxsize=2048)
def thumbnail(path: str, width: int, mtime: float) -> bytes:
    """PNG bytes of ``path`` scaled to ``width`` pixels wide (never enlarged); cached per file version."""
    from wsml.data.loading import open_image

    with open_image(path) as im:  # the default pixel limit: a review never decodes a decompression bomb
        im.thumbnail((width, width * 4))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
    return buf.getvalue()


class Handler(BaseHTTPRequestHandler):
    """Serves one review (``server.review``); decisions are applied under ``server.lock``."""

    server_version = "wsml-review"

    def log_message(self, fmt: str, *args) -> None:  # quiet: the terminal shows what the command prints
        pass

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store" if ctype.startswith("application/json") else "max-age=3600")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj, code: int = 200) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def _host_ok(self) -> bool:
        port = self.server.server_address[1]
        return self.headers.get("Host", "") in (f"{HOST}:{port}", f"localhost:{port}")

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if not self._host_ok():
            return self._json({"error": "unknown host"}, 403)
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        review = self.server.review
        try:
            if url.path in ("/", "/index.html"):
                return self._send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
            if url.path == "/api/info":
                s = review.source
                return self._json({"mode": review.mode, "classes": s.class_names, "model": s.model, "csv": s.csv,
                                   "counts": review.counts()})
            if url.path == "/api/items":
                with self.server.lock:
                    return self._json(review.page(int(q.get("offset", 0)), int(q.get("limit", 50)),
                                                  q.get("status", "all"), q.get("cls", "")))
            if url.path == "/img":
                path = resolve_image(review.source.image_root, q.get("p", ""), self.server.allowed)
                if path is None:
                    return self._json({"error": "no such image"}, 404)
                if "w" in q:
                    width = max(16, min(int(q["w"]), 1024))
                    return self._send(200, thumbnail(str(path), width, path.stat().st_mtime), "image/png")
                ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                return self._send(200, path.read_bytes(), ctype)
        except (ValueError, OSError) as e:
            return self._json({"error": str(e)}, 400)
        self._json({"error": "not found"}, 404)

    def do_POST(self) -> None:  # noqa: N802
        if not self._host_ok() or not self.headers.get("Content-Type", "").startswith("application/json"):
            return self._json({"error": "JSON requests from this page only"}, 403)
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with self.server.lock:
                if self.path == "/api/decide":
                    return self._json(self.server.review.decide(**body))
                if self.path == "/api/export":
                    return self._json(export_review(self.server.review.folder, self.server.export_to))
        except (ValueError, TypeError, OSError) as e:
            return self._json({"error": " ".join(str(e).split())}, 400)
        self._json({"error": "not found"}, 404)


def make_server(review, port: int = 0, export_to: Optional[str] = None) -> ThreadingHTTPServer:
    """A server for ``review`` on 127.0.0.1:``port`` (0 = a free port); call ``serve_forever()`` on it."""
    server = ThreadingHTTPServer((HOST, port), Handler)
    server.daemon_threads = True
    server.review, server.lock, server.export_to = review, threading.Lock(), export_to
    server.allowed = review.images()
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    return f"http://{HOST}:{server.server_address[1]}/"
