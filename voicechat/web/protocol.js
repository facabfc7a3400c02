// Wire format of docs/protocol.md (voicechat/server/protocol.py is authoritative), without sockets or DOM,
// so it runs unchanged in the browser and under Node in tests/test_web_static.py.

export const PROTOCOL_VERSION = 1;
export const KIND_CLIENT_AUDIO = 1;
export const KIND_SERVER_AUDIO = 2;
export const CLIENT_HEADER_BYTES = 16;
export const SERVER_HEADER_BYTES = 20;
export const INPUT_SAMPLE_RATE = 16000;
export const FALLBACK_OUTPUT_RATE = 24000;
export const SAMPLE_RATES = [8000, 16000, 22050, 24000, 32000, 44100, 48000];
export const MAX_TEXT_CHARS = 2000; // limits.max_text_chars' default; the session message says the server's

export const CLOSE = { NORMAL: 1000, GOING_AWAY: 1001, POLICY: 1008, TOO_BIG: 1009, INTERNAL: 1011, TRY_LATER: 1013 };

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The rate the server should synthesize at: the AudioContext's own when the protocol allows it. */
export function chooseOutputRate(contextRate) {
  const rate = Math.round(contextRate);
  return SAMPLE_RATES.includes(rate) ? rate : FALLBACK_OUTPUT_RATE;
}

/** Microseconds since the epoch on the client clock, as the u64 the audio header wants. */
export function nowMicros(perf = globalThis.performance) {
  return BigInt(Math.round((perf.timeOrigin + perf.now()) * 1000));
}

/** One client audio frame: 16-byte header (kind, version, reserved, seq u32, capture µs u64) + PCM16 LE. */
export function encodeClientAudio(seq, captureMicros, pcm) {
  const buffer = new ArrayBuffer(CLIENT_HEADER_BYTES + pcm.length * 2);
  const view = new DataView(buffer);
  view.setUint8(0, KIND_CLIENT_AUDIO);
  view.setUint8(1, PROTOCOL_VERSION);
  view.setUint16(2, 0, true);
  view.setUint32(4, seq >>> 0, true);
  view.setBigUint64(8, BigInt.asUintN(64, BigInt(captureMicros)), true);
  if (LITTLE_ENDIAN) {
    new Int16Array(buffer, CLIENT_HEADER_BYTES, pcm.length).set(pcm);
  } else {
    for (let i = 0; i < pcm.length; i++) view.setInt16(CLIENT_HEADER_BYTES + 2 * i, pcm[i], true);
  }
  return buffer;
}

/** A server audio frame, or null when it is not one (wrong kind/version, short). pcm is an Int16Array. */
export function decodeServerAudio(buffer) {
  if (!(buffer instanceof ArrayBuffer) || buffer.byteLength < SERVER_HEADER_BYTES) return null;
  const view = new DataView(buffer);
  if (view.getUint8(0) !== KIND_SERVER_AUDIO || view.getUint8(1) !== PROTOCOL_VERSION) return null;
  const samples = (buffer.byteLength - SERVER_HEADER_BYTES) >> 1;
  let pcm;
  if (LITTLE_ENDIAN) {
    pcm = new Int16Array(buffer, SERVER_HEADER_BYTES, samples);
  } else {
    pcm = new Int16Array(samples);
    for (let i = 0; i < samples; i++) pcm[i] = view.getInt16(SERVER_HEADER_BYTES + 2 * i, true);
  }
  return {
    generation: view.getUint32(4, true),
    sentence: view.getUint32(8, true),
    startSample: view.getUint32(12, true),
    sampleRate: view.getUint32(16, true),
    pcm,
  };
}

// -- client -> server control messages (unknown fields are errors on the server: send only these) --
export const messages = {
  hello: (token, resume, outputRate) => ({
    type: 'hello', token, resume: resume || null, input_sample_rate: INPUT_SAMPLE_RATE,
    output_sample_rate: outputRate, playback_reports: true,
  }),
  text: (text) => ({ type: 'text', text }),
  mute: (muted) => ({ type: 'mute', muted: Boolean(muted) }),
  clearHistory: () => ({ type: 'clear_history' }),
  settings: (fields) => {
    const msg = { type: 'settings' };
    if (fields.voice) msg.voice = String(fields.voice).slice(0, 100);
    if (typeof fields.speed === 'number' && Number.isFinite(fields.speed)) {
      msg.speed = Math.min(4, Math.max(0.25, fields.speed));
    }
    return msg;
  },
  playback: (generation, playedSamples, finished) => ({
    type: 'playback', generation, played_samples: Math.max(0, Math.floor(playedSamples)), finished: Boolean(finished),
  }),
  ping: (t) => ({ type: 'ping', t }),
};

/**
 * Milliseconds to wait before reconnect attempt `attempt` (0-based) after close `code`.
 * 0.5 s doubling to 10 s; a full server (1013) waits from 5 s up to 60 s. "Equal jitter": half fixed, half
 * random, so a restarted server is not hit by every client at the same instant and never past the cap.
 */
export function reconnectDelay(attempt, code, random = Math.random) {
  const full = code === CLOSE.TRY_LATER;
  const base = full ? 5000 : 500;
  const cap = full ? 60000 : 10000;
  const delay = Math.min(cap, base * 2 ** Math.min(attempt, 20));
  return Math.round(delay / 2 + (random() * delay) / 2);
}

/**
 * Whether to reconnect after a close. Not after our own close, not when the token was refused (1008 after
 * `unauthorized`), and not after the server's normal close (1000: it ended the session, e.g. idle timeout;
 * reconnecting at once would only start a new idle session).
 */
export function shouldReconnect(code, lastErrorCode, userClosed) {
  if (userClosed || code === CLOSE.NORMAL) return false;
  if (code === CLOSE.POLICY && lastErrorCode === 'unauthorized') return false;
  return true;
}

/**
 * Latency line of a turn: the stages the server measured, in a fixed order, rounded to whole ms; the
 * end-of-turn stage says what the judges said where they were asked (turn_metrics.end_of_turn).
 */
export function latencyParts(latencyMs, endOfTurn) {
  const names = [
    ['voice_to_voice', 'voice→voice'], ['endpointing', 'end'], ['stt', 'stt'], ['llm_first_token', 'llm'],
    ['first_sentence', 'sentence'], ['tts_first_audio', 'tts'],
  ];
  const judged = [['words', 'words'], ['audio', 'sound']]
    .filter(([key]) => endOfTurn && typeof endOfTurn[key] === 'number')
    .map(([key, label]) => `${label} ${endOfTurn[key].toFixed(2)}`);
  const parts = [];
  for (const [key, label] of names) {
    const value = latencyMs ? latencyMs[key] : undefined;
    if (typeof value !== 'number' || !Number.isFinite(value)) continue;
    const why = key === 'endpointing' && judged.length ? ` (${judged.join(', ')})` : '';
    parts.push(`${label} ${Math.round(value)} ms${why}`);
  }
  return parts;
}
