"""A WebSocket client over a bare socket, for what a well-behaved library will not do.

Tests use it to stop reading (with a tiny receive buffer), to send frames that
declare huge lengths or stop halfway through a header, and to send raw HTTP.
Frames are built by hand after RFC 6455 section 5.2.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, length: int | None = None,
          rsv: int = 0) -> bytes:
    """One client frame; ``length`` overrides the declared payload length (the payload stays as given)."""
    declared = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)])
    mask_bit = 0x80 if mask else 0
    if declared < 126:
        head += bytes([mask_bit | declared])
    elif declared < 2**16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", declared)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", declared)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def upgrade_request(port: int, path: str = "/ws", extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


def read_http_head(sock: socket.socket, limit: int = 65536) -> bytes:
    """Bytes up to and including the blank line that ends an HTTP response's head (b"" if closed first)."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


class RawWebSocket:
    """A connected, upgraded socket; ``rcvbuf`` shrinks the receive buffer before connecting."""

    def __init__(self, port: int, *, rcvbuf: int | None = None, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(upgrade_request(port))
        head = read_http_head(self.sock)
        if not head.startswith(b"HTTP/1.1 101"):
            raise AssertionError(f"upgrade refused: {head[:200]!r}")
        self._buffer = head.split(b"\r\n\r\n", 1)[1]

    @property
    def local_port(self) -> int:
        return int(self.sock.getsockname()[1])

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_json(self, **message: object) -> None:
        self.send(frame(OP_TEXT, json.dumps(message).encode()))

    def _read_exact(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def read_frame(self) -> tuple[int, bytes]:
        """The next server frame (servers never mask): (opcode, payload)."""
        b0, b1 = self._read_exact(2)
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read_exact(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read_exact(8))
        return b0 & 0xF, self._read_exact(length)

    def read_json(self) -> dict[str, object]:
        while True:
            opcode, payload = self.read_frame()
            if opcode == OP_TEXT:
                return json.loads(payload)
            if opcode == OP_CLOSE:
                raise EOFError(f"closed: {payload!r}")

    def close_code(self) -> int | None:
        """Read until the server's close frame (its code) or the end of the stream (None)."""
        try:
            while True:
                opcode, payload = self.read_frame()
                if opcode == OP_CLOSE:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        except (EOFError, ConnectionError, TimeoutError):
            return None

    def close(self) -> None:
        self.sock.close()
