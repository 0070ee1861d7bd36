// The ffmpeg cap, with real ffmpeg and no timing: the only slot is held by a
// real ffmpeg run that a wrapper script keeps waiting on its own FIFO until the
// test writes to it, so "busy" and "free" are states the test controls.
import assert from 'node:assert/strict';
import { chmod, mkdtemp, open, readdir, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Slots } from '../src/slots.js';
import { b64, makeTone, postJson, scratchDir, startApp } from './helpers.js';

let wav;
let dir;

before(async () => {
  wav = b64(await makeTone({ seconds: 1 }));
  dir = await scratchDir();
});

/**
 * Real ffmpeg behind a gate: each run first makes its own FIFO and waits on it; release() lets exactly
 * one waiting run go on (it opens that run's FIFO, unlinks it so no later release can pick it, writes).
 */
async function heldFfmpeg(name) {
  const gates = await mkdtemp(path.join(dir, `${name}-`));
  const file = path.join(dir, `${name}.sh`);
  await writeFile(
    file,
    `#!/bin/sh\nf=$(mktemp -u "${gates}/wait.XXXXXX")\nmkfifo "$f"\nread _ < "$f"\nrm -f "$f"\nexec ffmpeg "$@"\n`,
  );
  await chmod(file, 0o755);
  return {
    ffmpegPath: file,
    async release() {
      let waiting = [];
      while (waiting.length === 0) {
        waiting = (await readdir(gates)).filter((entry) => entry.startsWith('wait.'));
        if (waiting.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const fifo = path.join(gates, waiting[0]);
      const handle = await open(fifo, 'w'); // returns once that run reads
      await unlink(fifo);
      await handle.write('go\n');
      await handle.close();
    },
  };
}

async function until(predicate) {
  while (!predicate()) await new Promise((resolve) => setImmediate(resolve));
}

describe('ffmpeg cap', () => {
  test('past the cap with no wait: 503 ffmpeg_busy with Retry-After; then served again', async () => {
    const held = await heldFfmpeg('busy');
    const app = await startApp({ ffmpegPath: held.ffmpegPath, ffmpegMaxConcurrent: 1, ffmpegWaitSeconds: 0 });
    try {
      const slots = app.slots;
      const first = postJson(`${app.url}/crop-audio`, { audioData: wav, end: 0.5 });
      await until(() => slots.active === 1); // its ffmpeg runs (waiting on the FIFO) and holds the only slot
      const refused = await postJson(`${app.url}/combine-audio`, { audioClips: [wav, wav] });
      assert.equal(refused.status, 503, refused.text);
      assert.equal(refused.json.code, 'ffmpeg_busy');
      assert.match(refused.json.error, /ffmpeg slot/);
      assert.ok(Number(refused.headers.get('retry-after')) >= 1);
      await held.release();
      assert.equal((await first).status, 200);
      assert.equal(slots.active, 0);
      // The slot is free: the refused request goes through now.
      const again = postJson(`${app.url}/combine-audio`, { audioClips: [wav, wav] });
      await until(() => slots.active === 1);
      await held.release();
      assert.equal((await again).status, 200);
      assert.equal(slots.peak, 1);
      assert.deepEqual(await app.tempEntries(), []);
    } finally {
      await app.close();
    }
  });

  test('requests past the cap wait for a slot and never run more ffmpeg at once than the cap', async () => {
    const held = await heldFfmpeg('queue');
    const app = await startApp({ ffmpegPath: held.ffmpegPath, ffmpegMaxConcurrent: 1, ffmpegWaitSeconds: 600 });
    try {
      const slots = app.slots;
      const first = postJson(`${app.url}/crop-audio`, { audioData: wav, end: 0.5 });
      await until(() => slots.active === 1);
      const queued = [1, 2].map(() => postJson(`${app.url}/crop-audio`, { audioData: wav, end: 0.25 }));
      await until(() => slots.waiting === 2);
      await held.release(); // first ends; each waiter then runs in turn through the same gate
      await held.release();
      await held.release();
      const answers = await Promise.all([first, ...queued]);
      assert.deepEqual(answers.map((a) => a.status), [200, 200, 200]);
      assert.equal(slots.peak, 1);
      assert.equal(slots.active, 0);
    } finally {
      await app.close();
    }
  });

  test('a waiter whose wait runs out gets 503 and leaves the queue', async () => {
    const slots = new Slots(1, 0.05);
    const release = await slots.acquire();
    await assert.rejects(slots.acquire(), (err) => err.status === 503 && err.code === 'ffmpeg_busy');
    assert.equal(slots.waiting, 0);
    release();
    release(); // twice is harmless
    assert.equal(slots.active, 0);
  });

  test('the default cap is the number of cores', async () => {
    const app = await startApp({});
    try {
      const os = await import('node:os');
      assert.equal(app.slots.limit, os.availableParallelism());
      const health = await (await fetch(`${app.url}/health`)).json();
      assert.equal(health.ffmpeg_slots.limit, os.availableParallelism());
    } finally {
      await app.close();
    }
  });
});

after(async () => {
  const { rm } = await import('node:fs/promises');
  await rm(dir, { recursive: true, force: true });
});
