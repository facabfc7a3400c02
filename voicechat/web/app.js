// The page's wiring: token, Start/Stop, microphone frames to the server, server events to the view and the
// player, controls to control messages. Protocol bytes live in protocol.js, audio in audio.js, the socket
// in connection.js, the DOM in ui.js and conversation.js.

import { AudioEngine } from './audio.js';
import { Connection, socketUrl } from './connection.js';
import { ConversationView } from './conversation.js';
import {
  decodeServerAudio, encodeClientAudio, FALLBACK_OUTPUT_RATE, MAX_TEXT_CHARS, messages, nowMicros,
} from './protocol.js';
import { forgetToken, loadToken, saveToken } from './token.js';
import { $, bindPushToTalk, Indicators } from './ui.js';

const RESUME_KEY = 'voicechat.resume';
const PREBUFFER_MS = 80;
const REPORT_MS = 250; // playback position reports while playing
const MAX_SOCKET_BACKLOG = 256 * 1024; // bytes unsent: drop microphone frames rather than fall behind

const state = {
  connection: 'idle',
  turnState: 'idle',
  sessionId: null,
  started: false,
  muted: false,
  pushToTalk: false,
  outputRate: FALLBACK_OUTPUT_RATE,
  lastFlushGeneration: 0,
  settingsTouched: {},
  maxTextChars: MAX_TEXT_CHARS, // the server's limit, from its session message
};
const stats = {
  framesSent: 0, framesDropped: 0, audioFramesReceived: 0, audioFramesDropped: 0, flushes: 0,
  messagesReceived: 0, errors: 0, playing: false, playedSamples: 0, underruns: 0, rttMs: null,
};
let seq = 0;
let token = null;
let lastReportAt = 0;

const ui = new Indicators();
const view = new ConversationView($('conversation'));
const audio = new AudioEngine({
  onFrame: sendFrame,
  onPlaybackStatus: playbackStatus,
  onPlaybackFinished: playbackFinished,
  onContextState: (s) => {
    if (s === 'suspended' && state.started) ui.setStatus(state.connection, 'audio paused: tap anywhere to resume');
  },
  onMicEnded: () => ui.showError('The microphone stopped (unplugged or taken by another app). Press Stop, then Start.'),
});
const conn = new Connection(socketUrl(), {
  hello: () => messages.hello(token, readResume(), state.outputRate),
  onStatus: (status, detail) => {
    state.connection = status;
    ui.setStatus(status, detail);
    if (status !== 'connected') {
      ui.setRtt(null);
      state.turnState = state.started ? 'offline' : 'idle';
      ui.setState(state.turnState);
    }
  },
  onMessage: handleMessage,
  onAudio: handleAudio,
  onRtt: (ms) => {
    stats.rttMs = ms;
    ui.setRtt(ms);
  },
  onUnauthorized: () => {
    forgetToken();
    token = null;
    ui.askToken('The server refused this token. Enter the one it printed at start.');
  },
});

function readResume() {
  try {
    return sessionStorage.getItem(RESUME_KEY);
  } catch {
    return null;
  }
}

function storeResume(value) {
  try {
    if (value) sessionStorage.setItem(RESUME_KEY, value);
    else sessionStorage.removeItem(RESUME_KEY);
  } catch {
    /* no storage: a reload starts a new session */
  }
}

// -- microphone -> server -----------------------------------------------------------------------
function sendFrame(pcm, rms) {
  ui.setLevel(rms);
  if (!conn.ready || state.muted) return;
  if (conn.bufferedAmount > MAX_SOCKET_BACKLOG) {
    stats.framesDropped += 1;
    return;
  }
  if (conn.sendBinary(encodeClientAudio(seq, nowMicros(), pcm))) {
    seq = (seq + 1) >>> 0;
    stats.framesSent += 1;
  }
}

