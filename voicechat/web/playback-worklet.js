// Reply playback in the audio thread: a small jitter buffer of the server's audio chunks, instant flush
// on barge-in, and position reports in samples of the server's rate (what report_playback expects).
//
// Messages in (port):
//   {type: 'chunk', generation, sentence, startSample, sampleRate, pcm: Int16Array | Float32Array}
//   {type: 'done', generation}      the reply is complete: play out even below the prebuffer, then finish
//   {type: 'flush', generation}     drop everything of older generations now, and refuse it later
//   {type: 'reset'}                 a new session: forget all generations
//   {type: 'config', prebufferMs}
// Messages out:
//   {type: 'status', playing, generation, played, totalPlayed, underruns, flushes, dropped, bufferedMs}
//     on every start/stop and every `reportMs` while playing
//   {type: 'finished', generation, played}   once, when a done generation has played out
//
// A generation starts (and restarts after an underrun) once `prebufferMs` of it is queued or its reply is
// done; a dry queue plays silence and counts one underrun. Chunks at another rate than the context's are
// resampled on the fly (linear interpolation) from a fractional read position in source samples, so the
// reported position is exact at the source rate. No DOM here: tests run this file under Node.

/* global sampleRate, registerProcessor, AudioWorkletProcessor */

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.prebufferMs = typeof opts.prebufferMs === 'number' ? opts.prebufferMs : 80;
    this.reportQuanta = Math.max(1, Math.round(((opts.reportMs || 50) / 1000) * sampleRate / 128));
    this.segments = []; // {generation, start, rate, data: Float32Array}, in arrival order
    this.readPos = 0; // fractional read index into segments[0].data
    this.minGeneration = 0; // chunks of older generations are dropped (last flush)
    this.done = new Set(); // generations whose reply is complete
    this.played = new Map(); // generation -> source samples played so far
    this.current = -1; // generation being played or buffered; -1 when idle
    this.buffering = true;
    this.playing = false;
    this.underruns = 0;
    this.totalPlayed = 0;
    this.flushes = 0;
    this.dropped = 0;
    this.quanta = 0;
    this.port.onmessage = (event) => this.onMessage(event.data || {});
  }

  onMessage(msg) {
    switch (msg.type) {
      case 'chunk':
        this.enqueue(msg);
        break;
      case 'done':
        if (msg.generation >= this.minGeneration) this.done.add(msg.generation);
        this.checkFinished();
        break;
      case 'flush':
        this.flush(msg.generation);
        break;
      case 'reset':
        this.segments = [];
        this.readPos = 0;
        this.minGeneration = 0;
        this.done.clear();
        this.played.clear();
        this.stopCurrent();
        break;
      case 'config':
        if (typeof msg.prebufferMs === 'number') this.prebufferMs = msg.prebufferMs;
        break;
      default:
        break;
    }
  }

  enqueue(msg) {
    if (msg.generation < this.minGeneration || !msg.pcm || msg.pcm.length === 0) {
      if (msg.generation < this.minGeneration) this.dropped += 1;
      return;
    }
    let data = msg.pcm;
    if (!(data instanceof Float32Array)) {
      const pcm = data;
      data = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
    }
    this.segments.push({ generation: msg.generation, start: msg.startSample || 0, rate: msg.sampleRate || sampleRate, data });
  }

  flush(generation) {
    this.flushes += 1;
    if (generation > this.minGeneration) this.minGeneration = generation;
    if (this.segments.length && this.segments[0].generation < generation) this.readPos = 0;
    this.segments = this.segments.filter((s) => s.generation >= generation);
    for (const g of [...this.done]) if (g < generation) this.done.delete(g);
    for (const g of [...this.played.keys()]) if (g < generation) this.played.delete(g);
    if (this.current < generation) this.stopCurrent();
    this.report();
  }

  stopCurrent() {
    this.current = -1;
    this.buffering = true;
    this.setPlaying(false);
  }

  /** Seconds of generation `g` still queued. */
  queuedSeconds(g) {
    let seconds = 0;
    for (let i = 0; i < this.segments.length; i++) {
      const s = this.segments[i];
      if (s.generation !== g) continue;
      const left = i === 0 ? s.data.length - this.readPos : s.data.length;
      seconds += left / s.rate;
    }
    return seconds;
  }

  maybeStart() {
    if (!this.segments.length) return;
    const g = this.segments[0].generation;
    if (this.done.has(g) || this.queuedSeconds(g) * 1000 >= this.prebufferMs) {
      this.current = g;
      this.buffering = false;
    }
  }

  /** Writes up to n samples of the current generation into ch; returns how many. */
  render(ch, n) {
    const g = this.current;
    const before = this.played.get(g) || 0;
    let i = 0;
    while (i < n) {
      const seg = this.segments[0];
      if (!seg || seg.generation !== g) {
        if (!this.done.has(g)) this.underruns += 1; // starved mid-reply: wait for a prebuffer again
        this.buffering = true;
        break;
      }
      const data = seg.data;
      const step = seg.rate / sampleRate;
      if (step === 1 && Number.isInteger(this.readPos)) {
        const take = Math.min(n - i, data.length - this.readPos);
        ch.set(data.subarray(this.readPos, this.readPos + take), i);
        i += take;
        this.readPos += take;
      } else {
        const idx = Math.floor(this.readPos);
        const frac = this.readPos - idx;
        const next = this.segments[1];
        const s0 = data[idx];
        const s1 = idx + 1 < data.length ? data[idx + 1] : next && next.generation === g ? next.data[0] : s0;
        ch[i++] = s0 + (s1 - s0) * frac;
        this.readPos += step;
      }
      if (this.readPos >= data.length) {
        this.readPos -= data.length;
        this.segments.shift();
        this.played.set(g, seg.start + data.length);
      } else {
        this.played.set(g, seg.start + Math.floor(this.readPos));
      }
    }
    const after = this.played.get(g) || 0;
    if (after > before) this.totalPlayed += after - before;
    return i;
  }

  /** Posts `finished` for every done generation with nothing left queued. */
  checkFinished() {
    for (const g of [...this.done]) {
      if (this.segments.some((s) => s.generation === g)) continue;
      this.done.delete(g);
      this.port.postMessage({ type: 'finished', generation: g, played: this.played.get(g) || 0 });
      this.played.delete(g);
      if (this.current === g) this.stopCurrent();
    }
  }

  setPlaying(playing) {
    if (playing === this.playing) return;
    this.playing = playing;
    this.report();
  }

  report() {
    this.port.postMessage({
      type: 'status', playing: this.playing, generation: this.current,
      played: this.current >= 0 ? this.played.get(this.current) || 0 : 0,
      totalPlayed: this.totalPlayed, underruns: this.underruns, flushes: this.flushes, dropped: this.dropped,
      bufferedMs: this.current >= 0 ? Math.round(this.queuedSeconds(this.current) * 1000) : 0,
    });
  }

  process(inputs, outputs) {
    const out = outputs[0];
    if (!out || !out.length) return true;
    const ch = out[0];
    ch.fill(0);
    if (this.buffering) this.maybeStart();
    let written = 0;
    if (!this.buffering) written = this.render(ch, ch.length);
    for (let c = 1; c < out.length; c++) out[c].set(ch);
    this.checkFinished();
    this.setPlaying(written > 0 && !this.buffering);
    this.quanta += 1;
    if (this.playing && this.quanta % this.reportQuanta === 0) this.report();
    return true;
  }
}

registerProcessor('playback-processor', PlaybackProcessor);
