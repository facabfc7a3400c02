"""The browser page without a browser: its files, ids and CSP rules, and its audio code run under Node.

The worklets and protocol.js are free of DOM on purpose: Node runs them with a stand-in
AudioWorkletProcessor, and numpy checks what comes out (resampler accuracy, anti-aliasing,
block-boundary continuity, jitter buffer, flush, position reports, byte layouts against
voicechat/server/protocol.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import voicechat
from voicechat.core.events import AudioChunk
from voicechat.server.protocol import (
    CLIENT_AUDIO_HEADER,
    MAX_TEXT_CHARS,
    decode_server_audio,
    encode_event,
    parse_audio,
    parse_text,
)

WEB = Path(voicechat.__file__).resolve().parent / "web"
REQUIRED_IDS = {
    "start", "status", "state", "conversation", "level", "mute", "ptt", "text-input", "send", "clear",
    "voice", "speed", "latency", "playback", "error",
}
IMPORT = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"](\.{1,2}/[^'"]+)['"]""")
STATIC_LITERAL = re.compile(r"""['"`](/static/[^'"`]+)['"`]""")


class _Page(HTMLParser):
    """Ids, local references and CSP-relevant constructs of index.html."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.refs: list[str] = []
        self.inline_scripts = 0
        self.style_attrs: list[str] = []
        self.handlers: list[str] = []
        self._in_script_without_src = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.append(str(values["id"]))
        for name in ("src", "href"):
            if values.get(name):
                self.refs.append(str(values[name]))
        if "style" in values:
            self.style_attrs.append(tag)
        self.handlers += [name for name in values if name.startswith("on")]
        self._in_script_without_src = tag == "script" and not values.get("src")

    def handle_data(self, data: str) -> None:
        if self._in_script_without_src and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script_without_src = False


def _page() -> _Page:
    page = _Page()
    page.feed((WEB / "index.html").read_text(encoding="utf-8"))
    return page


def _static_path(ref: str) -> Path:
    return WEB / ref[len("/static/"):]


# -- static checks ---------------------------------------------------------------------------------
def test_page_references_only_existing_local_files() -> None:
    refs = _page().refs
    assert "/static/app.js" in refs and "/static/style.css" in refs
    for ref in refs:
        if ref.startswith("data:"):
            continue
        assert ref.startswith("/static/"), f"{ref}: the page loads nothing from elsewhere (no CDN, no fonts)"
        assert _static_path(ref).is_file(), f"{ref} is referenced by index.html but missing in {WEB}"


def test_module_imports_and_worklet_paths_resolve() -> None:
    scripts = sorted(WEB.glob("*.js"))
    assert {p.name for p in scripts} >= {"app.js", "capture-worklet.js", "playback-worklet.js"}
    reached = {"app.js"}
    for script in scripts:
        source = script.read_text(encoding="utf-8")
        for target in IMPORT.findall(source):
            path = (script.parent / target).resolve()
            assert path.is_file(), f"{script.name} imports {target}, which does not exist"
            reached.add(path.name)
        for ref in STATIC_LITERAL.findall(source):
            assert _static_path(ref).is_file(), f"{script.name} loads {ref}, which does not exist"
            reached.add(_static_path(ref).name)
    unused = {p.name for p in scripts} - reached
    assert not unused, f"scripts nobody loads: {sorted(unused)}"


def test_page_has_the_ids_tests_and_scripts_rely_on() -> None:
    ids = _page().ids
    assert REQUIRED_IDS <= set(ids), f"missing ids: {sorted(REQUIRED_IDS - set(ids))}"
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates, f"duplicate ids: {sorted(duplicates)}"
    used = set()
    for script in WEB.glob("*.js"):
        used |= set(re.findall(r"""\$\(\s*['"]([\w-]+)['"]\s*\)""", script.read_text(encoding="utf-8")))
    assert used <= set(ids), f"scripts look up ids the page lacks: {sorted(used - set(ids))}"