// -- server -> page -----------------------------------------------------------------------------
function handleAudio(buffer) {
  const frame = decodeServerAudio(buffer);
  if (!frame) return;
  stats.audioFramesReceived += 1;
  if (frame.generation < state.lastFlushGeneration || !audio.play(frame)) stats.audioFramesDropped += 1;
}

function handleMessage(msg) {
  stats.messagesReceived += 1;
  switch (msg.type) {
    case 'session':
      onSession(msg);
      break;
    case 'state_changed':
      state.turnState = msg.state;
      ui.setState(msg.state);
      break;
    case 'partial_transcript':
      view.partialTranscript(msg.generation, msg.text, msg.stable);
      break;
    case 'final_transcript':
      view.finalTranscript(msg.generation, msg.text);
      break;
    case 'assistant_text_delta':
      if (msg.generation >= state.lastFlushGeneration) view.assistantDelta(msg.generation, msg.text);
      break;
    case 'flush_playback':
      flush(msg.generation);
      break;
    case 'reply_done':
      if (msg.generation < state.lastFlushGeneration) break; // cut off: its bubble shows what streamed
      view.replyDone(msg.generation, msg.text);
      audio.replyDone(msg.generation);
      break;
    case 'turn_metrics': {
      const latency = msg.latency_ms || {};
      view.metrics(msg.generation, latency, msg.end_of_turn);
      ui.setLatency(latency.voice_to_voice);
      break;
    }
    case 'error':
      stats.errors += 1;
      ui.showError(`${msg.message || msg.code}${msg.stage && msg.stage !== 'protocol' ? ` (${msg.stage})` : ''}`);
      break;
    case 'shutdown':
      view.note(`The server is restarting${msg.reason ? ` (${msg.reason})` : ''}; reconnecting…`);
      break;
    default:
      break; // pong is handled by the connection; unknown types are ignored (newer server)
  }
}

function onSession(msg) {
  const sameSession = msg.resumed && msg.session_id === state.sessionId;
  if (!sameSession) {
    // A new session counts generations from scratch: forget the old one's flush mark and audio.
    state.lastFlushGeneration = 0;
    audio.reset();
  }
  if (!msg.resumed && state.sessionId && !(msg.history && msg.history.length)) {
    const why = msg.resume_error ? ` (${msg.resume_error})` : '';
    view.startOver(`A new conversation begins here: the server no longer knows the one above${why}.`);
  } else {
    view.redraw(msg.history);
  }
  state.sessionId = msg.session_id;
  state.maxTextChars = msg.max_text_chars || MAX_TEXT_CHARS;
  storeResume(msg.resume_token);
  seq = 0;
  state.turnState = msg.state;
  ui.setState(msg.state || 'listening');
  // The page's choices win over a fresh session's defaults; a resumed session already has them.
  if (msg.muted !== state.muted) conn.send(messages.mute(state.muted));
  const touched = state.settingsTouched;
  if (!msg.resumed && (touched.voice || touched.speed)) conn.send(messages.settings(touched));
  ui.setSettings({ voice: touched.voice || msg.voice, speed: touched.speed || msg.speed });
}

function flush(generation) {
  if (generation > state.lastFlushGeneration) state.lastFlushGeneration = generation;
  audio.flush(generation);
  view.interrupted(generation);
  stats.flushes += 1;
  showPlayback();
}

// -- playback reports -----------------------------------------------------------------------------
function playbackStatus(msg) {
  stats.playing = msg.playing;
  stats.playedSamples = msg.totalPlayed;
  stats.underruns = msg.underruns;
  showPlayback();
  if (!msg.playing || msg.generation < state.lastFlushGeneration || msg.generation < 0) return;
  const now = performance.now();
  if (now - lastReportAt >= REPORT_MS && conn.send(messages.playback(msg.generation, msg.played, false))) {
    lastReportAt = now;
  }
}

function playbackFinished(msg) {
  if (msg.generation < state.lastFlushGeneration) return;
  conn.send(messages.playback(msg.generation, msg.played, true));
  lastReportAt = performance.now();
}

