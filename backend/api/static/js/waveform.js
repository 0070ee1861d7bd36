// The result drawn on a <canvas> from decoded audio: mirrored peak bars, the prompt in grey and the generated
// part in the accent gradient, a playhead, a cursor (click, drag or arrow keys) and a time ruler.

const BAR = 3;          // CSS px per bar
const GAP = 1;          // CSS px between bars
const RULER = 18;       // CSS px reserved for time labels at the bottom

export function formatTime(seconds, decimals = 1) {
  if (!Number.isFinite(seconds) || seconds < 0) seconds = 0;
  const factor = 10 ** decimals;
  const total = Math.round(seconds * factor) / factor; // round first, so 59.96 reads 1:00.0, not 0:60.0
  const minutes = Math.floor(total / 60);
  const rest = total - minutes * 60;
  const text = rest.toFixed(decimals).padStart(decimals ? 3 + decimals : 2, "0");
  return `${minutes}:${text}`;
}

// Loudest sample in each of `count` equal slices of the (mixed-down) signal: enough to draw any waveform.
export function peaks(buffer, count) {
  const channels = [];
  for (let c = 0; c < buffer.numberOfChannels; c += 1) channels.push(buffer.getChannelData(c));
  const length = buffer.length;
  const out = new Float32Array(count);
  const step = length / count;
  for (let i = 0; i < count; i += 1) {
    const start = Math.floor(i * step);
    const end = Math.min(length, Math.max(start + 1, Math.floor((i + 1) * step)));
    // A stride keeps long clips cheap; the loudest of ~400 samples per slice looks the same as all of them.
    const stride = Math.max(1, Math.floor((end - start) / 400));
    let max = 0;
    for (const data of channels) {
      for (let j = start; j < end; j += stride) {
        const v = Math.abs(data[j]);
        if (v > max) max = v;
      }
    }
    out[i] = max;
  }
  return out;
}

// Peak and RMS level of each of `count` slices: the peak draws a bar's outline, the RMS its solid core.
export function levels(buffer, count) {
  const channels = [];
  for (let c = 0; c < buffer.numberOfChannels; c += 1) channels.push(buffer.getChannelData(c));
  const peak = new Float32Array(count);
  const rms = new Float32Array(count);
  const step = buffer.length / count;
  for (let i = 0; i < count; i += 1) {
    const start = Math.floor(i * step);
    const end = Math.min(buffer.length, Math.max(start + 1, Math.floor((i + 1) * step)));
    const stride = Math.max(1, Math.floor((end - start) / 800));
    let max = 0;
    let sum = 0;
    let n = 0;
    for (const data of channels) {
      for (let j = start; j < end; j += stride) {
        const v = data[j];
        const a = Math.abs(v);
        if (a > max) max = a;
        sum += v * v;
        n += 1;
      }
    }
    peak[i] = max;
    rms[i] = n ? Math.sqrt(sum / n) : 0;
  }
  return { peak, rms };
}

// A small thumbnail from stored peaks (history rows).
export function drawThumbnail(canvas, values, { boundaryFraction = 0 } = {}) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 92;
  const h = canvas.clientHeight || 34;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.scale(dpr, dpr);
  const n = values.length;
  if (!n) return;
  const norm = Math.max(0.05, ...values);
  const bw = w / n;
  for (let i = 0; i < n; i += 1) {
    const amp = Math.max(1, (values[i] / norm) * (h / 2 - 2));
    ctx.fillStyle = i / n < boundaryFraction ? "#59617c" : mix(i / n);
    ctx.fillRect(i * bw, h / 2 - amp, Math.max(1, bw - 1), amp * 2);
  }
}