def test_the_microphone_keeps_the_browsers_echo_cancellation() -> None:
    """Browser sessions rely on the browser's own echo canceller (the local one is for the terminal's
    microphone): getUserMedia must ask for it, with noise suppression and automatic gain control."""
    audio = (WEB / "audio.js").read_text(encoding="utf-8")
    constraints = re.search(r"MIC_CONSTRAINTS\s*=\s*\{\s*audio:\s*\{([^}]*)\}", audio)
    assert constraints, "audio.js: MIC_CONSTRAINTS = { audio: { ... } } not found"
    asked = dict(re.findall(r"(\w+)\s*:\s*(\w+)", constraints.group(1)))
    for name in ("echoCancellation", "noiseSuppression", "autoGainControl"):
        assert asked.get(name) == "true", f"getUserMedia does not ask for {name}"
    assert "getUserMedia(MIC_CONSTRAINTS)" in audio


def test_page_obeys_the_servers_content_security_policy() -> None:
    """script-src/style-src 'self': no inline scripts, style attributes or on* handlers."""
    page = _page()
    assert page.inline_scripts == 0
    assert page.style_attrs == []
    assert page.handlers == []
    for path in WEB.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), f"{path.name} refers to a remote URL"
        assert "innerHTML" not in text, f"{path.name}: server and model text must go in as text"
        assert "setAttribute('style'" not in text and "eval(" not in text


def test_modules_stay_small() -> None:
    for path in WEB.glob("*.js"):
        lines = path.read_text(encoding="utf-8").count("\n")
        assert lines <= 400, f"{path.name} has {lines} lines; split it"


# -- Node harnesses ----------------------------------------------------------------------------------
CAPTURE_HARNESS = r"""
import { readFileSync } from 'node:fs';
const cfg = JSON.parse(readFileSync(0, 'utf8'));
const posted = [];
let Processor = null;
globalThis.sampleRate = cfg.rate;
globalThis.AudioWorkletProcessor = class { constructor() { this.port = { postMessage: (m) => posted.push(m) }; } };
globalThis.registerProcessor = (name, cls) => { if (name === 'capture-processor') Processor = cls; };
await import('./capture-worklet.mjs');
const proc = new Processor({ processorOptions: {} });
const total = Math.round(cfg.seconds * cfg.rate);
const sizes = cfg.sizes;
let s = 0, b = 0;
while (s < total) {
  const n = Math.min(sizes[b++ % sizes.length], total - s);
  const left = new Float32Array(n);
  for (let i = 0; i < n; i++) left[i] = cfg.amp * Math.sin(2 * Math.PI * cfg.freq * (s + i) / cfg.rate);
  proc.process([cfg.stereo ? [left, left.slice()] : [left]], [[new Float32Array(n)]], {});
  s += n;
}
const frames = posted.filter((m) => m.type === 'frame');
process.stdout.write(JSON.stringify({
  input: total,
  lengths: frames.map((m) => m.pcm.length),
  rms: frames.map((m) => m.rms),
  pcm: frames.flatMap((m) => Array.from(m.pcm)),
}));
"""

PLAYBACK_HARNESS = r"""
import { readFileSync } from 'node:fs';
const cfg = JSON.parse(readFileSync(0, 'utf8'));
const posted = [];
let Processor = null;
globalThis.sampleRate = cfg.rate;
globalThis.AudioWorkletProcessor = class { constructor() { this.port = { postMessage: (m) => posted.push(m) }; } };
globalThis.registerProcessor = (name, cls) => { if (name === 'playback-processor') Processor = cls; };
await import('./playback-worklet.mjs');
const proc = new Processor({ processorOptions: cfg.options || {} });
const out = [];
const events = [];
for (const step of cfg.steps) {
  if (step.process) {
    for (let q = 0; q < step.process; q++) {
      const channels = [new Float32Array(128), new Float32Array(128)];
      proc.process([], [channels], {});
      for (let i = 0; i < 128; i++) {
        if (channels[0][i] !== channels[1][i]) throw new Error('channels differ');
        out.push(Math.round(channels[0][i] * 32768));
      }
      while (posted.length) events.push({ at: out.length, ...posted.shift() });
    }
  } else {
    const msg = { ...step.msg };
    if (msg.type === 'chunk') {  // sample i of a chunk is (startSample + i) % 30000 + 1: order is checkable
      msg.pcm = new Int16Array(msg.n);
      for (let i = 0; i < msg.n; i++) msg.pcm[i] = (msg.startSample + i) % 30000 + 1;
      delete msg.n;
    }
    events.push({ at: out.length, sent: step.msg.type });
    proc.port.onmessage({ data: msg });
  }
  while (posted.length) events.push({ at: out.length, ...posted.shift() });
}
process.stdout.write(JSON.stringify({ out, events }));
"""