function showPlayback() {
  ui.setPlayback({
    playing: stats.playing, flushes: stats.flushes, played: stats.playedSamples, underruns: stats.underruns,
  });
}

// -- controls -------------------------------------------------------------------------------------
function setMuted(muted) {
  state.muted = muted;
  ui.setMuted(muted, state.pushToTalk);
  conn.send(messages.mute(muted));
}

async function start() {
  if (!token) {
    ui.askToken('');
    return;
  }
  state.started = true;
  ui.setStarted(true, false);
  ui.clearError();
  try {
    const { micError } = await audio.start({ prebufferMs: PREBUFFER_MS }); // the gesture still counts here
    state.outputRate = audio.outputRate;
    if (micError) ui.showError(micError);
  } catch (err) {
    if (!state.started) return; // stopped meanwhile
    state.outputRate = FALLBACK_OUTPUT_RATE;
    ui.showError(`No audio: ${err.message || err}. Typed chat still works.`);
  }
  if (!state.started) return;
  ui.setStarted(true, audio.hasMic);
  conn.open();
}

function stop() {
  state.started = false;
  state.pushToTalk = false;
  conn.close();
  audio.stop();
  stats.playing = false;
  showPlayback();
  ui.setStarted(false, false);
  ui.setLevel(0);
}

function bindControls() {
  $('start').addEventListener('click', () => (state.started ? stop() : start()));
  $('mute').addEventListener('click', () => {
    state.pushToTalk = false;
    setMuted(!state.muted);
  });
  bindPushToTalk($('ptt'), () => {
    state.pushToTalk = true;
    setMuted(false);
  }, () => setMuted(true));
  $('text-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('text-input');
    // Code points, as the server counts them (slicing UTF-16 units could split a pair: invalid Unicode).
    const text = Array.from(input.value.trim()).slice(0, state.maxTextChars).join('');
    if (!text) return;
    if (conn.send(messages.text(text))) input.value = '';
    else ui.showError('Not connected: press Start first.');
  });
  $('clear').addEventListener('click', () => {
    view.clear();
    conn.send(messages.clearHistory());
  });
  $('voice').addEventListener('change', () => {
    const voice = $('voice').value.trim();
    if (!voice) return;
    state.settingsTouched.voice = voice;
    conn.send(messages.settings({ voice }));
  });
  $('speed').addEventListener('input', () => ui.showSpeed(Number($('speed').value), false));
  $('speed').addEventListener('change', () => {
    const speed = Number($('speed').value);
    state.settingsTouched.speed = speed;
    conn.send(messages.settings({ speed }));
  });
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const value = $('token-input').value.trim();
    if (!value) return;
    token = value;
    saveToken(value);
    ui.clearError();
    $('token-input').value = '';
    ui.hideTokenForm();
    if (state.started) conn.open();
    else start(); // the submit is a user gesture: audio may start
  });
  // Phones suspend audio and drop sockets in the background: resume on the next touch, retry when back.
  document.addEventListener('pointerdown', () => state.started && audio.resume(), { capture: true });
  window.addEventListener('online', () => conn.retryNow());
  document.addEventListener('visibilitychange', () => document.visibilityState === 'visible' && conn.retryNow());
}

function main() {
  token = loadToken();
  bindControls();
  ui.setStatus('idle', token ? 'press Start' : '');
  ui.setState('idle');
  ui.setLatency(null);
  ui.setMuted(false, false);
  ui.setStarted(false, false);
  showPlayback();
  if (!token) ui.askToken('Open the link the server printed, or paste its token here.');
}

window.voicechat = {
  state,
  stats: () => ({
    ...stats, sessionId: state.sessionId, lastFlushGeneration: state.lastFlushGeneration,
    reconnects: conn.reconnects, connection: state.connection, turnState: state.turnState,
  }),
};

main();
