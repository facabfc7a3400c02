"""How a saved conversation is written down: records, one JSON object each, and how they are read back.

Pure (no I/O), shared by every store (the JSONL files, Redis). A saved
conversation is a sequence of records: first a header naming its session and
the sha256 of its resume token (never the token), then one record per history
change. ``encode_record`` makes a record's bytes, which never hold a raw line
end (JSON escapes it), so a file keeps one record per line and Redis one per
list element. ``parse_records`` keeps every record that decodes and counts the
others, so a torn or garbled record never costs another one.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from voicechat.core.history import HistoryChange

FORMAT_VERSION = 1
CHANGE_KINDS = ("user", "assistant", "clear", "discard_last_user")


def token_hash(token: str) -> str:
    """sha256 hex of a resume token: what a store may keep and key by instead of the token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()  # any str, even a lone surrogate


@dataclass(frozen=True)
class StoredConversation:
    """What a store holds for one token: who it belongs to and its history changes in order."""

    session_id: str
    created: float
    changes: list[HistoryChange]
    bad_lines: int = 0  # torn or garbled records that were skipped


def header_record(session_id: str, token: str, created: float) -> dict[str, object]:
    """The first record of a conversation: its session and the hash of its token, never the token."""
    return {"t": "header", "v": FORMAT_VERSION, "session": session_id, "created": round(created, 3),
            "token_sha256": token_hash(token)}


def change_record(change: HistoryChange, at: float) -> dict[str, object]:
    """The record of one history change made at ``at`` (seconds since the epoch)."""
    record: dict[str, object] = {"t": change.kind, "at": round(at, 3)}
    if change.kind in ("user", "assistant"):
        record["text"] = change.text
    return record


def encode_record(record: dict[str, object]) -> bytes:
    """A record as compact UTF-8 JSON, without a line end (and never containing one)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def parse_records(records: Iterable[bytes], token_sha256: str | None = None) -> StoredConversation | None:
    """The conversation in encoded records; None without a valid header first (or with another token's).

    Records that do not decode are skipped and counted (``bad_lines``); blank
    ones are ignored. With ``token_sha256``, the header must name that hash
    (compared in constant time).
    """
    bad = 0
    header: dict[str, object] | None = None
    changes: list[HistoryChange] = []
    for raw in records:
        if not raw.strip():
            continue
        record = _record(raw)
        if record is None:
            bad += 1
        elif header is None:
            if record.get("t") != "header" or not isinstance(record.get("token_sha256"), str):
                return None
            header = record
        elif (change := _change(record)) is not None:
            changes.append(change)
        else:
            bad += 1
    if header is None:
        return None
    if token_sha256 is not None and not secrets.compare_digest(str(header["token_sha256"]), token_sha256):
        return None
    created = header.get("created")
    return StoredConversation(
        str(header.get("session", "")), float(created) if isinstance(created, (int, float)) else 0.0, changes, bad
    )


def parse_journal(data: bytes, token_sha256: str | None = None) -> StoredConversation | None:
    """The conversation in a JSONL journal's bytes (one record a line); see ``parse_records``.

    A write the process did not finish leaves a last line that does not parse;
    garbage anywhere costs only its own lines.
    """
    return parse_records(data.split(b"\n"), token_sha256)


def _record(raw: bytes) -> dict[str, object] | None:
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _change(record: dict[str, object]) -> HistoryChange | None:
    kind, text = record.get("t"), record.get("text", "")
    if kind not in CHANGE_KINDS or not isinstance(text, str):
        return None
    return HistoryChange(kind, text)  # type: ignore[arg-type]
