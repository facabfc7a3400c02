"""Local audio endpoints for the terminal UI: a sound card (sounddevice) or WAV files.

Both kinds behave the same towards the pipeline: capture arrives as PCM16 mono
blocks on a device/reader thread, playback is queued and consumed in real time,
``flush`` drops the queue at once (barge-in), and what was played stays
available as the echo canceller's far end (every sample once, ``playback_since``)
and the echo gate's reference (the last seconds). ``FileIO`` makes the same
timeline from files, so the terminal path is testable on a box without sound;
given a simulated room it also puts the speaker's echo into its microphone.
"""

from __future__ import annotations

import logging
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import soxr

from voicechat.audio import StreamResampler, read_wav
from voicechat.local.devices import (
    LIST_HINT,
    AudioDeviceError,
    DeviceInfo,
    device_channels,
    find_device,
    list_devices,
    load_sounddevice,
)
from voicechat.local.playback_buffer import PlaybackBuffer
from voicechat.local.room import EchoRoom, RoomConfig

log = logging.getLogger(__name__)


class AudioIO(Protocol):
    """One local audio endpoint: capture + playback."""

    input_rate: int  # rate of the PCM handed to on_input (device native rate; FileIO: the WAV's rate)
    output_rate: int  # rate play() expects

    def start(self, on_input: Callable[[bytes], None]) -> None:
        """Begin capture: on_input(PCM16 mono at input_rate) in ~block_ms blocks, on the device/reader thread."""

    def play(self, pcm: bytes) -> None:
        """Queue PCM16 mono at output_rate; never blocks."""

    def flush(self) -> int:
        """Barge-in: drop everything queued, now; returns the samples dropped."""

    @property
    def played_samples(self) -> int:
        """Queued samples actually played (written to the device/file) since start; silence not counted."""

    @property
    def queued_samples(self) -> int:
        """Samples queued for the speaker and not played yet."""

    def recent_playback(self, seconds: float) -> np.ndarray:
        """The last ``seconds`` of the speaker (int16 at output_rate, silence included): the echo reference."""

    def playback_since(self, position: int) -> tuple[np.ndarray, int]:
        """The speaker's timeline (int16 at output_rate) from ``position`` (0, or what the last call returned)
        to now, and the new position: the echo canceller's far end."""

    @property
    def latency_ms(self) -> float:
        """The device's input plus output latency (ms): the echo delay's starting guess; 0 if unknown."""

    def close(self) -> None:
        """Stop and join streams/threads; idempotent."""


class _Speaker:
    """The playback half both endpoints share: everything goes through one PlaybackBuffer (``self._buffer``)."""

    _buffer: PlaybackBuffer

    def play(self, pcm: bytes) -> None:
        self._buffer.put(pcm)

    def flush(self) -> int:
        return self._buffer.flush()

    @property
    def played_samples(self) -> int:
        return self._buffer.played_samples

    @property
    def queued_samples(self) -> int:
        return self._buffer.queued_samples

    @property
    def underruns(self) -> int:
        return self._buffer.underruns

    def recent_playback(self, seconds: float) -> np.ndarray:
        return self._buffer.recent(seconds)

    def playback_since(self, position: int) -> tuple[np.ndarray, int]:
        return self._buffer.since(position)