PROTOCOL_HARNESS = r"""
import { readFileSync } from 'node:fs';
import * as p from './protocol.mjs';
import { extractToken } from './token.mjs';
const cfg = JSON.parse(readFileSync(0, 'utf8'));
const frame = p.encodeClientAudio(cfg.seq, BigInt(cfg.captured), Int16Array.from(cfg.pcm));
const server = p.decodeServerAudio(new Uint8Array(Buffer.from(cfg.server, 'hex')).buffer);
const seq = [0, 0.5, 0.99];
const delays = {};
for (const code of [1006, 1001, 1013]) {
  delays[code] = seq.map((r) => Array.from({ length: 12 }, (_, a) => p.reconnectDelay(a, code, () => r)));
}
process.stdout.write(JSON.stringify({
  client: Buffer.from(frame).toString('hex'),
  server: { ...server, pcm: Array.from(server.pcm) },
  notAudio: p.decodeServerAudio(new Uint8Array([1, 1, 0, 0]).buffer),
  hello: p.messages.hello('tok', null, p.chooseOutputRate(44100)),
  oddRate: p.chooseOutputRate(96000),
  settings: p.messages.settings({ voice: 'en-gb', speed: 9 }),
  playback: p.messages.playback(3, 1234.7, true),
  others: [p.messages.mute(1), p.messages.text('hi'), p.messages.ping(12.5), p.messages.clearHistory(),
           p.messages.playback(0, 0.4, 0), p.messages.settings({ voice: 'x'.repeat(200) })],
  maxTextChars: p.MAX_TEXT_CHARS,
  delays,
  reconnect: [[1008, 'unauthorized', false], [1008, 'hello_timeout', false], [1001, null, false],
              [1006, null, true], [1000, null, false], [1013, 'server_full', false]]
    .map((a) => p.shouldReconnect(...a)),
  tokens: cfg.urls.map(extractToken),
  latency: [p.latencyParts({ voice_to_voice: 612.4, endpointing: 215.2, stt: 0 },
                           { silence_ms: 215, audio: null, words: 0.764 }),
            p.latencyParts({ voice_to_voice: 900, endpointing: 600 }, null)],
}));
"""


