// Microphone capture in the audio thread: mono mix, stateful resampling from the AudioContext's rate to
// 16 kHz, 20 ms frames of PCM16 posted to the main thread (buffer transferred) with their RMS level.
//
// The resampler is a Kaiser-windowed sinc evaluated at the exact fractional input position of every output
// sample: it low-passes (anti-aliasing, ~80 dB stop band from the output Nyquist) and interpolates in one
// step. Input samples, the integer read position and the fractional phase persist across render quanta, so
// block boundaries are invisible in the output. The phase is kept as an integer numerator over the output
// rate, so 44.1 kHz -> 16 kHz never drifts however long the session runs. No DOM here: tests run this file
// under Node with a stand-in AudioWorkletProcessor.

/* global sampleRate, registerProcessor, AudioWorkletProcessor */

const TARGET_RATE = 16000;
const FRAME_SAMPLES = 320; // 20 ms at 16 kHz
const TABLE_STEPS = 256; // kernel table entries per input sample (linear interpolation between them)
const STOPBAND_DB = 80;

function besselI0(x) {
  let sum = 1;
  let term = 1;
  const q = (x * x) / 4;
  for (let k = 1; k < 64; k++) {
    term *= q / (k * k);
    sum += term;
    if (term < 1e-12 * sum) break;
  }
  return sum;
}

/** Streaming band-limited resampler from `inRate` to `outRate` (any integer rates, down or up). */
class Resampler {
  constructor(inRate, outRate) {
    this.inRate = Math.round(inRate);
    this.outRate = Math.round(outRate);
    this.passthrough = this.inRate === this.outRate;
    const nyquist = Math.min(this.inRate, this.outRate) / 2;
    const cutoff = 0.925 * nyquist; // -6 dB point: pass band to ~0.85, stop band from 1.0 x Nyquist
    const transition = 0.15 * nyquist;
    const beta = 0.1102 * (STOPBAND_DB - 8.7);
    const taps = Math.ceil((STOPBAND_DB - 7.95) / ((14.36 * transition) / this.inRate)) + 1;
    this.half = Math.ceil(taps / 2); // kernel half-width, in input samples
    const fc = cutoff / this.inRate; // cycles per input sample
    const size = this.half * TABLE_STEPS + 2;
    this.table = new Float32Array(size);
    const i0beta = besselI0(beta);
    for (let j = 0; j < size; j++) {
      const d = j / TABLE_STEPS;
      if (d > this.half) break; // zero beyond the window
      const r = d / this.half;
      const taper = besselI0(beta * Math.sqrt(Math.max(0, 1 - r * r))) / i0beta;
      const arg = 2 * fc * d;
      const sinc = arg === 0 ? 1 : Math.sin(Math.PI * arg) / (Math.PI * arg);
      this.table[j] = 2 * fc * sinc * taper;
    }
    // History: `half` zeros stand for the silence before the first sample, so output starts at input 0.
    this.buf = new Float32Array(4096 + 2 * this.half);
    this.len = this.half;
    this.pos = this.half; // index in buf of the current output's integer input position
    this.phase = 0; // fractional part of that position, as phase / outRate
    this.out = new Float32Array(256);
  }

  /** Feeds `input` (Float32Array); returns how many output samples it wrote to `this.out`. */
  push(input) {
    if (this.passthrough) {
      this._ensureOut(input.length);
      this.out.set(input);
      return input.length;
    }
    this._append(input);
    const half = this.half;
    const table = this.table;
    const buf = this.buf;
    const maxOut = Math.ceil(((this.len - this.pos) * this.outRate) / this.inRate) + 2;
    this._ensureOut(maxOut);
    const out = this.out;
    let count = 0;
    while (this.pos + half < this.len) {
      const frac = this.phase / this.outRate;
      const base = this.pos;
      let acc = 0;
      for (let k = 1 - half; k <= half; k++) {
        let d = k - frac;
        if (d < 0) d = -d;
        const x = d * TABLE_STEPS;
        const i = x | 0;
        const w = table[i] + (x - i) * (table[i + 1] - table[i]);
        acc += buf[base + k] * w;
      }
      out[count++] = acc;
      this.phase += this.inRate;
      if (this.phase >= this.outRate) {
        const whole = Math.floor(this.phase / this.outRate);
        this.pos += whole;
        this.phase -= whole * this.outRate;
      }
    }
    this._compact();
    return count;
  }

  _append(input) {
    if (this.len + input.length > this.buf.length) {
      const bigger = new Float32Array(Math.max(this.buf.length * 2, this.len + input.length));
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(input, this.len);
    this.len += input.length;
  }

  /** Drops input no later output can reach (everything before pos - half + 1). */
  _compact() {
    const keepFrom = this.pos - this.half + 1;
    if (keepFrom <= 0) return;
    this.buf.copyWithin(0, keepFrom, this.len);
    this.len -= keepFrom;
    this.pos -= keepFrom;
  }

  _ensureOut(n) {
    if (this.out.length < n) this.out = new Float32Array(Math.max(n, this.out.length * 2));
  }
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.frameSamples = opts.frameSamples || FRAME_SAMPLES;
    this.resampler = new Resampler(sampleRate, opts.targetRate || TARGET_RATE);
    this.frame = new Float32Array(this.frameSamples);
    this.filled = 0;
    this.frames = 0;
    this.mono = new Float32Array(128);
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true; // no input connected (yet)
    const n = channels[0].length;
    if (this.mono.length < n) this.mono = new Float32Array(n);
    const mono = this.mono.subarray(0, n);
    if (channels.length === 1) {
      mono.set(channels[0]);
    } else {
      mono.fill(0);
      for (const ch of channels) for (let i = 0; i < n; i++) mono[i] += ch[i];
      const scale = 1 / channels.length;
      for (let i = 0; i < n; i++) mono[i] *= scale;
    }
    const count = this.resampler.push(mono);
    const out = this.resampler.out;
    for (let i = 0; i < count; i++) {
      this.frame[this.filled++] = out[i];
      if (this.filled === this.frameSamples) this._emit();
    }
    return true;
  }

  _emit() {
    const pcm = new Int16Array(this.frameSamples);
    let energy = 0;
    let peak = 0;
    for (let i = 0; i < this.frameSamples; i++) {
      const v = this.frame[i];
      energy += v * v;
      const a = v < 0 ? -v : v;
      if (a > peak) peak = a;
      const c = v > 1 ? 1 : v < -1 ? -1 : v;
      pcm[i] = c < 0 ? Math.round(c * 32768) : Math.round(c * 32767);
    }
    this.filled = 0;
    this.frames += 1;
    const rms = Math.sqrt(energy / this.frameSamples);
    this.port.postMessage({ type: 'frame', pcm, rms, peak, index: this.frames }, [pcm.buffer]);
  }
}

registerProcessor('capture-processor', CaptureProcessor);
