"""Single keypresses from the terminal, on a thread, for the TUI.

The terminal goes to cbreak mode (no line buffering, no echo) while the
reader runs and gets its settings back on ``stop()``, whatever happened. The
reader waits in ``select()`` on stdin and on a self-pipe, so ``stop()`` wakes
it at once without any polling. Ctrl-C is delivered as the key ``"\\x03"``
(ISIG off) so that quitting goes through the UI's orderly shutdown.
"""

from __future__ import annotations

import codecs
import logging
import os
import select
import sys
import termios
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

ESCAPE_FINALS = {"A": "up", "B": "down", "C": "right", "D": "left", "H": "home", "F": "end"}
TILDE_KEYS = {"1": "home", "2": "insert", "3": "delete", "4": "end", "5": "page_up", "6": "page_down"}
PLAIN_KEYS = {"\r": "enter", "\n": "enter", "\x7f": "backspace", "\x08": "backspace", "\t": "tab"}

KEY_ACTIONS = {
    "m": "mute",
    "t": "ptt_mode",
    "c": "clear",
    "v": "voice",
    "+": "faster",
    "=": "faster",  # the unshifted "+" key
    "-": "slower",
    "_": "slower",
    "q": "quit",
    "\x03": "quit",
}


def key_action(key: str, push_to_talk: bool) -> str | None:
    """What a key does: mute, ptt_mode, talk, clear, voice, faster, slower, quit, or None.

    Space only talks in push-to-talk mode, so a stray space cannot open the microphone.
    """
    if key == " ":
        return "talk" if push_to_talk else None
    return KEY_ACTIONS.get(key.lower() if len(key) == 1 else key)


def split_keys(text: str) -> list[str]:
    """Decoded terminal input -> keys: characters, or names for escape sequences ("up", "escape", ...).

    A terminal writes one key's sequence at once, so a lone ESC at the end of
    a read is the Escape key itself; unknown sequences are dropped.
    """
    keys: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\x1b":
            keys.append(PLAIN_KEYS.get(ch, ch))
            i += 1
            continue
        if i + 1 >= len(text) or text[i + 1] not in "[O":
            keys.append("escape")
            i += 1
            continue
        j = i + 2  # CSI/SS3: parameter bytes, then one final byte
        while j < len(text) and text[j] in "0123456789;":
            j += 1
        if j >= len(text):
            break  # a truncated sequence: drop it
        params, final = text[i + 2 : j], text[j]
        if final in ESCAPE_FINALS:
            keys.append(ESCAPE_FINALS[final])
        elif final == "~" and params.split(";")[0] in TILDE_KEYS:
            keys.append(TILDE_KEYS[params.split(";")[0]])
        i = j + 1
    return keys


def _stdin_fd() -> int:
    """stdin's descriptor, or OSError when there is none to read (closed, replaced by an object without one)."""
    try:
        return sys.stdin.fileno()
    except (AttributeError, ValueError) as e:
        raise OSError(f"stdin has no file descriptor: {e}") from e


class KeyReader:
    """Calls ``on_key(key)`` on its own thread for each key typed on ``fd`` (stdin by default).

    If ``fd`` is not a TTY the bytes are read as they come (no terminal
    settings to change). ``on_key`` exceptions are logged and reading goes on.
    Use as a context manager, or call ``start()`` (OSError when there is no
    stdin to read) and ``stop()``.
    """

    def __init__(self, on_key: Callable[[str], None], fd: int | None = None) -> None:
        self.on_key = on_key
        self._fd_given = fd is not None
        self.fd = -1 if fd is None else fd  # stdin's is looked up by start()
        self._saved: list[Any] | None = None
        self._wake_w = -1
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # start/stop
        self._term_lock = threading.Lock()  # the saved settings, restored by stop() or the dying thread

    def __enter__(self) -> KeyReader:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the reader to end on its own (end of input); True if it has ended."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def start(self) -> None:
        """Switch the terminal to cbreak mode and start reading."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("KeyReader already started")
            if not self._fd_given:
                self.fd = _stdin_fd()
            wake_r, self._wake_w = os.pipe()
            self._stopping = threading.Event()
            try:
                self._enter_cbreak()
                self._thread = threading.Thread(
                    target=self._run, args=(wake_r, self._stopping), name="key-reader", daemon=True
                )
                self._thread.start()
            except BaseException:
                self._restore()
                os.close(wake_r)
                self._close_wake()
                self._thread = None
                raise

    def stop(self) -> None:
        """Wake the reader, wait for it (unless called from ``on_key``) and restore the terminal."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._stopping.set()
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass  # the reader already ended (end of input) and closed its side
            self._close_wake()
            if thread is not threading.current_thread():
                thread.join()
            self._restore()

    # -- internals -----------------------------------------------------------------
    def _enter_cbreak(self) -> None:
        if not os.isatty(self.fd):
            return
        saved = termios.tcgetattr(self.fd)
        mode = termios.tcgetattr(self.fd)
        mode[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG)  # lflag
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        with self._term_lock:
            self._saved = saved
            termios.tcsetattr(self.fd, termios.TCSANOW, mode)

    def _restore(self) -> None:
        with self._term_lock:
            saved, self._saved = self._saved, None
            if saved is None:
                return
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)
            except termios.error:
                log.warning("could not restore the terminal settings of fd %d", self.fd)

    def _close_wake(self) -> None:
        if self._wake_w >= 0:
            os.close(self._wake_w)
            self._wake_w = -1

    def _run(self, wake_r: int, stopping: threading.Event) -> None:
        """The reader thread; it owns ``wake_r`` (``stop()`` owns the write end)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while True:
                ready, _, _ = select.select([self.fd, wake_r], [], [])
                if wake_r in ready:
                    return
                try:
                    data = os.read(self.fd, 1024)
                except OSError:  # e.g. EIO: the terminal went away
                    return
                if not data:
                    return  # end of input
                for key in split_keys(decoder.decode(data)):
                    if stopping.is_set():
                        return  # stop() from inside on_key: no more keys after it
                    self._deliver(key)
        finally:
            os.close(wake_r)
            if not stopping.is_set():
                # Ended on its own (end of input, or something unexpected): the terminal must come back now.
                self._restore()

    def _deliver(self, key: str) -> None:
        try:
            self.on_key(key)
        except Exception:
            log.exception("key handler failed for %r", key)
