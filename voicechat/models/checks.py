"""Cheap checks that a model file is usable, run at startup before any engine loads it.

Each check returns a short reason ("is missing", "is truncated: ...") or None when the
file looks fine. They read headers, never whole weights, so they cost milliseconds even on
gigabyte files; full sha256 checks are `models verify`'s job. The GGUF check walks the
header and tensor table because a truncated GGUF still starts with the right magic and
llama.cpp's own error for it is an unhelpful crash deep in loading.
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

GGUF_MAGIC = b"GGUF"
ZIP_MAGIC = b"PK\x03\x04"  # PyTorch .pth/.pt files are zip archives

# GGUF metadata value types -> fixed byte size (strings and arrays are handled apart).
_GGUF_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def readable_reason(path: Path, *, expect_dir: bool = False) -> str | None:
    """Why ``path`` cannot be used as a file (or directory), or None."""
    if not path.exists():
        return "is missing"
    if expect_dir:
        return None if path.is_dir() else "is not a directory"
    if path.is_dir():
        return "is a directory, expected a file"
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as err:
        return f"is not readable ({err.strerror or err})"
    if path.stat().st_size == 0:
        return "is empty"
    return None


def size_reason(path: Path, expected: int | None) -> str | None:
    """Size differs from what the download recorded: truncated or replaced."""
    if expected is None:
        return None
    actual = path.stat().st_size
    if actual == expected:
        return None
    return f"has {actual} bytes but the download recorded {expected} (truncated or changed)"


def magic_reason(path: Path, magic: bytes, what: str) -> str | None:
    with path.open("rb") as f:
        head = f.read(len(magic))
    return None if head == magic else f"is not a {what} file (starts with {head!r}, expected {magic!r})"


def json_reason(path: Path) -> str | None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        return f"is not valid JSON ({err})"
    return None


class _Truncated(Exception):
    pass


class _Reader:
    """Bounds-checked little-endian reads over a memory map."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise _Truncated(f"header ends at byte {len(self.buf)}")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.buf):
            raise _Truncated(f"header ends at byte {len(self.buf)}")
        self.pos += n

    def string(self) -> bytes:
        n = self.take("<Q")
        start = self.pos
        self.skip(n)
        return bytes(self.buf[start:self.pos])

    def value(self, vtype: int) -> int | None:
        """Skip one metadata value; return it when it is an unsigned integer (for alignment)."""
        if vtype in (4, 10):
            return self.take("<I" if vtype == 4 else "<Q")
        if vtype in _GGUF_FIXED:
            self.skip(_GGUF_FIXED[vtype])
        elif vtype == _GGUF_STRING:
            self.skip(self.take("<Q"))
        elif vtype == _GGUF_ARRAY:
            item, count = self.take("<I"), self.take("<Q")
            if item in _GGUF_FIXED:
                self.skip(_GGUF_FIXED[item] * count)
            else:
                for _ in range(count):
                    self.value(item)
        else:
            raise ValueError(f"unknown metadata type {vtype}")
        return None


def gguf_reason(path: Path) -> str | None:
    """None if ``path`` is a complete GGUF (v2/v3): magic, header, tensor table and all tensor data."""
    from gguf.constants import GGML_QUANT_SIZES  # type sizes; imported late (numpy import cost)

    reason = magic_reason(path, GGUF_MAGIC, "GGUF")
    if reason:
        return reason
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        r = _Reader(buf)
        try:
            r.skip(4)
            version = r.take("<I")
            if version not in (2, 3):
                return f"is GGUF version {version}; this llama.cpp reads versions 2 and 3"
            n_tensors, n_kv = r.take("<Q"), r.take("<Q")
            alignment = 32
            for _ in range(n_kv):
                key = r.string()
                value = r.value(r.take("<I"))
                if key == b"general.alignment" and value:
                    alignment = value
            end = 0
            for _ in range(n_tensors):
                r.string()
                dims = [r.take("<Q") for _ in range(r.take("<I"))]
                ggml_type, offset = r.take("<I"), r.take("<Q")
                if ggml_type not in GGML_QUANT_SIZES:
                    return f"has a tensor of unknown type {ggml_type}"
                block, type_size = GGML_QUANT_SIZES[ggml_type]
                elements = 1
                for d in dims:
                    elements *= d
                end = max(end, offset + elements // block * type_size)
        except _Truncated as err:
            return f"is truncated ({err})"
        except (ValueError, struct.error) as err:
            return f"has a corrupt header ({err})"
        data_start = -(-r.pos // alignment) * alignment
        if data_start + end > len(buf):
            return f"is truncated ({len(buf)} bytes, its tensors need {data_start + end})"
    return None


CT2_REQUIRED = ("model.bin", "config.json", "tokenizer.json")
CT2_VOCABULARY = ("vocabulary.json", "vocabulary.txt")


def ct2_dir_reasons(directory: Path) -> list[tuple[Path, str]]:
    """(path, reason) for everything that keeps ``directory`` from being a faster-whisper model."""
    reason = readable_reason(directory, expect_dir=True)
    if reason:
        return [(directory, reason)]
    problems: list[tuple[Path, str]] = []
    for name in CT2_REQUIRED:
        path = directory / name
        reason = readable_reason(path) or (json_reason(path) if name.endswith(".json") else None)
        if reason:
            problems.append((path, reason))
    if not any((directory / name).is_file() for name in CT2_VOCABULARY):
        problems.append((directory / CT2_VOCABULARY[1], "is missing (or vocabulary.json)"))
    return problems
