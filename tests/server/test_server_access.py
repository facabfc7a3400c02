"""Access: data directory, token file, constant-time token check, Origin check, join URLs, QR code."""

from __future__ import annotations

import io
import math
import stat
from pathlib import Path

import pytest
import segno

from voicechat.server.access import (
    default_data_dir,
    join_urls,
    load_or_create_token,
    origin_allowed,
    qr_text,
    request_token,
    token_matches,
)


def test_data_dir_configured_wins_and_expands_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", "/xdg")
    assert default_data_dir("~/vc") == tmp_path / "vc"
    assert default_data_dir("/srv/vc") == Path("/srv/vc")


def test_data_dir_from_xdg_then_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", "/xdg")
    assert default_data_dir("") == Path("/xdg/voicechat")
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    assert default_data_dir("") == tmp_path / ".local" / "share" / "voicechat"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_data_dir("  ") == tmp_path / ".local" / "share" / "voicechat"


def test_token_created_private_and_stable(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    token = load_or_create_token(data_dir, "")
    assert len(token) >= 24 and token.replace("-", "").replace("_", "").isalnum()
    path = data_dir / "token"
    assert path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert load_or_create_token(data_dir, "") == token
    assert [p.name for p in data_dir.iterdir()] == ["token"]  # no temporary file left behind


def test_saved_token_is_read_stripped(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("  my-saved-token\n")
    assert load_or_create_token(tmp_path, "") == "my-saved-token"


def test_empty_token_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n")
    token = load_or_create_token(tmp_path, "")
    assert token and (tmp_path / "token").read_text().strip() == token


def test_configured_token_wins_and_is_not_written(tmp_path: Path) -> None:
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "token").write_text("saved")
    assert load_or_create_token(tmp_path / "saved", "from-config") == "from-config"
    assert (tmp_path / "saved" / "token").read_text() == "saved"
    assert load_or_create_token(tmp_path / "fresh", "from-config") == "from-config"
    assert not (tmp_path / "fresh").exists()


@pytest.mark.parametrize(
    ("expected", "given", "result"),
    [("abc", "abc", True), ("abc", "abd", False), ("abc", "ab", False), ("abc", None, False),
     ("abc", "", False), ("", "", False), ("tök", "tök", True)],
)
def test_token_matches(expected: str, given: str | None, result: bool) -> None:
    assert token_matches(expected, given) is result


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, None, []),  # not a browser
        ("https://192.168.1.5:8765", "192.168.1.5:8765", []),
        ("https://MyHost.local:8765", "myhost.local:8765", []),
        ("https://myhost", "myhost:443", []),
        ("https://myhost:443", "myhost", []),
        ("http://myhost", "myhost:80", []),
        ("http://[::1]:8765", "[::1]:8765", []),
        ("https://[fd00::7]", "[FD00::7]:443", []),
        ("https://myhost:8765/", "myhost:8765", []),
        ("https://app.example.com", "myhost:8765", ["https://app.example.com/"]),
        ("https://app.example.com/", "myhost:8765", ["https://app.example.com"]),
        ("http://localhost:3000", None, ["http://localhost:3000"]),
    ],
)
def test_origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> None:
    assert origin_allowed(origin, host, allowed)


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("null", "myhost:8765", ["null"]),
        ("", "myhost:8765", []),
        ("https://evil.com", "myhost:8765", []),
        ("https://myhost:9999", "myhost:8765", []),
        ("https://myhost", "myhost:80", []),  # https defaults to 443
        ("http://myhost", "myhost:443", []),
        ("https://myhost:8765", None, []),
        ("https://myhost:8765", "", []),
        ("https://myhost.evil.com:8765", "myhost:8765", []),
        ("https://user@myhost:8765", "myhost:8765", []),
        ("https://myhost:8765/path", "myhost:8765", []),
        ("ftp://myhost:8765", "myhost:8765", []),
        ("file://", "myhost:8765", []),
        ("https://[::1", "[::1]:8765", []),
        ("https://myhost:notaport", "myhost:8765", []),
        ("https://myhost:99999", "myhost:99999", []),
        ("https://myhost:8765", "myhost:8765/x", []),
        ("https://myhost:8765", "[bad", []),
        ("\x00\xff garbage", "myhost:8765", []),
        ("https://app.example.com.evil", "myhost:8765", ["https://app.example.com"]),
    ],
)
def test_origin_refused(origin: str, host: str | None, allowed: list[str]) -> None:
    assert not origin_allowed(origin, host, allowed)


def test_request_token_from_header_or_query() -> None:
    assert request_token("/metrics", "Bearer abc") == "abc"
    assert request_token("/metrics", "bearer   abc  ") == "abc"
    assert request_token("/metrics?token=q", "Bearer h") == "h"  # the header comes first
    assert request_token("/metrics?token=abc", None) == "abc"
    assert request_token("/health/detailed?x=1&token=a%2Bb", None) == "a+b"
    assert request_token("/metrics?token=q", "Basic dXNlcjpwdw==") == "q"
    assert request_token("/metrics", "Bearer ") is None
    assert request_token("/metrics?token=", None) is None
    assert request_token("/metrics", None) is None


def test_join_urls_for_all_interfaces_list_lan_addresses() -> None:
    assert join_urls("https", "0.0.0.0", 8765, "tok", ["10.0.0.7", "192.168.1.20", "fd00::7"]) == [
        "https://10.0.0.7:8765/#token=tok",
        "https://192.168.1.20:8765/#token=tok",
    ]
    assert join_urls("https", "::", 8765, "tok", ["10.0.0.7", "fd00::7"]) == [
        "https://10.0.0.7:8765/#token=tok",
        "https://[fd00::7]:8765/#token=tok",
    ]
    assert join_urls("https", "", 443, "tok", []) == ["https://localhost:443/#token=tok"]
    assert join_urls("https", "0.0.0.0", 8765, "tok", ["fd00::7"]) == ["https://localhost:8765/#token=tok"]


def test_join_urls_for_one_host() -> None:
    assert join_urls("http", "127.0.0.1", 8765, "tok", ["10.0.0.7"]) == ["http://127.0.0.1:8765/#token=tok"]
    assert join_urls("https", "::1", 8765, "tok", []) == ["https://[::1]:8765/#token=tok"]
    assert join_urls("https", "myhost.local", 8765, "tok", []) == ["https://myhost.local:8765/#token=tok"]


def test_join_url_token_is_percent_encoded() -> None:
    generated = "aB3-_xYz09"
    assert join_urls("https", "h", 1, generated, [])[0].endswith(f"#token={generated}")
    assert join_urls("https", "h", 1, "a b#c&d", [])[0].endswith("#token=a%20b%23c%26d")


def test_qr_text_is_segnos_compact_rendering() -> None:
    url = "https://192.168.1.20:8765/#token=" + "x" * 24
    text = qr_text(url)
    qr = segno.make_qr(url)
    expected = io.StringIO()
    qr.terminal(out=expected, compact=True)
    assert text == expected.getvalue()
    lines = text.splitlines()
    width, height = qr.symbol_size()  # modules including the quiet zone
    assert qr.is_micro is False
    assert len(lines) == math.ceil(height / 2)  # two module rows per text line
    assert all(len(line) == width for line in lines)
    assert set(text) <= {" ", "\u2580", "\u2584", "\u2588", "\n"}
    assert qr_text(url + "y") != text