class SoundDeviceIO(_Speaker, AudioIO):
    """Microphone and speaker through PortAudio, each at its device's native rate."""

    def __init__(self, input_device: str = "", output_device: str = "", *, block_ms: int = 20,
                 sd_module: Any = None) -> None:
        self._sd = load_sounddevice(sd_module)
        self._in_info = self._resolve(input_device, "input")
        self._out_info = self._resolve(output_device, "output")
        self.input_rate = int(self._in_info.default_samplerate)
        self.output_rate = int(self._out_info.default_samplerate)
        self.block_ms = block_ms
        self._buffer = PlaybackBuffer(self.output_rate)
        self._scratch = np.zeros(self.output_rate * block_ms // 1000 * 4, np.int16)
        self._streams: list[Any] = []
        self._on_input: Callable[[bytes], None] | None = None
        self._in_channels = self._out_channels = 1
        self.input_overflows = 0
        self.callback_errors = 0
        self._closed = False

    @property
    def latency_ms(self) -> float:
        total = 0.0
        for stream in self._streams:
            try:
                total += float(stream.latency) * 1000.0  # PortAudio's estimate, seconds
            except (AttributeError, TypeError, ValueError):
                pass
        return total

    def _resolve(self, spec: str, kind: Literal["input", "output"]) -> DeviceInfo:
        index = find_device(spec, kind, self._sd)
        if index is None:
            raise AudioDeviceError(f"there is no default {kind} device; {LIST_HINT} and choose one")
        return next(d for d in list_devices(self._sd) if d.index == index)

    def start(self, on_input: Callable[[bytes], None]) -> None:
        if self._streams or self._closed:
            raise RuntimeError("SoundDeviceIO.start() may be called once, before close()")
        self._on_input = on_input
        try:
            inp, self._in_channels = self._open(self._sd.RawInputStream, self._in_info, self._input_callback,
                                                "input")
            self._streams.append(inp)
            out, self._out_channels = self._open(self._sd.RawOutputStream, self._out_info, self._output_callback,
                                                 "output")
            self._streams.append(out)
            for s in self._streams:
                s.start()
        except AudioDeviceError:
            self.close()
            raise
        except Exception as e:
            self.close()
            raise AudioDeviceError(f"could not start the sound devices: {e}; {LIST_HINT}") from e

    def _open(self, cls: Any, dev: DeviceInfo, callback: Callable, kind: str) -> tuple[Any, int]:
        """Open mono; a device that only takes stereo is opened with 2 channels and mixed."""
        rate = int(dev.default_samplerate)
        first: Exception | None = None
        for channels in (1, 2) if device_channels(dev, kind) >= 2 else (1,):
            try:
                stream = cls(samplerate=rate, blocksize=rate * self.block_ms // 1000, device=dev.index,
                             channels=channels, dtype="int16", callback=callback)
                return stream, channels
            except Exception as e:  # sd.PortAudioError: e.g. "Invalid number of channels"
                first = first or e
        raise AudioDeviceError(f"{kind} device {dev.index} ({dev.name}) could not be opened at {rate} Hz: "
                               f"{first}; {LIST_HINT}")

    def _input_callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        if status:
            self.input_overflows += 1
        x = np.frombuffer(indata, np.int16)
        if self._in_channels == 2:
            x = ((x[0::2].astype(np.int32) + x[1::2]) >> 1).astype(np.int16)
        try:
            if self._on_input is not None:
                self._on_input(x.tobytes())
        except Exception:  # never let the consumer's bug kill the PortAudio stream
            self.callback_errors += 1
            log.exception("audio input consumer failed")

    def _output_callback(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        if len(self._scratch) < frames:
            self._scratch = np.zeros(frames, np.int16)
        mono = self._scratch[:frames]
        self._buffer.pull(mono)
        out = np.frombuffer(outdata, np.int16)
        if self._out_channels == 2:
            out = out.reshape(-1, 2)
            out[:, 0] = mono
            out[:, 1] = mono
        else:
            out[:] = mono

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for s in self._streams:
            try:
                s.stop()
                s.close()
            except Exception as e:
                log.warning("closing an audio stream failed: %s", e)
        self._streams.clear()


class FileIO(_Speaker, AudioIO):
    """A WAV file as the microphone and a WAV file as the speaker, both in real time."""

    def __init__(self, audio_in: Path, audio_out: Path | None, *, output_rate: int = 24000, block_ms: int = 20,
                 realtime: bool = True, then_silence: bool = True, echo_gain: float = 0.0,
                 echo_delay_ms: int = 40, room: RoomConfig | None = None) -> None:
        """``echo_gain`` > 0 simulates speakers without headphones: the microphone also hears what was
        played ``echo_delay_ms`` ago, at that gain (tests of the echo gate, demos). ``room`` instead puts a
        simulated room (reverberation, delay, gain, soft clipping, noise) between the speaker and the
        microphone."""
        try:
            self._samples, self.input_rate = read_wav(Path(audio_in))
        except (OSError, EOFError, wave.Error, ValueError) as e:
            raise AudioDeviceError(f"cannot read the input WAV {audio_in}: {e}") from e
        self.output_rate = output_rate
        self.block_ms = block_ms
        self.realtime = realtime
        self.then_silence = then_silence
        self.input_finished = threading.Event()
        self._buffer = PlaybackBuffer(output_rate)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._wav: wave.Wave_write | None = None
        if audio_out is not None:
            self._wav = wave.open(str(audio_out), "wb")
            self._wav.setnchannels(1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(output_rate)
        self.callback_errors = 0
        self._closed = False
        self.echo_gain, self.echo_delay_ms = echo_gain, echo_delay_ms
        self._room = EchoRoom(room, self.input_rate) if room is not None else None
        self._room_position = 0
        self._room_resampler = StreamResampler(output_rate, self.input_rate)

    latency_ms = 0.0

    def _with_echo(self, block: np.ndarray) -> np.ndarray:
        """Add the acoustic echo of the speaker to a microphone block."""
        if self._room is not None:
            played, self._room_position = self._buffer.since(self._room_position)
            self._room.push(np.frombuffer(self._room_resampler.process(played.tobytes()), np.int16))
            mixed = block.astype(np.float64) + self._room.echo(len(block))
            return np.clip(mixed, -32768, 32767).astype(np.int16)
        if self.echo_gain <= 0:
            return block
        seconds = len(block) / self.input_rate
        played = self._buffer.recent(seconds + self.echo_delay_ms / 1000)
        cut = len(played) - round(self.echo_delay_ms / 1000 * self.output_rate)
        echo = played[max(0, cut - round(seconds * self.output_rate)) : max(0, cut)].astype(np.float32)
        if len(echo) == 0:
            return block
        if self.output_rate != self.input_rate:
            echo = soxr.resample(echo, self.output_rate, self.input_rate)
        echo = np.pad(echo[: len(block)], (len(block) - min(len(echo), len(block)), 0))
        mixed = block.astype(np.float32) + self.echo_gain * echo
        return np.clip(mixed, -32768, 32767).astype(np.int16)

    def start(self, on_input: Callable[[bytes], None]) -> None:
        if self._threads or self._closed:
            raise RuntimeError("FileIO.start() may be called once, before close()")
        self._threads = [  # the player first: on_input may call close(), which joins it
            threading.Thread(target=self._play_loop, name="fileio-player", daemon=True),
            threading.Thread(target=self._read, args=(on_input,), name="fileio-reader", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _deliver(self, on_input: Callable[[bytes], None], block: np.ndarray) -> None:
        try:
            on_input(self._with_echo(block).tobytes())
        except Exception:
            self.callback_errors += 1
            log.exception("audio input consumer failed")

    def _read(self, on_input: Callable[[bytes], None]) -> None:
        """Deliver the file block by block (each when it would have been fully recorded), then silence."""
        n = max(1, self.input_rate * self.block_ms // 1000)
        period = n / self.input_rate
        t0 = time.monotonic()
        k = 0
        for i in range(0, len(self._samples), n):
            k += 1
            if self.realtime and self._stop.wait(max(0.0, t0 + k * period - time.monotonic())):
                return
            if self._stop.is_set():
                return
            self._deliver(on_input, self._samples[i:i + n])
        self.input_finished.set()
        if not self.then_silence:
            return
        silence = np.zeros(n, np.int16)
        t0, k = time.monotonic(), 0
        while True:  # an open microphone: paced in real time even when the file was not
            k += 1
            if self._stop.wait(max(0.0, t0 + k * period - time.monotonic())):
                return
            self._deliver(on_input, silence)

    def _play_loop(self) -> None:
        """The speaker: every tick, write what is due (queued audio or silence) to the output file."""
        n = max(1, self.output_rate * self.block_ms // 1000)
        period = n / self.output_rate
        block = np.zeros(n, np.int16)
        t0, ticks = time.monotonic(), 0
        while not self._stop.wait(max(0.0, t0 + (ticks + 1) * period - time.monotonic())):
            due = int((time.monotonic() - t0) / period)
            while ticks < due:  # catch up after a stall, so the file keeps wall-clock time
                ticks += 1
                self._buffer.pull(block)
                if self._wav is not None:
                    self._wav.writeframes(block.tobytes())

    def close(self) -> None:
        """Stop both threads, join them and finalise the output WAV; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for t in self._threads:
            if t is not threading.current_thread():  # close() from inside on_input must not join itself
                t.join()
        if self._wav is not None:
            self._wav.close()
            self._wav = None
