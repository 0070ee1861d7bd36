// Listening while the continuation is generated: PCM chunks from the event stream, scheduled back to back on
// an AudioContext. The context is made on the user's click (browsers keep audio silent until a gesture).

export class LivePlayer {
  constructor() {
    this.context = null;
    this.chunks = [];
    this.sources = [];
    this.playing = false;
    this.next = 0;
  }

  reset() {
    this.stop();
    this.chunks = [];
    this.expected = 0;
  }

  // offset: where the chunk starts within the continuation, in samples. A retried task streams again from 0
  // to a listener that stays connected: what was already received is not played twice.
  add(samples, channels, sampleRate, offset = this.expected ?? 0) {
    const end = offset + Math.floor(samples.length / channels);
    if (end <= (this.expected ?? 0)) return;
    const skip = Math.max(0, (this.expected ?? 0) - offset) * channels;
    const chunk = { samples: skip ? samples.subarray(skip) : samples, channels, sampleRate };
    this.expected = end;
    this.chunks.push(chunk);
    if (this.playing) this.schedule(chunk);
  }

  // Starts from the first chunk received, so nothing generated so far is skipped.
  async start() {
    this.context ??= new AudioContext();
    await this.context.resume();
    this.playing = true;
    this.next = this.context.currentTime + 0.1;
    for (const chunk of this.chunks) this.schedule(chunk);
  }

  stop() {
    this.playing = false;
    for (const source of this.sources) {
      try { source.stop(); } catch { /* already ended */ }
    }
    this.sources = [];
  }

  schedule({ samples, channels, sampleRate }) {
    const frames = Math.floor(samples.length / channels);
    if (!frames) return;
    const buffer = this.context.createBuffer(channels, frames, sampleRate);
    for (let c = 0; c < channels; c += 1) {
      const data = buffer.getChannelData(c);
      for (let i = 0; i < frames; i += 1) data[i] = samples[i * channels + c];
    }
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    // A chunk that arrives late starts now rather than in the past (which would drop its beginning).
    this.next = Math.max(this.next, this.context.currentTime + 0.05);
    source.start(this.next);
    this.next += buffer.duration;
    source.addEventListener("ended", () => { this.sources = this.sources.filter((s) => s !== source); });
    this.sources.push(source);
  }
}
