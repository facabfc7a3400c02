"""Local audio endpoints: WAV files in real time, and sound cards through a fake sounddevice module."""

from __future__ import annotations

import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from support.helpers import wait_until, write_wav

from voicechat.audio import read_wav
from voicechat.local.audio_io import FileIO, PlaybackBuffer, SoundDeviceIO
from voicechat.local.devices import AudioDeviceError, find_device, format_devices, has_input_device, list_devices


def ramp(n: int) -> np.ndarray:
    """Distinct, never-zero samples, so order and gaps are visible."""
    return (np.arange(n) % 20000 + 100).astype(np.int16)


class Collector:
    def __init__(self) -> None:
        self.blocks: list[bytes] = []
        self.lock = threading.Lock()

    def __call__(self, pcm: bytes) -> None:
        with self.lock:
            self.blocks.append(pcm)

    def samples(self) -> np.ndarray:
        with self.lock:
            return np.frombuffer(b"".join(self.blocks), np.int16)


# ---------------------------------------------------------------- FileIO


@pytest.mark.parametrize("rate,stereo", [(48000, True), (16000, False)])
def test_file_input_is_delivered_in_order_in_real_time_then_silence(tmp_path: Path, rate: int, stereo: bool) -> None:
    n = int(0.5 * rate) + 123  # a partial last block
    left = ramp(n)
    data = np.stack([left, left // 2], axis=1) if stereo else left
    path = write_wav(tmp_path / "in.wav", data, rate)
    expected, file_rate = read_wav(path)
    assert file_rate == rate
    io = FileIO(path, None)
    assert io.input_rate == rate
    got = Collector()
    t0 = time.monotonic()
    io.start(got)
    try:
        assert io.input_finished.wait(10)
        elapsed = time.monotonic() - t0
        wait_until(lambda: len(got.samples()) >= n + 5 * rate // 50)  # the open microphone after the file
    finally:
        io.close()
    assert elapsed >= 0.8 * n / rate
    block = rate // 50
    assert all(len(b) == 2 * block for b in got.blocks[: n // block])
    samples = got.samples()
    assert np.array_equal(samples[:n], expected)
    assert not samples[n:].any()
    if stereo:
        assert np.array_equal(expected, ((left.astype(np.int32) + left // 2) / 2).astype(np.int16))


def test_file_input_without_realtime_is_fast_and_can_stop_at_the_end(tmp_path: Path) -> None:
    rate = 16000
    path = write_wav(tmp_path / "in.wav", ramp(3 * rate), rate)
    io = FileIO(path, None, realtime=False, then_silence=False)
    got = Collector()
    t0 = time.monotonic()
    io.start(got)
    assert io.input_finished.wait(10)
    elapsed = time.monotonic() - t0
    io.close()
    assert elapsed < 1.0  # 3 s of audio
    assert np.array_equal(got.samples(), ramp(3 * rate))


def test_file_output_is_the_speakers_timeline(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "in.wav", np.zeros(1600, np.int16), 16000)
    out = tmp_path / "out.wav"
    before = set(threading.enumerate())
    io = FileIO(path, out, output_rate=24000)
    io.start(lambda pcm: None)
    tone = ramp(int(0.3 * 24000))
    try:
        io.play(tone[:3000].tobytes())
        io.play(tone[3000:].tobytes())
        wait_until(lambda: io.played_samples == len(tone))
        recent = io.recent_playback(2.0)
        assert len(recent) == 48000
        assert np.array_equal(recent[np.flatnonzero(recent)], tone)
        wait_until(lambda: not io.recent_playback(0.04).any())  # the speaker goes on, silent
    finally:
        io.close()
        io.close()  # idempotent
    assert set(threading.enumerate()) == before
    written, rate = read_wav(out)
    assert rate == 24000
    nonzero = np.flatnonzero(written)
    assert np.array_equal(written[nonzero[0]:nonzero[-1] + 1], tone)
    assert len(written) - nonzero[-1] > 960  # silence after what was played is part of the timeline
    with wave.open(str(out)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2


def test_flush_drops_what_is_queued(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "in.wav", np.zeros(1600, np.int16), 16000)
    out = tmp_path / "out.wav"
    io = FileIO(path, out, output_rate=16000)
    io.start(lambda pcm: None)
    speech = ramp(2 * 16000)
    io.play(speech.tobytes())
    wait_until(lambda: io.played_samples >= 3200)
    dropped = io.flush()
    assert io.queued_samples == 0
    io.close()
    assert dropped > 0
    assert io.played_samples + dropped == len(speech)
    assert io.played_samples < len(speech) // 2
    written, _ = read_wav(out)
    assert np.count_nonzero(written) == io.played_samples
    assert np.array_equal(written[np.flatnonzero(written)], speech[:io.played_samples])


def test_close_joins_threads_even_before_start_and_from_the_callback(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "in.wav", ramp(16000), 16000)
    before = set(threading.enumerate())
    FileIO(path, tmp_path / "never.wav").close()
    assert read_wav(tmp_path / "never.wav")[0].size == 0
    io = FileIO(path, None, realtime=False)
    closed = threading.Event()

    def close_from_reader(pcm: bytes) -> None:
        io.close()
        closed.set()

    io.start(close_from_reader)
    assert closed.wait(10)
    io.close()
    wait_until(lambda: set(threading.enumerate()) == before)
    with pytest.raises(RuntimeError):
        io.start(lambda pcm: None)


def test_unreadable_input_wav_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav")
    with pytest.raises(AudioDeviceError, match="bad.wav"):
        FileIO(bad, None)


def test_playback_buffer_pull_across_chunks_history_and_underruns() -> None:
    buf = PlaybackBuffer(1000, history_s=0.05)  # 50 samples of history
    buf.put(ramp(30).tobytes())
    buf.put(ramp(100)[30:45].tobytes())
    out = np.full(20, 7, np.int16)
    assert buf.pull(out) == 20 and np.array_equal(out, ramp(20))
    assert buf.pull(out) == 20 and np.array_equal(out, ramp(40)[20:])
    assert buf.underruns == 0
    assert buf.pull(out) == 5 and np.array_equal(out[:5], ramp(45)[40:]) and not out[5:].any()
    assert buf.underruns == 1 and buf.played_samples == 45 and buf.queued_samples == 0
    assert buf.pull(out) == 0 and buf.underruns == 1  # idle silence is not an underrun
    history = buf.recent(1.0)
    assert len(history) == 50
    assert np.array_equal(history, np.concatenate([ramp(45)[30:], np.zeros(35, np.int16)]))  # timeline: 80
    assert np.array_equal(buf.recent(0.01), np.zeros(10, np.int16))
    with pytest.raises(ValueError):
        buf.put(b"\x01\x02\x03")


# ---------------------------------------------------------------- sounddevice, faked


class FakePortAudioError(Exception):
    pass


def fake_device(index: int, name: str, inputs: int, outputs: int, rate: float = 48000.0) -> dict[str, Any]:
    return {"index": index, "name": name, "max_input_channels": inputs, "max_output_channels": outputs,
            "default_samplerate": rate, "hostapi": 0}


class FakeSoundDevice:
    """The bits of the sounddevice module that audio_io uses; streams keep their callbacks for the test."""

    PortAudioError = FakePortAudioError

    def __init__(self, devices: list[dict[str, Any]], default: tuple[int, int] = (0, 1),
                 fail_query: bool = False, stereo_only: tuple[int, ...] = (), broken: tuple[int, ...] = ()) -> None:
        self.devices = devices
        self.default = SimpleNamespace(device=list(default))
        self.fail_query = fail_query
        self.streams: list[Any] = []
        sd = self

        class Stream:
            def __init__(self, samplerate: int, blocksize: int, device: int, channels: int, dtype: str,
                         callback: Callable) -> None:
                if device in broken:
                    raise FakePortAudioError("Error opening stream: Device unavailable [PaErrorCode -9985]")
                if device in stereo_only and channels != 2:
                    raise FakePortAudioError("Invalid number of channels [PaErrorCode -9998]")
                self.samplerate, self.blocksize, self.device = samplerate, blocksize, device
                self.channels, self.dtype, self.callback = channels, dtype, callback
                self.started = self.closed = False
                sd.streams.append(self)

            def start(self) -> None:
                self.started = True

            def stop(self) -> None:
                self.started = False

            def close(self) -> None:
                self.closed = True

        self.RawInputStream = type("RawInputStream", (Stream,), {})
        self.RawOutputStream = type("RawOutputStream", (Stream,), {})

    def query_devices(self) -> list[dict[str, Any]]:
        if self.fail_query:
            raise FakePortAudioError("Error querying host API -9999")
        return self.devices

    def stream(self, kind: str) -> Any:
        return next(s for s in self.streams if type(s).__name__ == kind)


LAPTOP = [
    fake_device(0, "HDA Intel PCH: ALC257 Analog (hw:0,0)", 2, 2, 44100.0),
    fake_device(1, "USB Headset Microphone", 1, 0, 16000.0),
    fake_device(2, "HDMI 0", 0, 8, 48000.0),
    fake_device(3, "default", 32, 32, 48000.0),
]


def test_list_and_format_devices() -> None:
    sd = FakeSoundDevice(LAPTOP, default=(3, 2))
    devices = list_devices(sd)
    assert [d.name for d in devices] == [d["name"] for d in LAPTOP]
    assert [d.index for d in devices if d.is_default_input] == [3]
    assert [d.index for d in devices if d.is_default_output] == [2]
    table = format_devices(devices)
    assert "USB Headset Microphone" in table and "HDMI 0" in table and "16000" in table
    assert "default input" in table
    assert "No sound devices" in format_devices([])


def test_find_device_by_default_index_and_name() -> None:
    sd = FakeSoundDevice(LAPTOP, default=(3, 2))
    assert find_device("", "input", sd) == 3
    assert find_device("", "output", sd) == 2
    assert find_device("1", "input", sd) == 1
    assert find_device("usb head", "input", sd) == 1
    assert find_device("hdmi", "output", sd) == 2
    with pytest.raises(AudioDeviceError, match="no input channels"):
        find_device("2", "input", sd)
    with pytest.raises(AudioDeviceError, match="devices"):
        find_device("9", "output", sd)
    with pytest.raises(AudioDeviceError) as err:
        find_device("bluetooth", "input", sd)
    assert "USB Headset Microphone" in str(err.value) and "run.py devices" in str(err.value)
    assert "HDMI" not in str(err.value)  # only the candidates of that kind are listed
    assert find_device("", "input", FakeSoundDevice(LAPTOP, default=(-1, -1))) is None


def test_has_input_device_headless_and_portaudio_failure() -> None:
    assert has_input_device(FakeSoundDevice(LAPTOP))
    assert not has_input_device(FakeSoundDevice([], default=(-1, -1)))
    assert not has_input_device(FakeSoundDevice([fake_device(0, "HDMI", 0, 2)], default=(-1, 0)))
    assert not has_input_device(FakeSoundDevice(LAPTOP, fail_query=True))
    with pytest.raises(AudioDeviceError, match="could not query"):
        list_devices(FakeSoundDevice(LAPTOP, fail_query=True))


def test_sounddevice_io_capture_and_playback_through_callbacks() -> None:
    sd = FakeSoundDevice(LAPTOP, default=(1, 2))
    io = SoundDeviceIO(sd_module=sd)
    assert (io.input_rate, io.output_rate) == (16000, 48000)
    got = Collector()
    io.start(got)
    mic, speaker = sd.stream("RawInputStream"), sd.stream("RawOutputStream")
    assert mic.started and speaker.started
    assert (mic.device, mic.channels, mic.dtype, mic.blocksize) == (1, 1, "int16", 320)
    assert (speaker.device, speaker.channels, speaker.blocksize) == (2, 1, 960)

    captured = ramp(320)
    mic.callback(bytearray(captured.tobytes()), 320, None, 0)
    assert np.array_equal(got.samples(), captured)

    sound = ramp(1500)
    io.play(sound.tobytes())
    out = bytearray(960 * 2)
    speaker.callback(out, 960, None, 0)
    assert np.array_equal(np.frombuffer(out, np.int16), sound[:960])
    speaker.callback(out, 960, None, 0)
    played = np.frombuffer(out, np.int16)
    assert np.array_equal(played[:540], sound[960:]) and not played[540:].any()  # silence on underrun
    assert io.played_samples == 1500 and io.underruns == 1
    assert np.array_equal(io.recent_playback(0.04)[:1500], sound)

    io.play(sound.tobytes())
    assert io.flush() == 1500
    speaker.callback(out, 960, None, 0)
    assert not np.frombuffer(out, np.int16).any() and io.played_samples == 1500
    io.close()
    io.close()
    assert mic.closed and speaker.closed and not mic.started


def test_sounddevice_io_stereo_only_devices_are_mixed() -> None:
    sd = FakeSoundDevice(LAPTOP, stereo_only=(0,))
    io = SoundDeviceIO("alc257", "ALC257", sd_module=sd)
    got = Collector()
    io.start(got)
    mic, speaker = sd.stream("RawInputStream"), sd.stream("RawOutputStream")
    assert mic.channels == 2 and speaker.channels == 2 and io.input_rate == 44100
    left, right = ramp(882), np.full(882, -100, np.int16)
    mic.callback(bytearray(np.stack([left, right], axis=1).tobytes()), 882, None, 0)
    assert np.array_equal(got.samples(), ((left.astype(np.int32) + right) >> 1).astype(np.int16))
    io.play(ramp(882).tobytes())
    out = bytearray(882 * 4)
    speaker.callback(out, 882, None, 0)
    frames = np.frombuffer(out, np.int16).reshape(-1, 2)
    assert np.array_equal(frames[:, 0], ramp(882)) and np.array_equal(frames[:, 1], ramp(882))
    io.close()


def test_sounddevice_io_errors_name_the_device_and_the_fix() -> None:
    with pytest.raises(AudioDeviceError, match="no default input device.*run.py devices"):
        SoundDeviceIO(sd_module=FakeSoundDevice([fake_device(0, "HDMI", 0, 2)], default=(-1, 0)))
    with pytest.raises(AudioDeviceError, match="could not query"):
        SoundDeviceIO(sd_module=FakeSoundDevice(LAPTOP, fail_query=True))
    sd = FakeSoundDevice(LAPTOP, default=(1, 2), broken=(2,))
    io = SoundDeviceIO(sd_module=sd)
    with pytest.raises(AudioDeviceError) as err:
        io.start(lambda pcm: None)
    message = str(err.value)
    assert "output device 2 (HDMI 0)" in message and "Device unavailable" in message and "run.py devices" in message
    assert sd.stream("RawInputStream").closed  # the half that did open is not left running


def test_consumer_errors_do_not_kill_the_input_stream() -> None:
    sd = FakeSoundDevice(LAPTOP, default=(1, 2))
    io = SoundDeviceIO(sd_module=sd)

    def broken(pcm: bytes) -> None:
        raise RuntimeError("consumer bug")

    io.start(broken)
    sd.stream("RawInputStream").callback(bytearray(640), 320, None, 0)
    assert io.callback_errors == 1
    io.close()
