// A bound on concurrent ffmpeg processes (SEGUE_FFMPEG_MAX_CONCURRENT, default:
// the number of cores). Without it every request started its own ffmpeg, so a
// burst of 100 MB bodies ran as many encoders as requests. A run past the cap
// waits up to SEGUE_FFMPEG_WAIT_SECONDS for a slot (first come, first served),
// then fails with 503 ffmpeg_busy and Retry-After: a bounded queue, never an
// unbounded one.
import { HttpError } from './errors.js';

export const RETRY_AFTER_SECONDS = 5;

export class Slots {
  constructor(limit, waitSeconds) {
    this.limit = limit;
    this.waitMs = Math.max(0, Math.round(waitSeconds * 1000));
    this.active = 0;
    this.peak = 0; // most slots ever taken at once (tests read it)
    this.waiters = [];
  }

  get waiting() {
    return this.waiters.length;
  }

  busy() {
    return new HttpError(
      503,
      'ffmpeg_busy',
      `every ffmpeg slot (${this.limit}) stayed busy for ${this.waitMs / 1000} s; retry shortly`,
      {},
      { 'Retry-After': String(RETRY_AFTER_SECONDS) },
    );
  }

  take() {
    this.active += 1;
    this.peak = Math.max(this.peak, this.active);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiters.shift();
      if (next) {
        clearTimeout(next.timer);
        this.peak = Math.max(this.peak, this.active);
        next.resolve(this.handOver());
      } else {
        this.active -= 1;
      }
    };
  }

  // The slot passes straight to the next waiter (active stays the same).
  handOver() {
    this.active -= 1;
    return this.take();
  }

  /** Resolves to a release function; rejects with a 503 HttpError past the wait. */
  acquire() {
    if (this.active < this.limit) return Promise.resolve(this.take());
    if (this.waitMs === 0) return Promise.reject(this.busy());
    return new Promise((resolve, reject) => {
      const entry = { resolve };
      entry.timer = setTimeout(() => {
        const index = this.waiters.indexOf(entry);
        if (index >= 0) this.waiters.splice(index, 1);
        reject(this.busy());
      }, this.waitMs);
      this.waiters.push(entry);
    });
  }

  /** Runs fn() holding a slot. */
  async run(fn) {
    const release = await this.acquire();
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