CONNECTION_HARNESS = r"""
import { Connection } from './connection.mjs';
const sockets = [];
class FakeSocket {
  static OPEN = 1;
  constructor(url) { this.url = url; this.sent = []; this.readyState = 0; sockets.push(this); }
  send(data) { this.sent.push(JSON.parse(data)); }
  close(code) { this.closedWith = code; }
}
globalThis.WebSocket = FakeSocket;
const timers = [];
globalThis.setTimeout = (fn, ms) => timers.push({ fn, ms, live: true });
globalThis.clearTimeout = (id) => { if (id) timers[id - 1].live = false; };
globalThis.setInterval = () => 1;
globalThis.clearInterval = () => undefined;
const log = [];
const conn = new Connection('ws://h/ws', {
  hello: () => ({ type: 'hello', token: 't' }),
  onStatus: (status) => log.push(status),
  onMessage: () => undefined,
  onAudio: () => undefined,
  onUnauthorized: () => log.push('ASK TOKEN'),
});
const last = () => sockets[sockets.length - 1];
const open = () => { last().readyState = 1; last().onopen(); };
const recv = (msg) => last().onmessage({ data: JSON.stringify(msg) });
const close = (code) => { last().readyState = 3; last().onclose({ code, reason: '' }); };
const wait = () => {  // the pending reconnect timer: its delay, after running it
  const live = timers.filter((t) => t.live);
  if (live.length !== 1) throw new Error(`${live.length} timers pending`);
  live[0].live = false;
  live[0].fn();
  return live[0].ms;
};
const session = { type: 'session', session_id: 's' };
const steps = {};
conn.open(); open(); recv(session);
steps.first = { log: log.splice(0), sent: last().sent.map((m) => m.type) };
close(1006); steps.dropped = { log: log.splice(0), delay: wait(), sockets: sockets.length };
open(); recv(session); log.splice(0);
recv({ type: 'shutdown', reason: 'bye' }); close(1001); const d1 = wait(); close(1006); const d2 = wait();
open(); recv(session);
steps.restart = { log: log.splice(0), delays: [d1, d2] };
recv({ type: 'error', code: 'server_full' }); close(1013);
steps.full = { log: log.splice(0), delay: wait() };
open(); recv({ type: 'error', code: 'unauthorized' }); close(1008);
steps.unauthorized = { log: log.splice(0), pending: timers.filter((t) => t.live).length };
conn.open(); open(); recv(session); log.splice(0);
conn.close(); close(1000);
steps.stopped = { log: log.splice(0), code: sockets[sockets.length - 1].closedWith,
                  pending: timers.filter((t) => t.live).length, sendAfter: conn.send({ type: 'ping' }) };
conn.open(); open(); recv(session); log.splice(0); close(1000);
steps.ended = { log: log.splice(0), pending: timers.filter((t) => t.live).length };
process.stdout.write(JSON.stringify(steps));
"""


@pytest.fixture
def node(tmp_path: Path):
    """Runs a harness next to .mjs copies of the page's scripts; returns its JSON output."""
    executable = shutil.which("node")
    if executable is None:
        pytest.skip("node is not on PATH: the worklet and protocol checks run the page's JavaScript under Node")
    for script in WEB.glob("*.js"):
        source = re.sub(r"""(['"]\./[\w-]+)\.js(['"])""", r"\1.mjs\2", script.read_text(encoding="utf-8"))
        (tmp_path / f"{script.stem}.mjs").write_text(source, encoding="utf-8")

    def run(harness: str, config: dict) -> dict:
        path = tmp_path / "harness.mjs"
        path.write_text(harness, encoding="utf-8")
        done = subprocess.run([executable, str(path)], input=json.dumps(config), capture_output=True, text=True,
                              timeout=90, cwd=tmp_path, check=False)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    return run


def _capture(node, rate: int, freq: float, seconds: float = 1.0, sizes=(128,), stereo: bool = False) -> dict:
    return node(CAPTURE_HARNESS, {"rate": rate, "freq": freq, "amp": 0.5, "seconds": seconds,
                                  "sizes": list(sizes), "stereo": stereo})


def _fit_sine(y: np.ndarray, freq: float, skip: int) -> tuple[float, np.ndarray]:
    """Amplitude of the best-fitting sine at `freq` (16 kHz) and the residual, from sample `skip` on."""
    n = np.arange(len(y))
    basis = np.stack([np.sin(2 * np.pi * freq * n / 16000), np.cos(2 * np.pi * freq * n / 16000)], axis=1)
    coef, *_ = np.linalg.lstsq(basis[skip:], y[skip:], rcond=None)
    return float(np.hypot(*coef)), (y - basis @ coef)[skip:]


@pytest.mark.parametrize("rate", [48000, 44100, 96000, 22050, 16000, 8000])
def test_capture_resamples_a_tone_to_16k_without_clicks(node, rate: int) -> None:
    result = _capture(node, rate, 440.0)
    assert set(result["lengths"]) == {320}, "frames are 20 ms of 16 kHz"
    y = np.asarray(result["pcm"], dtype=float) / 32767
    expected = result["input"] * 16000 / rate
    # Whole frames only, behind by at most one frame plus the filter's ~2 ms look-ahead.
    assert expected - 320 - 40 <= len(y) <= expected
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y)), 16 * len(y)))
    assert abs(np.argmax(spectrum) * 16000 / (16 * len(y)) - 440) <= 10
    skip = 160  # the first 10 ms hold the filter's onset on the tone's abrupt start
    amplitude, residual = _fit_sine(y, 440.0, skip)
    assert abs(amplitude - 0.5) < 0.005, "the pass band keeps the level"
    # A click at a block boundary would stand out of a clean sine: nothing does, down to -66 dB.
    assert np.abs(residual).max() < 5e-4
    jumps = np.abs(np.diff(y[skip:]))
    assert jumps.max() <= 0.5 * 2 * np.pi * 440 / 16000 * 1.01 + 2 / 32767
    rms = np.asarray(result["rms"])
    assert np.allclose(rms[1:], 0.5 / np.sqrt(2), rtol=0.02), "each frame carries its RMS for the meter"


