"""Key reading over a pseudo-terminal, the escape-sequence parser and the key -> action table."""

from __future__ import annotations

import io
import os
import sys
import termios
import threading
import time
from collections.abc import Iterator

import pytest

from voicechat.local.tui.keys import KeyReader, key_action, split_keys

WAIT_S = 5.0


class Keys:
    """Collects on_key calls; ``wait_for(n)`` blocks until n keys came."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, key: str) -> None:
        with self._cond:
            self.keys.append(key)
            self._cond.notify_all()

    def wait_for(self, n: int) -> list[str]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.keys) >= n, timeout=WAIT_S), f"got only {self.keys}"
            return list(self.keys)


@pytest.fixture
def pty() -> Iterator[tuple[int, int]]:
    master, slave = os.openpty()
    yield master, slave
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


def test_keys_typed_on_the_terminal_arrive(pty: tuple[int, int]) -> None:
    master, slave = pty
    keys = Keys()
    with KeyReader(keys, fd=slave):
        os.write(master, b"m")
        assert keys.wait_for(1) == ["m"]
        os.write(master, b" ")
        os.write(master, b"\x1b[A")
        os.write(master, "é".encode())
        os.write(master, b"q\x03")
        assert keys.wait_for(6) == ["m", " ", "up", "é", "q", "\x03"]


def test_cbreak_while_running_and_settings_restored_on_stop(pty: tuple[int, int]) -> None:
    master, slave = pty
    before = termios.tcgetattr(slave)
    assert before[3] & termios.ICANON
    reader = KeyReader(Keys(), fd=slave)
    reader.start()
    try:
        lflag = termios.tcgetattr(slave)[3]
        assert not lflag & (termios.ICANON | termios.ECHO | termios.ISIG)
    finally:
        started = time.monotonic()
        reader.stop()
        stopped_in = time.monotonic() - started
    assert stopped_in < 1.0, "stop() wakes the reader through its pipe, not by polling"
    assert not reader.running
    assert termios.tcgetattr(slave) == before


def test_settings_restored_when_the_body_raises(pty: tuple[int, int]) -> None:
    _, slave = pty
    before = termios.tcgetattr(slave)
    with pytest.raises(RuntimeError, match="boom"):
        with KeyReader(Keys(), fd=slave):
            raise RuntimeError("boom")
    assert termios.tcgetattr(slave) == before


def test_the_reader_ends_when_the_terminal_goes_away(pty: tuple[int, int]) -> None:
    master, slave = pty
    reader = KeyReader(Keys(), fd=slave)
    reader.start()
    os.close(master)  # reading the slave now fails (EIO)
    assert reader.wait(WAIT_S)
    reader.stop()  # nothing left to restore on a dead terminal: no error either


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_settings_restored_when_the_reader_thread_dies(pty: tuple[int, int]) -> None:
    master, slave = pty
    before = termios.tcgetattr(slave)

    def on_key(key: str) -> None:
        raise SystemExit("not an ordinary handler error: the thread dies")

    reader = KeyReader(on_key, fd=slave)
    reader.start()
    os.write(master, b"x")
    assert reader.wait(WAIT_S)
    assert termios.tcgetattr(slave) == before
    reader.stop()
    assert termios.tcgetattr(slave) == before


def test_a_failing_handler_does_not_stop_the_reader(pty: tuple[int, int]) -> None:
    master, slave = pty
    keys = Keys()

    def on_key(key: str) -> None:
        keys(key)
        if key == "x":
            raise ValueError("handler bug")

    with KeyReader(on_key, fd=slave):
        os.write(master, b"x")
        keys.wait_for(1)
        os.write(master, b"v")
        assert keys.wait_for(2) == ["x", "v"]


def test_stop_from_inside_the_handler(pty: tuple[int, int]) -> None:
    master, slave = pty
    before = termios.tcgetattr(slave)
    keys = Keys()
    reader: KeyReader

    def on_key(key: str) -> None:
        if key_action(key, push_to_talk=False) == "quit":
            reader.stop()
        keys(key)

    reader = KeyReader(on_key, fd=slave)
    reader.start()
    os.write(master, b"qm")  # nothing after the quit key is delivered
    assert keys.wait_for(1) == ["q"]
    assert reader.wait(WAIT_S) is True
    assert keys.keys == ["q"]
    assert termios.tcgetattr(slave) == before


def test_a_pipe_works_too_and_ends_at_end_of_input() -> None:
    read_end, write_end = os.pipe()
    keys = Keys()
    reader = KeyReader(keys, fd=read_end)
    reader.start()
    try:
        os.write(write_end, b"t +")
        assert keys.wait_for(3) == ["t", " ", "+"]
        os.close(write_end)
        assert reader.wait(WAIT_S)
    finally:
        reader.stop()
        os.close(read_end)


def test_no_stdin_to_read_is_an_os_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    reader = KeyReader(Keys())
    with pytest.raises(OSError):
        reader.start()
    assert not reader.running
    reader.stop()


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("abc", ["a", "b", "c"]),
        (" ", [" "]),
        ("\x1b[A\x1b[B\x1b[C\x1b[D", ["up", "down", "right", "left"]),
        ("\x1bOA", ["up"]),
        ("\x1b[1;5C", ["right"]),
        ("\x1b[3~x", ["delete", "x"]),
        ("\x1b", ["escape"]),
        ("\x1bq", ["escape", "q"]),
        ("\x1b[200~", []),
        ("\x1b[", []),
        ("\r\n\x7f", ["enter", "enter", "backspace"]),
        ("\x03", ["\x03"]),
    ],
)
def test_split_keys(text: str, keys: list[str]) -> None:
    assert split_keys(text) == keys


@pytest.mark.parametrize(
    ("key", "push_to_talk", "action"),
    [
        ("m", False, "mute"),
        ("M", False, "mute"),
        ("t", False, "ptt_mode"),
        (" ", True, "talk"),
        (" ", False, None),
        ("c", False, "clear"),
        ("v", True, "voice"),
        ("+", False, "faster"),
        ("=", False, "faster"),
        ("-", False, "slower"),
        ("q", False, "quit"),
        ("q", True, "quit"),
        ("\x03", False, "quit"),
        ("x", False, None),
        ("up", False, None),
    ],
)
def test_key_action(key: str, push_to_talk: bool, action: str | None) -> None:
    assert key_action(key, push_to_talk) == action
