// Indicators and controls of the page (ids are stable: the browser tests use them). No protocol here:
// app.js decides what to show, this module only shows it.

const STATE_LABELS = {
  idle: 'Not started',
  offline: 'Offline',
  listening: 'Listening',
  user_speaking: 'You are speaking',
  thinking: 'Thinking…',
  assistant_speaking: 'Speaking',
};

export const $ = (id) => document.getElementById(id);

export class Indicators {
  constructor() {
    this.levelValue = 0;
    this.levelTarget = 0;
    this.levelFrame = 0;
    this.muted = false;
    $('error-dismiss').addEventListener('click', () => this.clearError());
  }

  /** Connection state: the element's text is the state word (tests read it); details go beside it. */
  setStatus(status, detail) {
    const el = $('status');
    el.textContent = status;
    el.dataset.status = status;
    $('status-detail').textContent = detail || '';
  }

  setRtt(ms) {
    const el = $('rtt');
    el.textContent = ms === null ? '' : `${Math.round(ms)} ms`;
    el.dataset.ms = ms === null ? '' : String(Math.round(ms));
  }

  setState(state) {
    const el = $('state');
    el.dataset.state = state;
    el.textContent = STATE_LABELS[state] || state;
    document.body.dataset.state = state;
  }

  /** Microphone level from a frame's RMS (0..1): -60..0 dBFS across the meter, smoothed per animation frame. */
  setLevel(rms) {
    const db = 20 * Math.log10(Math.max(rms, 1e-6));
    this.levelTarget = Math.min(1, Math.max(0, (db + 60) / 60));
    if (!this.levelFrame) this.levelFrame = requestAnimationFrame(() => this._drawLevel());
  }

  _drawLevel() {
    this.levelFrame = 0;
    // Fast attack, slow release, like a VU meter.
    const t = this.levelTarget;
    this.levelValue = t > this.levelValue ? t : this.levelValue * 0.85 + t * 0.15;
    const el = $('level');
    const pct = Math.round(this.levelValue * 100);
    el.style.setProperty('--level', `${pct}%`);
    el.setAttribute('aria-valuenow', String(pct));
    el.dataset.level = String(pct);
    this.levelTarget *= 0.9;
    if (this.levelValue > 0.005) this.levelFrame = requestAnimationFrame(() => this._drawLevel());
  }

  setMuted(muted, pushToTalk) {
    this.muted = muted;
    const button = $('mute');
    button.setAttribute('aria-pressed', String(muted));
    button.textContent = muted ? 'Unmute' : 'Mute';
    $('level').classList.toggle('muted', muted);
    $('ptt').classList.toggle('active', Boolean(pushToTalk) && !muted);
    document.body.classList.toggle('muted', muted);
  }

  setStarted(started, hasMic) {
    const start = $('start');
    start.textContent = started ? 'Stop' : 'Start';
    start.setAttribute('aria-pressed', String(started));
    start.classList.toggle('primary', !started);
    for (const id of ['mute', 'ptt']) $(id).disabled = !started || !hasMic;
  }

  setLatency(ms) {
    const el = $('latency');
    const known = typeof ms === 'number' && Number.isFinite(ms);
    el.textContent = known ? `${Math.round(ms)} ms` : '–';
    el.dataset.ms = known ? String(Math.round(ms)) : '';
  }

  setPlayback({ playing, flushes, played, underruns }) {
    const el = $('playback');
    el.dataset.playing = String(Boolean(playing));
    el.dataset.flushes = String(flushes);
    el.dataset.played = String(played);
    el.dataset.underruns = String(underruns);
    el.textContent = playing ? 'playing' : '';
    el.title = `${underruns} underruns, ${flushes} flushes`;
  }

  showError(text) {
    $('error-text').textContent = text;
    $('error').hidden = false;
  }

  clearError() {
    $('error-text').textContent = '';
    $('error').hidden = true;
  }

  /** The token form: shown when no token is known or the server refused it. */
  askToken(message) {
    const form = $('token-form');
    form.hidden = false;
    $('token-message').textContent = message || '';
    $('token-input').focus();
  }

  hideTokenForm() {
    $('token-form').hidden = true;
  }

  setSettings({ voice, speed }) {
    if (typeof voice === 'string' && document.activeElement !== $('voice')) $('voice').value = voice;
    if (typeof speed === 'number' && Number.isFinite(speed)) this.showSpeed(speed, true);
  }

  showSpeed(speed, moveSlider) {
    if (moveSlider) $('speed').value = String(speed);
    $('speed-value').textContent = `${Number(speed).toFixed(2)}×`;
  }
}

/**
 * Push-to-talk: hold #ptt (mouse, touch or pen) or the space bar (outside text fields). `down()` runs on
 * press, `up()` on release, however the press ends (pointer leaves, window loses focus, touch cancelled).
 */
export function bindPushToTalk(button, down, up) {
  let held = null; // 'pointer' | 'key' | null
  const press = (how) => {
    if (held || button.disabled) return;
    held = how;
    down();
  };
  const release = (how) => {
    if (held !== how) return;
    held = null;
    up();
  };
  button.addEventListener('pointerdown', (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    button.setPointerCapture?.(event.pointerId);
    press('pointer');
  });
  for (const type of ['pointerup', 'pointercancel', 'lostpointercapture']) {
    button.addEventListener(type, () => release('pointer'));
  }
  button.addEventListener('contextmenu', (event) => event.preventDefault()); // long press on phones
  button.addEventListener('keydown', (event) => {
    if (event.code === 'Enter') event.preventDefault(); // the button is held, not clicked
  });
  const typing = (target) => target instanceof HTMLElement
    && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName));
  window.addEventListener('keydown', (event) => {
    if (event.code !== 'Space' || typing(event.target)) return;
    event.preventDefault(); // no page scroll, no button click
    if (!event.repeat) press('key');
  });
  window.addEventListener('keyup', (event) => {
    if (event.code !== 'Space' || held !== 'key') return;
    event.preventDefault();
    release('key');
  });
  window.addEventListener('blur', () => {
    release('key');
    release('pointer');
  });
}