@pytest.mark.parametrize("rate", [48000, 44100, 96000])
def test_capture_filters_out_what_would_alias(node, rate: int) -> None:
    """12 kHz cannot exist at 16 kHz; unfiltered it would fold to 4 kHz. Required >= 30 dB; the design gives ~80."""
    y = np.asarray(_capture(node, rate, 12000.0)["pcm"], dtype=float)[160:] / 32767
    in_rms = 0.5 / np.sqrt(2)
    out_rms = max(float(np.sqrt(np.mean(y**2))), 1e-9)
    assert 20 * np.log10(in_rms / out_rms) >= 60


@pytest.mark.parametrize("rate", [48000, 44100])
def test_capture_keeps_the_speech_band(node, rate: int) -> None:
    y = np.asarray(_capture(node, rate, 3000.0)["pcm"], dtype=float) / 32767
    amplitude, _ = _fit_sine(y, 3000.0, 160)
    assert abs(20 * np.log10(amplitude / 0.5)) < 0.1


def test_capture_output_does_not_depend_on_block_sizes(node) -> None:
    """State carries across calls exactly: any split of the input gives the same samples, bit for bit."""
    regular = _capture(node, 44100, 440.0, seconds=0.5)
    ragged = _capture(node, 44100, 440.0, seconds=0.5, sizes=(1, 128, 7, 300, 64, 129, 2, 511))
    assert regular["pcm"] == ragged["pcm"]


def test_capture_mixes_stereo_to_mono_and_passes_16k_through(node) -> None:
    result = _capture(node, 16000, 440.0, seconds=0.2, stereo=True)
    n = np.arange(len(result["pcm"]))
    x = np.clip(0.5 * np.sin(2 * np.pi * 440 * n / 16000), -1, 1)
    ideal = np.where(x < 0, np.round(x * 32768), np.round(x * 32767))
    assert np.abs(np.asarray(result["pcm"]) - ideal).max() <= 1


# -- playback worklet ---------------------------------------------------------------------------------
def _chunk(generation: int, start: int, n: int, rate: int = 48000) -> dict:
    return {"msg": {"type": "chunk", "generation": generation, "sentence": 0, "startSample": start,
                    "sampleRate": rate, "n": n}}


def _playback(node, steps: list[dict], rate: int = 48000, prebuffer_ms: float = 80) -> tuple[np.ndarray, list]:
    result = node(PLAYBACK_HARNESS, {"rate": rate, "options": {"prebufferMs": prebuffer_ms, "reportMs": 50},
                                     "steps": steps})
    return np.asarray(result["out"]), result["events"]


def _ramp(start: int, n: int) -> np.ndarray:
    return (np.arange(start, start + n) % 30000) + 1


def _of(events: list, kind: str) -> list:
    return [e for e in events if e.get("type") == kind]


def test_playback_waits_for_the_prebuffer_then_plays_in_order(node) -> None:
    out, events = _playback(node, [
        _chunk(1, 0, 1920), {"process": 5},             # 40 ms: below the 80 ms prebuffer
        _chunk(1, 1920, 2880), {"process": 45},         # 100 ms queued: plays, then runs dry
        {"msg": {"type": "done", "generation": 1}}, {"process": 1},
    ])
    assert not out[:640].any(), "silence until ~80 ms are buffered"
    assert np.array_equal(out[640:640 + 4800], _ramp(0, 4800)), "every sample once, in order, both channels"
    assert not out[640 + 4800:].any(), "silence on underrun"
    statuses = _of(events, "status")
    assert statuses[0]["playing"] and statuses[0]["generation"] == 1
    assert statuses[-1]["underruns"] == 1, "running dry before reply_done is one underrun"
    assert [(e["generation"], e["played"]) for e in _of(events, "finished")] == [(1, 4800)]
    played = [e["played"] for e in statuses if e["playing"]]
    assert played == sorted(played) and len(played) >= 3, "position reports while playing"


