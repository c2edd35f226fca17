// AudioWorklet: microphone frames (any rate) -> 16 kHz int16 chunks posted to the page.
import { Downsampler, Int16Chunker } from './resampler.js';

class Pcm16kCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions || {};
    this.down = new Downsampler(sampleRate, 16000);
    this.chunker = new Int16Chunker(o.chunkSamples || 4000);
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length) {
      let mono = channels[0];
      if (channels.length > 1) {
        mono = new Float32Array(channels[0].length);
        for (const ch of channels) for (let i = 0; i < ch.length; i++) mono[i] += ch[i] / channels.length;
      }
      this.chunker.push(this.down.process(mono), (buf) => this.port.postMessage(buf, [buf]));
    }
    return true;
  }
}

registerProcessor('pcm16k-capture', Pcm16kCapture);
