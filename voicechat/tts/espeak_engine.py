"""espeak-ng text to speech: one ``espeak-ng --stdout`` process per sentence.

The default engine, because it needs no model weights. RealtimeTTS's
SystemEngine (pyttsx3) is unusable with several sessions (one cached pyttsx3
engine per process, one shared temp wav path); a subprocess per sentence has no
shared state at all: text goes on stdin (no argv injection or length limit),
WAV comes back on stdout and is streamed in fixed chunks while it is read.
``stop()`` kills the running processes, so abort is prompt even mid-read.

The class is a RealtimeTTS ``BaseEngine`` (usable with ``TextToAudioStream``)
and also offers ``stream()``, the direct chunk iterator the TTS pool uses.
"""

from __future__ import annotations

import logging
import re
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from RealtimeTTS.engines.base_engine import BaseEngine

from voicechat.audio import StreamResampler
from voicechat.engines.protocols import EngineError, VoiceSettings
from voicechat.tts.chunking import RunningStreams, StopFlag, chunk_bytes

log = logging.getLogger(__name__)

ESPEAK_SAMPLE_RATE = 22050  # espeak-ng's own voices; MBROLA voices (16 kHz) are resampled
DEFAULT_WPM = 175
MIN_WPM, MAX_WPM = 80, 900  # espeak-ng ignores slower rates; faster ones stop being intelligible
PA_INT16 = 8  # pyaudio.paInt16, without importing PortAudio for a constant
_VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+/-]{0,63}")  # no '.', so no path tricks
_VOICES_HINT = "see the installed voices with `espeak-ng --voices`"


def espeak_wpm(speed: float) -> int:
    """Speaking rate 1.0 = espeak's default 175 words per minute, clamped to what it accepts."""
    return max(MIN_WPM, min(MAX_WPM, round(DEFAULT_WPM * speed)))


def check_voice_name(voice: str) -> str:
    """Reject names that are not espeak voice names before they reach its command line."""
    if not _VOICE_NAME.fullmatch(voice):
        raise EngineError(f"tts.voice {voice!r} is not an espeak-ng voice name (e.g. en-us, en-gb+f3); {_VOICES_HINT}")
    return voice


@dataclass(frozen=True, slots=True)
class WavFormat:
    sample_rate: int
    channels: int
    bits: int


def read_exact(stream: IO[bytes], n: int) -> bytes:
    """Read ``n`` bytes unless EOF comes first (pipes return short reads)."""
    buf = bytearray()
    while len(buf) < n:
        piece = stream.read(n - len(buf))
        if not piece:
            break
        buf += piece
    return bytes(buf)


def read_wav_header(stream: IO[bytes]) -> WavFormat | None:
    """Consume a streamed WAV's header up to its data; None if the stream is empty.

    espeak-ng writes placeholder sizes (it does not know the length yet), so
    only the format is used and the data is read until EOF.
    """
    riff = read_exact(stream, 12)
    if not riff:
        return None
    if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise EngineError("espeak-ng wrote something that is not a WAV stream")
    fmt: WavFormat | None = None
    while True:
        head = read_exact(stream, 8)
        if len(head) < 8:
            raise EngineError("espeak-ng's WAV stream ended inside its header")
        tag, size = head[:4], struct.unpack("<I", head[4:])[0]
        if tag == b"data":
            if fmt is None:
                raise EngineError("espeak-ng's WAV stream has no fmt chunk")
            return fmt
        body = read_exact(stream, size + (size & 1))
        if tag == b"fmt ":
            codec, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            if codec != 1 or channels != 1 or bits != 16:
                raise EngineError(f"espeak-ng audio is not PCM16 mono (codec {codec}, {channels} ch, {bits} bit)")
            fmt = WavFormat(rate, channels, bits)


@dataclass(frozen=True, slots=True)
class EspeakVoice:
    """One entry of ``espeak-ng --voices``."""

    name: str  # what -v takes, e.g. "en-us"
    display_name: str
    gender: str
    file: str


def parse_voice_list(text: str) -> list[EspeakVoice]:
    """Parse ``espeak-ng --voices`` output (header line, then one voice per line)."""
    voices = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:
            voices.append(EspeakVoice(cols[1], cols[3].replace("_", " "), cols[2].split("/")[-1], cols[4]))
    return voices