def test_playback_finishes_a_short_reply_without_waiting(node) -> None:
    out, events = _playback(node, [
        _chunk(3, 0, 480), {"msg": {"type": "done", "generation": 3}}, {"process": 6},
    ])
    assert np.array_equal(out[:480], _ramp(0, 480)), "reply_done starts playback below the prebuffer"
    assert [(e["generation"], e["played"]) for e in _of(events, "finished")] == [(3, 480)]
    assert _of(events, "status")[-1]["underruns"] == 0
    finished_at = _of(events, "finished")[0]["at"]
    assert finished_at == 512, "finished in the quantum that played the last sample"


def test_playback_flush_drops_older_generations_at_once(node) -> None:
    out, events = _playback(node, [
        _chunk(1, 0, 9600), {"process": 10},            # 200 ms queued: plays at once; 1280 samples of it
        {"msg": {"type": "flush", "generation": 2}}, {"process": 2},
        _chunk(1, 9600, 4800),                          # late audio of the flushed reply
        _chunk(2, 0, 4800), {"msg": {"type": "done", "generation": 2}}, {"process": 50},
    ])
    flush_at = next(e["at"] for e in events if e.get("sent") == "flush")
    assert flush_at == 1280 and np.array_equal(out[:1280], _ramp(0, 1280))
    assert not out[1280:1536].any(), "nothing of generation 1 after the flush"
    gen2 = out[1536:]
    assert np.array_equal(gen2[:4800], _ramp(0, 4800)) and not gen2[4800:].any()
    final = _of(events, "status")[-1]
    assert final["flushes"] == 1 and final["dropped"] == 1 and final["underruns"] == 0
    assert [(e["generation"], e["played"]) for e in _of(events, "finished")] == [(2, 4800)]


def test_playback_plays_generations_back_to_back_and_resets(node) -> None:
    out, events = _playback(node, [
        _chunk(1, 0, 4800), {"msg": {"type": "done", "generation": 1}},
        _chunk(2, 0, 4800), {"msg": {"type": "done", "generation": 2}}, {"process": 80},
        {"msg": {"type": "reset"}}, _chunk(0, 0, 960), {"msg": {"type": "done", "generation": 0}}, {"process": 10},
    ])
    assert [(e["generation"], e["played"]) for e in _of(events, "finished")] == [(1, 4800), (2, 4800), (0, 960)]
    heard = out[out != 0]
    assert np.array_equal(heard, np.concatenate([_ramp(0, 4800), _ramp(0, 4800), _ramp(0, 960)]))


def test_playback_resamples_another_rate_and_reports_source_samples(node) -> None:
    out, events = _playback(node, [
        _chunk(5, 0, 2400, rate=24000), {"msg": {"type": "done", "generation": 5}}, {"process": 45},
    ])
    src = _ramp(0, 2400)
    assert np.array_equal(out[0:4800:2], src), "48 kHz output hits every 24 kHz sample"
    assert np.allclose(out[1:4798:2], (src[:-1] + src[1:]) / 2, atol=1), "and interpolates between them"
    assert [(e["generation"], e["played"]) for e in _of(events, "finished")] == [(5, 2400)]


