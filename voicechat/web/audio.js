// Browser audio: one AudioContext at the device's own rate, the microphone through capture-worklet.js
// (16 kHz PCM16 frames come back on its port) and reply audio through playback-worklet.js.

import { chooseOutputRate } from './protocol.js';

export const MIC_CONSTRAINTS = {
  audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
};
export const CAPTURE_WORKLET = '/static/capture-worklet.js';
export const PLAYBACK_WORKLET = '/static/playback-worklet.js';

/** A readable reason for a refused or missing microphone. */
export function describeMicError(err) {
  const name = err && err.name;
  if (name === 'NotAllowedError' || name === 'SecurityError') {
    return 'Microphone access was refused: allow it in the browser (address bar) and press Start again.';
  }
  if (name === 'NotFoundError' || name === 'OverconstrainedError') return 'No microphone found.';
  if (name === 'NotReadableError') return 'The microphone is busy in another application.';
  return `Microphone unavailable: ${(err && err.message) || err}`;
}

function stopTracks(stream) {
  for (const track of stream.getTracks()) track.stop();
}

export class AudioEngine {
  /**
   * handlers: onFrame(pcm: Int16Array, rms: number), onPlaybackStatus(msg), onPlaybackFinished(msg),
   * onContextState(state), onMicEnded().
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.ctx = null;
    this.playback = null;
    this.capture = null;
    this.source = null;
    this.stream = null;
  }

  get sampleRate() {
    return this.ctx ? this.ctx.sampleRate : 0;
  }

  get outputRate() {
    return chooseOutputRate(this.sampleRate || 24000);
  }

  /**
   * Call synchronously from a user gesture: the context is created and resumed before the first await,
   * while the gesture still counts. Resolves to {micError} (null when the microphone works); rejects when
   * audio cannot work at all here (then typed chat still can).
   */
  async start({ prebufferMs = 80 } = {}) {
    const Context = globalThis.AudioContext || globalThis.webkitAudioContext;
    if (!Context) throw new Error('this browser has no Web Audio');
    const ctx = new Context({ latencyHint: 'interactive' });
    this.ctx = ctx;
    const resumed = ctx.resume().catch(() => undefined);
    ctx.onstatechange = () => this.handlers.onContextState?.(ctx.state);
    if (!ctx.audioWorklet) throw new Error('audio needs https (or localhost): AudioWorklet is unavailable');
    const media = globalThis.navigator && navigator.mediaDevices;
    const mic = media && media.getUserMedia
      ? media.getUserMedia(MIC_CONSTRAINTS)
      : Promise.reject(new Error('the page needs https (or localhost) for the microphone'));
    mic.catch(() => undefined); // awaited below; this only keeps it from counting as unhandled meanwhile
    try {
      await Promise.all([ctx.audioWorklet.addModule(CAPTURE_WORKLET), ctx.audioWorklet.addModule(PLAYBACK_WORKLET)]);
      if (this.ctx !== ctx) throw new Error('stopped');
    } catch (err) {
      mic.then(stopTracks, () => undefined); // never leave the microphone open for nothing
      throw err;
    }
    this.playback = new AudioWorkletNode(ctx, 'playback-processor', {
      numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
      processorOptions: { prebufferMs, reportMs: 50 },
    });
    this.playback.port.onmessage = (event) => this._onPlayback(event.data);
    this.playback.connect(ctx.destination);
    await resumed;
    try {
      const stream = await mic;
      if (this.ctx !== ctx) {
        stopTracks(stream);
        throw new Error('stopped');
      }
      this._connectMic(stream);
      return { micError: null };
    } catch (err) {
      if (this.ctx !== ctx) throw err;
      return { micError: describeMicError(err) };
    }
  }

  _connectMic(stream) {
    this.stream = stream;
    this.source = this.ctx.createMediaStreamSource(stream);
    this.capture = new AudioWorkletNode(this.ctx, 'capture-processor', {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
      channelCount: 1, channelCountMode: 'explicit', channelInterpretation: 'speakers',
      processorOptions: { targetRate: 16000, frameSamples: 320 },
    });
    this.capture.port.onmessage = (event) => {
      const msg = event.data;
      if (msg && msg.type === 'frame') this.handlers.onFrame?.(msg.pcm, msg.rms);
    };
    this.source.connect(this.capture);
    this.capture.connect(this.ctx.destination); // outputs silence; keeps the node pulled by the graph
    for (const track of stream.getAudioTracks()) track.onended = () => this.handlers.onMicEnded?.();
  }

  _onPlayback(msg) {
    if (!msg) return;
    if (msg.type === 'status') this.handlers.onPlaybackStatus?.(msg);
    else if (msg.type === 'finished') this.handlers.onPlaybackFinished?.(msg);
  }

  get hasMic() {
    return Boolean(this.capture);
  }

  /** Resumes a context the browser suspended (phone call, tab in background); needs a gesture on iOS. */
  resume() {
    if (this.ctx && this.ctx.state !== 'running' && this.ctx.state !== 'closed') this.ctx.resume().catch(() => undefined);
  }

  /** Queues one decoded server audio frame; its buffer is transferred to the audio thread. */
  play(frame) {
    if (!this.playback) return false;
    const { generation, sentence, startSample, sampleRate, pcm } = frame;
    this.playback.port.postMessage(
      { type: 'chunk', generation, sentence, startSample, sampleRate, pcm }, [pcm.buffer],
    );
    return true;
  }

  flush(generation) {
    this.playback?.port.postMessage({ type: 'flush', generation });
  }

  replyDone(generation) {
    this.playback?.port.postMessage({ type: 'done', generation });
  }

  reset() {
    this.playback?.port.postMessage({ type: 'reset' });
  }

  stop() {
    const ctx = this.ctx;
    this.ctx = null;
    if (this.stream) stopTracks(this.stream);
    for (const node of [this.source, this.capture, this.playback]) {
      try {
        node?.disconnect();
      } catch {
        /* already disconnected */
      }
    }
    this.stream = this.source = this.capture = this.playback = null;
    if (ctx && ctx.state !== 'closed') ctx.close().catch(() => undefined);
  }
}
