"""The search demo's HTTP server (standard library only): one HTML page and a small JSON API.

    GET  /                      the page (``common.search.page``)
    GET  /api/info              paper, dataset, stages, number of images, default top-k
    GET  /api/gallery?q=&offset=&limit=   gallery ids and names whose name contains q
    GET  /api/image/<id>        one gallery image's id, name, group and url
    GET  /image/<id>            a gallery image, by integer id only (no file path is ever taken from a request)
    POST /api/upload            body: a JPEG or PNG (Content-Type image/jpeg or image/png) -> {"upload": token}
    GET  /upload/<token>        an uploaded image (kept in memory only)
    POST /api/search            {"reference": id or token, "caption": text, "stage": name, "top_k": n}

Errors answer ``{"error": message}`` with 400 (bad request), 404 (unknown id, token or path), 411 (no length),
413 (upload too large).
"""
from __future__ import annotations

import json
import mimetypes
import re
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from common.errors import InputError
from common.runtime import get_logger
from common.search.engine import SearchEngine, UploadError
from common.search.page import PAGE

logger = get_logger(__name__)

MAX_JSON_BYTES = 64 * 1024
MAX_GALLERY_PAGE = 200
MAX_TOP_K = 100
DRAIN_FACTOR = 4
IMAGE_ROUTE = re.compile(r"/image/(\d{1,9})")
ITEM_ROUTE = re.compile(r"/api/image/(\d{1,9})")
UPLOAD_ROUTE = re.compile(r"/upload/(u\d{1,9})")


