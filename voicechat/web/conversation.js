// The conversation view: user and assistant bubbles, the live partial transcript (stable prefix normal,
// the rest lighter), streaming assistant text, and each turn's latency under its reply.
// Text goes in with textContent only: nothing the server or the model says is ever parsed as HTML.

import { latencyParts } from './protocol.js';

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

export class ConversationView {
  constructor(root) {
    this.root = root;
    this.partial = null; // the user bubble being transcribed, if any
    this.replies = new Map(); // generation -> assistant bubble
  }

  clear() {
    this.root.replaceChildren();
    this.partial = null;
    this.replies.clear();
  }

  /** Redraws from a `session` message's history: [{role: 'user' | 'assistant', text}]. */
  redraw(history) {
    this.clear();
    for (const turn of history || []) {
      if (turn && (turn.role === 'user' || turn.role === 'assistant')) {
        this._append(this._bubble(turn.role, String(turn.text ?? '')), true);
      }
    }
    this._scroll(true);
  }

  /**
   * A new session replaced the old one (server restarted, resume expired): keep the old bubbles on screen
   * but stop addressing them, since the new session counts generations from zero again.
   */
  startOver(text) {
    for (const bubble of this.replies.values()) bubble.classList.remove('streaming');
    if (this.partial) this.partial.remove();
    this.partial = null;
    this.replies.clear();
    if (this.root.childElementCount) this.note(text);
  }

  note(text) {
    this._append(element('div', 'msg system', text));
  }

  partialTranscript(generation, text, stable) {
    const stick = this._atBottom();
    if (!this.partial) {
      this.partial = this._bubble('user', '');
      this.partial.classList.add('partial');
      this._append(this.partial);
    }
    this.partial.dataset.generation = String(generation);
    const body = this.partial.querySelector('.text');
    const full = String(text ?? '');
    const prefix = stable && full.startsWith(stable) ? stable : '';
    body.replaceChildren(element('span', 'stable', prefix), element('span', 'unstable', full.slice(prefix.length)));
    this._scroll(stick);
  }

  finalTranscript(generation, text) {
    const stick = this._atBottom();
    let bubble = this.partial;
    this.partial = null;
    if (!bubble) {
      bubble = this._bubble('user', '');
      this._append(bubble);
    }
    bubble.classList.remove('partial');
    bubble.dataset.generation = String(generation);
    bubble.querySelector('.text').replaceChildren(document.createTextNode(String(text ?? '')));
    this._scroll(stick);
  }

  assistantDelta(generation, text) {
    const stick = this._atBottom();
    const bubble = this._reply(generation);
    bubble.querySelector('.text').append(document.createTextNode(String(text ?? '')));
    this._scroll(stick);
  }

  /** The reply is complete: its authoritative text replaces the streamed pieces. */
  replyDone(generation, text) {
    if (!text && !this.replies.has(generation)) return; // nothing was said (e.g. an empty reply)
    const bubble = this._reply(generation);
    if (text) bubble.querySelector('.text').textContent = text;
    bubble.classList.remove('streaming');
  }

  /** Barge-in: replies of generations below `generation` that were still streaming were cut off. */
  interrupted(generation) {
    for (const [g, bubble] of this.replies) {
      if (g < generation && bubble.classList.contains('streaming')) {
        bubble.classList.remove('streaming');
        bubble.classList.add('interrupted');
      }
    }
  }

  /** Puts the turn's latencies (turn_metrics.latency_ms, end_of_turn) under its reply. */
  metrics(generation, latencyMs, endOfTurn) {
    const bubble = this.replies.get(generation);
    if (!bubble) return;
    const parts = latencyParts(latencyMs, endOfTurn);
    const line = bubble.querySelector('.latency');
    line.textContent = parts.join(' · ');
    line.hidden = parts.length === 0;
  }

  _reply(generation) {
    let bubble = this.replies.get(generation);
    if (!bubble) {
      bubble = this._bubble('assistant', '');
      bubble.classList.add('streaming');
      bubble.dataset.generation = String(generation);
      this.replies.set(generation, bubble);
      this._append(bubble);
      // Keep a user's partial transcript last: it is what is happening now.
      if (this.partial) this.root.append(this.partial);
    }
    return bubble;
  }

  _bubble(role, text) {
    const bubble = element('div', `msg ${role}`);
    bubble.append(element('div', 'text', text));
    if (role === 'assistant') {
      const latency = element('div', 'latency');
      latency.hidden = true;
      bubble.append(latency);
    }
    return bubble;
  }

  _append(el, quiet = false) {
    const stick = quiet || this._atBottom();
    this.root.append(el);
    if (!quiet) this._scroll(stick);
  }

  _atBottom() {
    const r = this.root;
    return r.scrollHeight - r.scrollTop - r.clientHeight < 80;
  }

  _scroll(stick) {
    if (stick) this.root.scrollTop = this.root.scrollHeight;
  }
}