function mix(t) {
  // Violet (#8b6cff) to cyan (#22d3ee), matching --accent-grad.
  const a = [139, 108, 255];
  const b = [34, 211, 238];
  const c = a.map((v, i) => Math.round(v + (b[i] - v) * t));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

export class Waveform {
  constructor(element, { onSeek } = {}) {
    this.element = element;
    this.canvas = element.querySelector("canvas");
    this.hoverLabel = element.querySelector(".wave-hover");
    this.onSeek = onSeek;
    this.buffer = null;
    this.duration = 0;
    this.boundary = 0;     // seconds where the generated part starts
    this.cursor = 0;
    this.playhead = 0;
    this.hover = null;
    this.live = null;      // {values: number[], seconds, rate} while a stream is arriving
    this.cache = null;
    new ResizeObserver(() => this.draw()).observe(element);
    this.bindPointer();
    this.bindKeys();
  }

  setAudio(buffer, { boundary = 0 } = {}) {
    this.buffer = buffer;
    this.duration = buffer ? buffer.duration : 0;
    this.boundary = Math.min(boundary, this.duration);
    this.cursor = 0;
    this.playhead = 0;
    this.live = null;
    this.cache = null;
    this.updateAria();
    this.draw();
  }

  // Streaming preview: peaks of the continuation as chunks arrive, drawn against the expected length.
  startLive(expectedSeconds) {
    this.buffer = null;
    this.cache = null;
    this.live = { values: [], seconds: 0, expected: expectedSeconds };
    this.duration = expectedSeconds;
    this.boundary = 0;
    this.draw();
  }

  addLiveChunk(samples, channels, sampleRate) {
    if (!this.live) return;
    const perPeak = Math.max(1, Math.round(sampleRate / 50)); // one level per 20 ms
    const frames = samples.length / channels;
    for (let start = 0; start < frames; start += perPeak) {
      let max = 0;
      let sum = 0;
      const from = start * channels;
      const end = Math.min(frames, start + perPeak) * channels;
      for (let j = from; j < end; j += 1) {
        max = Math.max(max, Math.abs(samples[j]));
        sum += samples[j] * samples[j];
      }
      this.live.values.push([max, Math.sqrt(sum / Math.max(1, end - from))]);
    }
    this.live.seconds += frames / sampleRate;
    this.live.expected = Math.max(this.live.expected, this.live.seconds);
    this.duration = this.live.expected;
    this.draw();
  }

  setPlayhead(seconds) {
    this.playhead = seconds;
    this.draw();
  }

  setCursor(seconds, { seek = true } = {}) {
    if (!this.buffer) return;
    this.cursor = Math.max(0, Math.min(this.duration, seconds));
    this.updateAria();
    this.draw();
    if (seek) this.onSeek?.(this.cursor);
  }

  updateAria() {
    const el = this.element;
    el.setAttribute("aria-valuemax", this.duration.toFixed(2));
    el.setAttribute("aria-valuenow", this.cursor.toFixed(2));
    el.setAttribute("aria-valuetext", formatTime(this.cursor));
    el.dispatchEvent(new CustomEvent("cursorchange", { detail: this.cursor }));
  }

  timeAt(clientX) {
    const rect = this.canvas.getBoundingClientRect();
    const x = Math.max(0, Math.min(rect.width, clientX - rect.left));
    return (x / rect.width) * this.duration;
  }

  bindPointer() {
    let dragging = false;
    this.element.addEventListener("pointerdown", (event) => {
      if (!this.buffer || event.button !== 0) return;
      dragging = true;
      this.element.setPointerCapture(event.pointerId);
      this.setCursor(this.timeAt(event.clientX));
    });
    this.element.addEventListener("pointermove", (event) => {
      if (!this.buffer) return;
      this.hover = this.timeAt(event.clientX);
      if (dragging) this.setCursor(this.hover);
      if (this.hoverLabel) {
        this.hoverLabel.hidden = false;
        this.hoverLabel.textContent = formatTime(this.hover);
        this.hoverLabel.style.left = `${(this.hover / this.duration) * 100}%`;
      }
      this.draw();
    });
    const stop = () => { dragging = false; };
    this.element.addEventListener("pointerup", stop);
    this.element.addEventListener("pointercancel", stop);
    this.element.addEventListener("pointerleave", () => {
      this.hover = null;
      if (this.hoverLabel) this.hoverLabel.hidden = true;
      this.draw();
    });
  }

  bindKeys() {
    this.element.addEventListener("keydown", (event) => {
      if (!this.buffer) return;
      const step = event.shiftKey ? 5 : 0.5;
      const moves = {
        ArrowLeft: this.cursor - step, ArrowDown: this.cursor - step,
        ArrowRight: this.cursor + step, ArrowUp: this.cursor + step,
        Home: 0, End: this.duration, PageDown: this.cursor - 10, PageUp: this.cursor + 10,
      };
      if (event.key in moves) {
        event.preventDefault();
        this.setCursor(moves[event.key]);
      }
    });
  }

  barValues(width) {
    const count = Math.max(1, Math.floor(width / (BAR + GAP)));
    if (this.live) {
      // Each stored level is 20 ms; bars cover the expected length, the unfilled ones stay empty.
      const peak = new Float32Array(count);
      const rms = new Float32Array(count);
      const per = (this.live.expected * 50) / count;
      this.live.values.forEach(([p, r], i) => {
        const bar = Math.min(count - 1, Math.floor(i / per));
        peak[bar] = Math.max(peak[bar], p);
        rms[bar] = Math.max(rms[bar], r);
      });
      return { peak, rms };
    }
    if (!this.cache || this.cache.count !== count) this.cache = { count, values: levels(this.buffer, count) };
    return this.cache.values;
  }

  draw() {
    const { canvas } = this;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (!w || !h) return;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    if (!this.buffer && !this.live) return;

    const waveH = h - RULER;
    const mid = waveH / 2;
    const { peak, rms } = this.barValues(w);
    const count = peak.length;
    let norm = 0.02;
    for (const v of peak) if (v > norm) norm = v;
    const xOf = (t) => (this.duration ? (t / this.duration) * w : 0);
    const boundaryX = xOf(this.boundary);
    const playX = xOf(this.playhead);
    const gradient = ctx.createLinearGradient(boundaryX, 0, w, 0);
    gradient.addColorStop(0, "#8b6cff");
    gradient.addColorStop(1, "#22d3ee");

    // Centre line, then bars: prompt grey, generated gradient; played part fully opaque.
    ctx.fillStyle = "#1f2433";
    ctx.fillRect(0, mid - 0.5, w, 1);
    const scale = mid - 8;
    for (let i = 0; i < count; i += 1) {
      if (this.live && !peak[i]) continue; // not generated yet: the centre line stands in
      const x = i * (BAR + GAP);
      const played = x + BAR <= playX;
      const outer = Math.max(1, (peak[i] / norm) * scale);
      const inner = Math.max(1, Math.min(outer, (rms[i] / norm) * scale * 1.25));
      ctx.fillStyle = x + BAR / 2 < boundaryX ? "#59617c" : gradient;
      ctx.globalAlpha = played ? 0.55 : 0.28;
      roundBar(ctx, x, mid - outer, BAR, outer * 2);
      ctx.globalAlpha = played ? 1 : 0.8;
      roundBar(ctx, x, mid - inner, BAR, inner * 2);
    }
    ctx.globalAlpha = 1;

    if (this.boundary > 0 && this.boundary < this.duration) {
      ctx.fillStyle = "rgba(255,255,255,.18)";
      ctx.fillRect(Math.round(boundaryX), 0, 1, waveH);
    }
    this.drawRuler(ctx, w, h);
    if (this.live) return;
    if (this.hover !== null) {
      ctx.fillStyle = "rgba(255,255,255,.25)";
      ctx.fillRect(Math.round(xOf(this.hover)), 0, 1, waveH);
    }
    // Playhead (white) and cursor (amber, with a handle).
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(Math.round(playX) - 1, 0, 2, waveH);
    const cx = Math.round(xOf(this.cursor));
    ctx.fillStyle = "#ffb547";
    ctx.fillRect(cx - 1, 0, 2, waveH);
    ctx.beginPath();
    ctx.moveTo(cx - 6, 0);
    ctx.lineTo(cx + 6, 0);
    ctx.lineTo(cx, 8);
    ctx.closePath();
    ctx.fill();
  }

  drawRuler(ctx, w, h) {
    if (!this.duration) return;
    const steps = [0.5, 1, 2, 5, 10, 15, 30, 60, 120];
    const every = steps.find((s) => (s / this.duration) * w >= 64) || 300;
    ctx.font = "11px ui-monospace, DejaVu Sans Mono, monospace";
    ctx.textBaseline = "bottom";
    for (let t = 0; t <= this.duration + 1e-6; t += every) {
      const x = (t / this.duration) * w;
      ctx.fillStyle = "#2b3144";
      ctx.fillRect(Math.round(x), h - RULER, 1, 4);
      ctx.fillStyle = "#5f6680";
      const label = formatTime(t, every < 1 ? 1 : 0);
      const tw = ctx.measureText(label).width;
      ctx.fillText(label, Math.min(Math.max(0, x - tw / 2), w - tw), h - 2);
    }
  }
}

function roundBar(ctx, x, y, width, height) {
  const r = Math.min(width / 2, height / 2);
  ctx.beginPath();
  if (ctx.roundRect) ctx.roundRect(x, y, width, height, r);
  else ctx.rect(x, y, width, height);
  ctx.fill();
}