class RequestError(Exception):
    """A request the server refuses: ``status`` and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServerInfo:
    """What the page shows and the limits the server applies."""

    paper: str
    dataset: str
    split: str
    top_k: int = 10
    max_upload_bytes: int = 5 * 1024 * 1024


class SearchServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` serving ``engine`` (port 0 picks a free port: see ``url``). The socket is bound
    at once, so a busy port is reported before any model loads; set ``engine`` before serving."""

    daemon_threads = True

    def __init__(self, info: ServerInfo, host: str = "127.0.0.1", port: int = 8000,
                 engine: SearchEngine | None = None):
        self.engine, self.info = engine, info
        try:
            super().__init__((host, port), SearchHandler)
        except OSError as error:
            raise InputError(f"--host {host} --port {port}: cannot listen there ({error.strerror or error}); "
                             "choose another --port (0 picks a free one)") from error

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class SearchHandler(BaseHTTPRequestHandler):
    """Routes the requests of the page; every answer is complete (length given) and never cached."""

    server: SearchServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._answer(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._answer(self._post)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        logger.debug("%s %s", self.address_string(), format % args)

    def _answer(self, route) -> None:
        try:
            route(urlsplit(self.path))
        except (RequestError, UploadError) as error:
            self._json({"error": str(error)}, error.status)

    def _get(self, url) -> None:
        engine, info = self.server.engine, self.server.info
        if url.path == "/":
            return self._send(PAGE.encode(), "text/html; charset=utf-8")
        if url.path == "/api/info":
            return self._json({"paper": info.paper, "dataset": info.dataset, "split": info.split,
                               "stages": list(engine.model.stages), "images": len(engine), "top_k": info.top_k,
                               "max_upload_bytes": info.max_upload_bytes})
        if url.path == "/api/gallery":
            query = parse_qs(url.query)
            offset = _int_param(query, "offset", 0, 0, len(engine))
            limit = _int_param(query, "limit", 24, 1, MAX_GALLERY_PAGE)
            total, ids = engine.find(query.get("q", [""])[0], offset, limit)
            return self._json({"total": total, "offset": offset, "items": [self._item(i) for i in ids]})
        match = ITEM_ROUTE.fullmatch(url.path)
        if match:
            return self._json(self._item(self._gallery_index(int(match.group(1)))))
        match = IMAGE_ROUTE.fullmatch(url.path)
        if match:
            image = engine.model.images[self._gallery_index(int(match.group(1)))]
            try:
                data = image.path.read_bytes()
            except OSError as error:
                raise RequestError(HTTPStatus.NOT_FOUND, f"cannot read gallery image {image.name}: {error}") from error
            return self._send(data, mimetypes.guess_type(image.path.name)[0] or "application/octet-stream")
        match = UPLOAD_ROUTE.fullmatch(url.path)
        kept = engine.upload(match.group(1)) if match else None
        if kept is not None:
            return self._send(*kept)
        raise RequestError(HTTPStatus.NOT_FOUND, f"no such page or image: {url.path}")

    def _post(self, url) -> None:
        if url.path == "/api/upload":
            data = self._body(self.server.info.max_upload_bytes, "the upload")
            token = self.server.engine.add_upload(data, self.headers.get("Content-Type"),
                                                  self.server.info.max_upload_bytes)
            return self._json({"upload": token, "url": f"/upload/{token}"})
        if url.path == "/api/search":
            return self._json(self._search(_json_object(self._body(MAX_JSON_BYTES, "a search request"))))
        raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint: POST {url.path}")

    def _search(self, request: dict) -> dict:
        engine = self.server.engine
        reference, caption = request.get("reference"), request.get("caption", "")
        if isinstance(reference, bool) or not isinstance(reference, (int, str)):
            raise RequestError(HTTPStatus.BAD_REQUEST, "'reference' must be a gallery id (integer) or an upload token")
        if not isinstance(caption, str) or not caption.strip():
            raise RequestError(HTTPStatus.BAD_REQUEST, "'caption' must be a non-empty modification text")
        top_k = request.get("top_k", self.server.info.top_k)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"'top_k' must be an integer from 1 to {MAX_TOP_K}")
        stage = request.get("stage") or engine.model.stages[0]
        if stage not in engine.model.stages:
            raise RequestError(HTTPStatus.BAD_REQUEST,
                               f"unknown stage {stage!r}; this model has {', '.join(engine.model.stages)}")
        try:
            results = engine.search(reference, caption, top_k, stage)
        except KeyError as error:
            raise RequestError(HTTPStatus.NOT_FOUND, error.args[0]) from error
        return {"reference": reference, "caption": caption, "stage": stage,
                "results": [{**self._item(r.id), "rank": r.rank, "score": r.score} for r in results]}

    def _item(self, index: int) -> dict:
        image = self.server.engine.model.images[index]
        return {"id": index, "name": image.name, "group": image.group, "url": f"/image/{index}"}

    def _gallery_index(self, index: int) -> int:
        if index >= len(self.server.engine):
            raise RequestError(HTTPStatus.NOT_FOUND, f"unknown gallery id {index}")
        return index

    def _body(self, limit: int, what: str) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, f"{what} needs a Content-Length header")
        if int(length) > limit:
            self._discard(int(length), limit)
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"{what} is {int(length)} bytes; at most {limit} bytes are accepted")
        return self.rfile.read(int(length))

    def _discard(self, length: int, limit: int) -> None:
        """Read and drop a refused body (up to ``DRAIN_FACTOR`` times ``limit``) so the client reads the answer;
        a larger one is not read and the connection closes after the answer."""
        if length > DRAIN_FACTOR * limit:
            self.close_connection = True
            return
        while length > 0:
            length -= len(self.rfile.read(min(length, 1 << 16))) or length

    def _json(self, payload: dict, status: int = HTTPStatus.OK) -> None:
        self._send(json.dumps(payload).encode(), "application/json", status)

    def _send(self, body: bytes, content_type: str, status: int = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


def _int_param(query: dict, name: str, default: int, low: int, high: int) -> int:
    value = query.get(name, [str(default)])[0]
    if not value.isdigit() or not low <= int(value) <= max(low, high):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"'{name}' must be an integer from {low} to {max(low, high)}")
    return int(value)


def _json_object(body: bytes) -> dict:
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"the request body is not JSON ({error})") from error
    if not isinstance(request, dict):
        raise RequestError(HTTPStatus.BAD_REQUEST, "the request body must be a JSON object")
    return request