# -- protocol.js against voicechat/server/protocol.py -------------------------------------------------------
def test_protocol_js_matches_the_python_codec(node) -> None:
    pcm = [0, 1, -1, 32767, -32768, 1234]
    chunk = AudioChunk(pcm=np.asarray([5, -6, 7], dtype="<i2").tobytes(), sample_rate=24000, generation=7,
                       sentence_index=2, start_sample=48000)
    server_frame = encode_event(chunk)
    assert isinstance(server_frame, bytes)
    urls = ["https://h:8765/#token=a+b%2Fc", "https://h:8765/?token=q&x=1", "https://h:8765/#x=1&token=t", "http://h/"]
    result = node(PROTOCOL_HARNESS, {"seq": 4_000_000_000, "captured": 1_732_200_000_123_456, "pcm": pcm,
                                     "server": server_frame.hex(), "urls": urls})

    frame = parse_audio(bytes.fromhex(result["client"]))
    assert (frame.seq, frame.captured_at_us) == (4_000_000_000, 1_732_200_000_123_456)
    assert np.array_equal(np.frombuffer(frame.pcm, "<i2"), pcm)
    assert len(bytes.fromhex(result["client"])) == CLIENT_AUDIO_HEADER.size + 2 * len(pcm)

    ref = decode_server_audio(server_frame)
    got = result["server"]
    assert (got["generation"], got["sentence"], got["startSample"], got["sampleRate"]) == (
        ref.generation, ref.sentence_index, ref.start_sample, ref.sample_rate)
    assert got["pcm"] == [5, -6, 7]
    assert result["notAudio"] is None

    assert result["hello"] == {"type": "hello", "token": "tok", "resume": None, "input_sample_rate": 16000,
                               "output_sample_rate": 44100, "playback_reports": True}
    assert result["oddRate"] == 24000
    assert result["settings"] == {"type": "settings", "voice": "en-gb", "speed": 4}
    assert result["playback"] == {"type": "playback", "generation": 3, "played_samples": 1234, "finished": True}
    for message in (result["hello"], result["settings"], result["playback"], *result["others"]):
        parse_text(json.dumps(message))  # the page's messages pass the server's strict types
    assert result["maxTextChars"] == MAX_TEXT_CHARS

    for r, row in zip((0, 0.5, 0.99), result["delays"]["1006"], strict=True):
        base = [min(10000, 500 * 2**a) for a in range(12)]
        assert row == [round(b / 2 + r * b / 2) for b in base], "0.5 s doubling to 10 s, half of it jitter"
    assert max(max(row) for row in result["delays"]["1013"]) <= 60000
    assert min(result["delays"]["1013"][0]) >= 2500, "a full server is left alone longer"
    assert result["reconnect"] == [False, True, True, False, False, True]
    assert result["latency"] == [["voice→voice 612 ms", "end 215 ms (words 0.76)", "stt 0 ms"],
                                 ["voice→voice 900 ms", "end 600 ms"]]

    assert [t["token"] for t in result["tokens"]] == ["a+b/c", "q", "t", None]
    assert [t["cleanUrl"] for t in result["tokens"]] == [
        "https://h:8765/", "https://h:8765/?x=1", "https://h:8765/#x=1", "http://h/"]


def test_every_module_parses(node, tmp_path: Path) -> None:
    """The modules Node cannot run (they need a DOM) still have to be valid JavaScript."""
    for script in WEB.glob("*.js"):
        done = subprocess.run([shutil.which("node") or "node", "--check", str(tmp_path / f"{script.stem}.mjs")],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"{script.name}: {done.stderr}"


def test_connection_reconnects_resumes_and_knows_when_to_stop(node) -> None:
    steps = node(CONNECTION_HARNESS, {})
    assert steps["first"] == {"log": ["connecting", "connected"], "sent": ["hello", "ping"]}
    assert steps["dropped"]["log"] == ["reconnecting"] and 250 <= steps["dropped"]["delay"] <= 500
    assert steps["dropped"]["sockets"] == 2, "the retry opens a new socket (which sends hello with resume)"
    # A server shutdown (1001) says so until the server is back, through failed attempts in between.
    assert steps["restart"]["log"] == ["server restarting", "server restarting", "connected"]
    assert steps["restart"]["delays"][1] > 0
    assert steps["full"]["log"] == ["server full"] and steps["full"]["delay"] >= 2500
    assert steps["unauthorized"] == {"log": ["unauthorized", "ASK TOKEN"], "pending": 0}
    assert steps["stopped"] == {"log": ["disconnected"], "code": 1000, "pending": 0, "sendAfter": False}
    assert steps["ended"] == {"log": ["session ended"], "pending": 0}
