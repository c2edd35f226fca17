// Streaming downsampler to 16 kHz: a windowed-sinc low-pass (anti-aliasing) evaluated at fractional
// input positions with linear interpolation. Used by the AudioWorklet and the ScriptProcessor fallback.

export class Downsampler {
  constructor(inRate, outRate = 16000, taps = 63) {
    this.ratio = inRate / outRate;
    this.passthrough = Math.abs(inRate - outRate) < 1;
    // cutoff a little under the output Nyquist, in cycles per input sample
    const fc = Math.min(0.46 * outRate, 0.5 * inRate) / inRate;
    const h = new Float32Array(taps);
    const mid = (taps - 1) / 2;
    let sum = 0;
    for (let k = 0; k < taps; k++) {
      const x = k - mid;
      const sinc = x === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * x) / (Math.PI * x);
      const w = 0.54 - 0.46 * Math.cos((2 * Math.PI * k) / (taps - 1)); // Hamming
      h[k] = sinc * w;
      sum += h[k];
    }
    for (let k = 0; k < taps; k++) h[k] /= sum;
    this.h = h;
    this.hist = new Float32Array(taps - 1);
    this.t = taps - 1; // position of the next output sample, in indices of hist+input
  }

  fir(buf, i) {
    const h = this.h;
    let y = 0;
    for (let k = 0; k < h.length; k++) y += h[k] * buf[i - k];
    return y;
  }

  // input: Float32Array at inRate -> Float32Array at outRate (length varies from call to call)
  process(input) {
    if (this.passthrough) return Float32Array.from(input);
    const buf = new Float32Array(this.hist.length + input.length);
    buf.set(this.hist);
    buf.set(input, this.hist.length);
    const out = [];
    while (Math.floor(this.t) + 1 < buf.length) {
      const i = Math.floor(this.t);
      const f = this.t - i;
      const y0 = this.fir(buf, i);
      out.push(f ? y0 + f * (this.fir(buf, i + 1) - y0) : y0);
      this.t += this.ratio;
    }
    const keepFrom = Math.floor(this.t) - (this.h.length - 1);
    this.hist = buf.slice(keepFrom);
    this.t -= keepFrom;
    return Float32Array.from(out);
  }
}

// Collects float samples into fixed-size little-endian int16 chunks.
export class Int16Chunker {
  constructor(size) {
    this.size = size;
    this.buf = new Int16Array(size);
    this.n = 0;
  }

  push(samples, emit) {
    for (let i = 0; i < samples.length; i++) {
      const s = Math.max(-1, Math.min(1, samples[i]));
      this.buf[this.n++] = s < 0 ? s * 32768 : s * 32767;
      if (this.n === this.size) {
        emit(this.buf.buffer);
        this.buf = new Int16Array(this.size);
        this.n = 0;
      }
    }
  }
}
