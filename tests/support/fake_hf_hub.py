"""A local stand-in for the parts of the Hugging Face Hub that file downloads use.

``HEAD``/``GET /{repo_id}/resolve/{revision}/{path}`` with the headers huggingface_hub
reads (``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag``/``X-Linked-Size`` for LFS files,
``Content-Length``) and single ``Range: bytes=N-`` requests. Faults can be queued per
file to model a dropped connection or a failing server. Every request is recorded, so a
test can assert that a Range request happened or that no request was made at all.
Each response closes its connection, so the server's handler threads all end and
``close()`` can join them.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()


@dataclass
class HubFile:
    content: bytes
    lfs: bool = True  # LFS files carry their sha256 in X-Linked-Etag; others a git blob sha1 ETag
    advertised_sha256: str | None = None  # lie about the checksum (a corrupt mirror)
    faults: list[tuple[str, int]] = field(default_factory=list)  # per GET, in order: ("drop", n) / ("status", code)

    @property
    def etag(self) -> str:
        if self.lfs:
            return self.advertised_sha256 or hashlib.sha256(self.content).hexdigest()
        return git_blob_sha1(self.content)


@dataclass(frozen=True)
class Request:
    method: str
    repo: str
    path: str
    range: str | None


class FakeHub:
    def __init__(self) -> None:
        self.files: dict[tuple[str, str], HubFile] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - http.server naming
                hub._serve(self, body=False)

            def do_GET(self) -> None:  # noqa: N802
                hub._serve(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hf-hub")

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo: str, path: str, content: bytes, **options: object) -> HubFile:
        item = HubFile(content, **options)  # type: ignore[arg-type]
        self.files[(repo, path)] = item
        return item

    def gets(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.path == path]

    def all_requests(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()  # joins the handler threads (each ends with its one response)
        self._thread.join(timeout=10)

    def _serve(self, h: BaseHTTPRequestHandler, *, body: bool) -> None:
        h.close_connection = True
        m = _RESOLVE.match(unquote(h.path.split("?")[0]))
        rng = h.headers.get("Range")
        with self._lock:
            if m:
                self.requests.append(Request(h.command, m["repo"], m["path"], rng))
            item = self.files.get((m["repo"], m["path"])) if m else None
            fault = item.faults.pop(0) if (item and body and item.faults) else None
        if item is None:
            h.send_response(404)
            h.send_header("X-Error-Code", "EntryNotFound")
            h.send_header("X-Repo-Commit", COMMIT)
            h.send_header("Content-Length", "0")
            h.send_header("Connection", "close")
            h.end_headers()
            return
        if fault and fault[0] == "status":
            h.send_response(fault[1])
            h.send_header("Content-Length", "0")
            h.send_header("Connection", "close")
            h.end_headers()
            return
        data, start = item.content, 0
        if rng and body:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])  # type: ignore[index]
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", COMMIT)
        h.send_header("ETag", f'"{git_blob_sha1(data) if item.lfs else item.etag}"')
        if item.lfs:
            h.send_header("X-Linked-Etag", f'"{item.etag}"')
            h.send_header("X-Linked-Size", str(len(data)))
        h.send_header("Accept-Ranges", "bytes")
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(data) - start))
        h.send_header("Connection", "close")
        h.end_headers()
        if not body:
            return
        payload = data[start:]
        if fault and fault[0] == "drop":
            payload = payload[: fault[1]]  # then the connection closes mid-body
        h.wfile.write(payload)
        h.wfile.flush()


@contextmanager
def running_hub() -> Iterator[FakeHub]:
    hub = FakeHub()
    hub.start()
    try:
        yield hub
    finally:
        hub.close()
