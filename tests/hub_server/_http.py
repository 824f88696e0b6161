"""The HTTP plumbing of the fake Hub: a threaded server per listener and the exchange a route answers on."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ._model import HubError

if TYPE_CHECKING:
    from ._hub import FakeHub


@dataclass(frozen=True)
class LoggedRequest:
    """A request received by the hub or its CDN listener."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    cdn: bool


class Server(ThreadingHTTPServer):
    """One listener (the Hub itself, or the "CDN" that serves and receives LFS objects)."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], hub: FakeHub, cdn: bool) -> None:
        self.hub = hub
        self.is_cdn = cdn
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after stop()
    timeout = 30
    server: Server

    def do_GET(self) -> None:
        self.server.hub._handle(Exchange(self, "GET"))

    def do_HEAD(self) -> None:
        self.server.hub._handle(Exchange(self, "HEAD"))

    def do_POST(self) -> None:
        self.server.hub._handle(Exchange(self, "POST"))

    def do_PUT(self) -> None:
        self.server.hub._handle(Exchange(self, "PUT"))

    def log_message(self, format: str, *args: Any) -> None:  # silence the stderr access log
        pass


def _read_chunked(rfile: IO[bytes]) -> bytes:
    """A ``Transfer-Encoding: chunked`` body (trailers are skipped)."""
    chunks = []
    while size := int(rfile.readline().split(b";")[0].strip() or b"0", 16):
        chunks.append(rfile.read(size))
        rfile.readline()  # the CRLF closing each chunk
    while rfile.readline().strip():
        pass
    return b"".join(chunks)


class Exchange:
    """One request and its answer: the parsed request line and body, and writers for the response.

    The body is read at once (with ``Content-Length`` or chunked), so that an early error answer never
    leaves unread bytes behind when the connection closes.
    """

    def __init__(self, handler: _Handler, method: str) -> None:
        self.handler = handler
        self.method = method
        self.cdn = handler.server.is_cdn
        split = urlsplit(handler.path)
        self.path, self.query = split.path, split.query
        self.params = parse_qs(split.query)
        self.headers = handler.headers
        self.body = self._read_body()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return _read_chunked(self.handler.rfile)
        length = int(self.headers.get("Content-Length") or 0)
        return self.handler.rfile.read(length) if length else b""

    def logged(self) -> LoggedRequest:
        """The request as the hub logs it."""
        return LoggedRequest(self.method, self.path, self.query, dict(self.headers.items()), self.cdn)

    def flag(self, name: str) -> bool:
        """Whether query parameter ``name`` is set to a true value (``1``, ``true``, ...)."""
        return self.params.get(name, ["false"])[0].lower() in {"1", "true", "yes", "on"}

    def json_body(self) -> Any:
        """The body parsed as JSON; a malformed one is a ``400``."""
        try:
            return json.loads(self.body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise HubError(400, f"Invalid JSON body: {error}") from None

    def send(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """Write a response (headers only for ``HEAD``)."""
        h = self.handler
        h.send_response(status)
        for name, value in headers.items():
            h.send_header(name, value)
        if "Content-Length" not in headers:
            h.send_header("Content-Length", str(len(body)))
        h.send_header("Connection", "close")
        h.end_headers()
        if body and self.method != "HEAD":
            h.wfile.write(body)

    def json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        """Write a JSON response."""
        body = json.dumps(payload).encode()
        self.send(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body)

    def error(self, error: HubError) -> None:
        """Hub-style error: ``X-Error-Code``/``X-Error-Message`` headers plus ``{"error": ...}`` body."""
        headers = {"X-Error-Message": error.message, **({"X-Error-Code": error.code} if error.code else {})}
        self.json(error.status, {**error.body, "error": error.message}, {**headers, **error.headers})

    def content(self, data: bytes, headers: Mapping[str, str]) -> None:
        """Serve file bytes, honouring a single ``Range: bytes=a-b`` request."""
        base = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", **headers}
        range_header = self.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip()) if range_header else None
        if match is None or match.groups() == ("", ""):
            self.send(200, {**base, "Content-Length": str(len(data))}, data)
            return
        size = len(data)
        first, last = match.groups()
        if first:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        else:
            start, end = max(size - int(last), 0), size - 1
        if start >= size or start > end:
            self.send(416, {**base, "Content-Range": f"bytes */{size}"}, b"")
            return
        chunk = data[start : end + 1]
        self.send(
            206, {**base, "Content-Range": f"bytes {start}-{end}/{size}", "Content-Length": str(len(chunk))}, chunk
        )
