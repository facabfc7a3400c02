"""Small fake wheels and a local PEP 503 "simple" index, so real pip can fetch them offline.

``build_wheel`` writes a valid ``.whl`` (a zip with ``.dist-info/METADATA``, ``WHEEL`` and
``RECORD``) holding the given members. ``pip download --no-index --find-links DIR`` reads such
files straight from a directory; ``running_index`` also serves them over HTTP
(``--index-url URL/simple``), which is what makes pip stream them and print progress. Every
request is recorded, so a test can assert what pip asked for.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from voicechat.models.registry import Wheel
from voicechat.models.wheels import PipOptions


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(directory: Path, wheel: Wheel, members: dict[str, bytes]) -> Path:
    """Write ``NAME-VERSION-py3-none-any.whl`` with ``members`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{re.sub(r'[-_.]+', '_', wheel.name)}-{wheel.version}"
    info = f"{stem}.dist-info"
    files = dict(members)
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {wheel.name}\nVersion: {wheel.version}\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: fake_pypi\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = [_record_line(name, data) for name, data in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


class FakeIndex:
    """``GET /simple/<project>/`` lists the wheels of that project; ``GET /files/<name>`` serves one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.requests: list[str] = []
        self._lock = threading.Lock()
        index = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                index._serve(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-pypi")

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/simple"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def downloads(self) -> list[str]:
        with self._lock:
            return [path.rsplit("/", 1)[-1] for path in self.requests if path.startswith("/files/")]

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        h.close_connection = True
        path = h.path.split("?")[0]
        with self._lock:
            self.requests.append(path)
        body, kind = b"", "text/html"
        if m := re.fullmatch(r"/simple/([^/]+)/?", path):
            project = re.sub(r"[-_.]+", "_", m[1]).lower()
            links = [f'<a href="/files/{p.name}#sha256={hashlib.sha256(p.read_bytes()).hexdigest()}">{p.name}</a>'
                     for p in sorted(self.directory.glob("*.whl")) if p.name.lower().startswith(project + "-")]
            body = ("<!DOCTYPE html><html><body>" + "".join(links) + "</body></html>").encode() if links else b""
        elif m := re.fullmatch(r"/files/([^/]+\.whl)", path):
            wheel = self.directory / m[1]
            body, kind = (wheel.read_bytes(), "application/octet-stream") if wheel.is_file() else (b"", kind)
        h.send_response(200 if body else 404)
        h.send_header("Content-Type", kind)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Cache-Control", "no-store")
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(body)


def clear_pip_env(monkeypatch: object) -> None:
    """No pip config file and no PIP_* variables: only the options a test passes reach pip."""
    import os

    for name in [n for n in os.environ if n.startswith("PIP_")]:
        monkeypatch.delenv(name)  # type: ignore[attr-defined]
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # type: ignore[attr-defined]


def local_pip(directory: Path) -> PipOptions:
    """pip options that read wheels from ``directory`` only (no index, no cache)."""
    return PipOptions(("--no-index", "--find-links", str(directory), "--no-cache-dir"))


@contextmanager
def running_index(directory: Path) -> Iterator[FakeIndex]:
    index = FakeIndex(directory)
    index.start()
    try:
        yield index
    finally:
        index.close()