class EspeakEngine(BaseEngine):
    """espeak-ng through a subprocess per sentence; safe to use from several threads."""

    sample_rate = ESPEAK_SAMPLE_RATE

    def __init__(
        self, voice: str = "en-us", speed: float = 1.0, chunk_ms: int = 20, executable: str = "espeak-ng"
    ) -> None:
        path = shutil.which(executable)
        if path is None:
            raise EngineError(
                f"{executable} is not installed (needed by tts.engine = 'espeak'); "
                "install it with `sudo apt-get install espeak-ng`"
            )
        self.executable = path
        self.voice = check_voice_name(voice)
        self.speed = speed
        self.chunk_bytes = chunk_bytes(ESPEAK_SAMPLE_RATE, chunk_ms)
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._running = RunningStreams()
        # BaseEngine.__init__ runs after this (RealtimeTTS's metaclass): it sets queue and stop event.

    def post_init(self) -> None:
        self.engine_name = "espeak-ng"

    # -- RealtimeTTS BaseEngine interface ------------------------------------
    def get_stream_info(self) -> tuple[int, int, int]:
        return PA_INT16, 1, ESPEAK_SAMPLE_RATE

    def synthesize(self, text: str, sentence_count: int = 0) -> bool:
        """RealtimeTTS path: put this sentence's chunks on ``self.queue``; False if it failed."""
        super().synthesize(text, sentence_count)  # clears the stop event
        try:
            for chunk in self.stream(text, cancel=self.stop_synthesis_event):
                self.audio_duration += len(chunk) / 2 / ESPEAK_SAMPLE_RATE
                self.queue.put(chunk)
        except EngineError as exc:
            log.error("espeak-ng: %s", exc)
            return False
        return True

    def get_voices(self) -> list[EspeakVoice]:
        out = subprocess.run([self.executable, "--voices"], capture_output=True, check=True, timeout=30)
        return parse_voice_list(out.stdout.decode("utf-8", "replace"))

    def set_voice(self, voice: str | EspeakVoice) -> None:
        self.voice = check_voice_name(voice.name if isinstance(voice, EspeakVoice) else voice)

    def set_voice_parameters(self, **voice_parameters: float) -> None:
        """Only ``speed`` (1.0 = 175 words per minute) is supported."""
        unknown = set(voice_parameters) - {"speed"}
        if unknown:
            raise TypeError(f"EspeakEngine has no voice parameter(s) {sorted(unknown)}; it takes speed")
        self.speed = float(voice_parameters.get("speed", self.speed))

    def stop(self) -> None:
        """Stop whatever this engine is synthesizing now (kills its processes)."""
        super().stop()
        self._running.stop_all()
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()  # the reading thread reaps it and closes the pipes

    def shutdown(self) -> None:
        self.stop()

    # -- direct use ------------------------------------------------------------
    def stream(self, text: str, voice: VoiceSettings | None = None, cancel: StopFlag | None = None) -> Iterator[bytes]:
        """Yield PCM16 mono chunks at 22050 Hz while espeak-ng speaks ``text``.

        Ends quietly once ``cancel`` is set or ``stop()`` is called; closing the
        iterator early kills the process. Bad voice names fail here, at once.
        """
        name = check_voice_name(voice.voice) if voice else self.voice
        wpm = espeak_wpm(voice.speed if voice else self.speed)
        if not text.strip():
            return iter(())
        return self._run(text, name, wpm, cancel)

    def _run(self, text: str, voice: str, wpm: int, cancel: StopFlag | None) -> Iterator[bytes]:
        args = [self.executable, "--stdin", "--stdout", "-v", voice, "-s", str(wpm)]
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stop = self._running.begin(cancel)  # checked before every read: a killed espeak still leaves buffered audio
        with self._lock:
            self._procs.add(proc)

        stdout = proc.stdout
        assert proc.stdin is not None and stdout is not None
        try:
            try:
                proc.stdin.write(text.encode("utf-8"))
                proc.stdin.close()
            except BrokenPipeError:
                pass  # it exited at once; its stderr says why
            fmt = read_wav_header(stdout)
            if fmt is None:
                self._raise_failure(proc, voice, stop.is_set())
                return
            resampler = StreamResampler(fmt.sample_rate, ESPEAK_SAMPLE_RATE)
            carry = b""
            while True:
                if stop.is_set():
                    return
                data = read_exact(stdout, self.chunk_bytes)
                if not data:
                    break
                data = carry + data
                cut = len(data) & ~1  # whole samples only
                data, carry = data[:cut], data[cut:]
                out = resampler.process(data)
                if out:
                    yield out
            tail = resampler.process(b"", last=True)
            if tail:
                yield tail
        finally:
            _kill(proc)
            self._running.end(stop)
            with self._lock:
                self._procs.discard(proc)

    def _raise_failure(self, proc: subprocess.Popen[bytes], voice: str, stopped: bool) -> None:
        """No audio came out: quiet if we stopped it, else an error saying why."""
        assert proc.stderr is not None
        rc = proc.wait()
        err = proc.stderr.read().decode("utf-8", "replace").strip()
        if rc < 0 or stopped:
            return
        if "voice does not exist" in err or "voice file" in err:
            raise EngineError(f"espeak-ng has no voice {voice!r} (tts.voice); {_VOICES_HINT}")
        if rc != 0:
            raise EngineError(f"espeak-ng failed with exit code {rc}: {err or 'no message'}")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill (if still running), reap and close the pipes of one espeak-ng process."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None and not pipe.closed:
            pipe.close()
