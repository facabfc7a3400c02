// The WebSocket to /ws: hello, keep-alive pings with round-trip time, and reconnection with backoff that
// resumes the same session (docs/protocol.md, "Connection lifecycle" and "Limits and close codes").

import { CLOSE, messages, reconnectDelay, shouldReconnect } from './protocol.js';

const PING_MS = 15000;
const SILENCE_LIMIT_MS = 45000; // nothing heard for three pings: the link is dead, start over

/** ws: or wss: to /ws on the page's own host and port. */
export function socketUrl(loc = globalThis.location) {
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
}

export class Connection {
  /**
   * handlers: hello() -> the hello message object; onStatus(status, detail); onMessage(msg) for every JSON
   * message; onAudio(ArrayBuffer); onRtt(ms); onUnauthorized(message).
   * status: connecting | connected | reconnecting | server restarting | server full | unauthorized |
   * session ended | disconnected.
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.ws = null;
    this.ready = false; // `session` arrived: audio and control messages may flow
    this.userClosed = true;
    this.attempt = 0;
    this.reconnects = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastHeard = 0;
    this.lastError = null;
    this.shuttingDown = false;
  }

  get bufferedAmount() {
    return this.ws ? this.ws.bufferedAmount : 0;
  }

  /** Connects (or reconnects at once after a failure); user-initiated. */
  open() {
    this.userClosed = false;
    this.shuttingDown = false;
    this.attempt = 0;
    this._clearRetry();
    if (!this.ws) this._connect();
  }

  /** Closes for good (the user pressed Stop): no reconnect. */
  close() {
    this.userClosed = true;
    this._clearRetry();
    this._stopPing();
    const ws = this.ws;
    this.ws = null; // its close event is ignored from now on; a new open() need not wait for it
    this.ready = false;
    if (ws) ws.close(CLOSE.NORMAL, 'client stopped');
    this._status('disconnected', '');
  }

  /** Skips the rest of a backoff wait (network back, page visible again). */
  retryNow() {
    if (this.retryTimer !== null && !this.userClosed) {
      this._clearRetry();
      this._connect();
    }
  }

  send(message) {
    if (!this.ready || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  sendBinary(buffer) {
    if (!this.ready || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(buffer);
    return true;
  }

  _connect() {
    this.retryTimer = null;
    this.lastError = null;
    if (!this.attempt) this._status('connecting', ''); // a retry keeps saying why it retries
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this._status('disconnected', String(err && err.message));
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = () => {
      this.lastHeard = Date.now();
      ws.send(JSON.stringify(this.handlers.hello()));
    };
    ws.onmessage = (event) => this._onMessage(ws, event.data);
    ws.onerror = () => undefined; // a close event follows with the code
    ws.onclose = (event) => this._onClose(ws, event);
  }

  _onMessage(ws, data) {
    if (ws !== this.ws) return;
    this.lastHeard = Date.now();
    if (data instanceof ArrayBuffer) {
      if (this.ready) this.handlers.onAudio(data);
      return;
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return; // the server only sends JSON text frames; ignore anything else
    }
    if (!msg || typeof msg.type !== 'string') return;
    if (msg.type === 'session') {
      this.ready = true;
      this.attempt = 0;
      this.shuttingDown = false;
      this._status('connected', '');
      this._startPing();
    } else if (msg.type === 'pong') {
      if (typeof msg.t === 'number') this.handlers.onRtt?.(performance.now() - msg.t);
    } else if (msg.type === 'shutdown') {
      this.shuttingDown = true;
    } else if (msg.type === 'error') {
      this.lastError = msg.code;
    }
    this.handlers.onMessage(msg);
  }

  _onClose(ws, event) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.ready = false;
    this._stopPing();
    if (this.userClosed) {
      this._status('disconnected', '');
      return;
    }
    if (!shouldReconnect(event.code, this.lastError, false)) {
      if (event.code === CLOSE.POLICY) {
        this.userClosed = true;
        this._status('unauthorized', 'the server refused the token');
        this.handlers.onUnauthorized?.(event.reason || 'the server refused the token');
      } else {
        this.userClosed = true;
        this._status('session ended', event.reason || 'the server closed the session; press Start to begin again');
      }
      return;
    }
    if (event.code === CLOSE.GOING_AWAY) this.shuttingDown = true; // until a session says it is back
    const restarting = this.shuttingDown;
    const full = event.code === CLOSE.TRY_LATER || this.lastError === 'server_full';
    const delay = reconnectDelay(this.attempt, full ? CLOSE.TRY_LATER : event.code);
    this.attempt += 1;
    this.reconnects += 1;
    const status = restarting ? 'server restarting' : full ? 'server full' : 'reconnecting';
    this._status(status, `retrying in ${(delay / 1000).toFixed(1)} s`);
    this.retryTimer = setTimeout(() => this._connect(), delay);
  }

  _startPing() {
    this._stopPing();
    const tick = () => {
      const ws = this.ws;
      if (ws && Date.now() - this.lastHeard > SILENCE_LIMIT_MS) {
        // A dead link can take minutes to report its close: give up on it now and reconnect.
        ws.close(4000, 'no answer from the server');
        this._onClose(ws, { code: 4000, reason: 'no answer from the server' });
        return;
      }
      this.send(messages.ping(performance.now()));
    };
    tick();
    this.pingTimer = setInterval(tick, PING_MS);
  }

  _stopPing() {
    if (this.pingTimer !== null) clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  _clearRetry() {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  _status(status, detail) {
    this.handlers.onStatus(status, detail);
  }
}
