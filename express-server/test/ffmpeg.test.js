// /health, and what clients see when ffmpeg is missing, broken or too slow.
import assert from 'node:assert/strict';
import { chmod, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { summarizeStderr } from '../src/ffmpeg.js';
import { b64, makeTone, postJson, scratchDir, startApp } from './helpers.js';

let wav;
let scripts;

async function script(name, body) {
  const file = path.join(scripts, name);
  await writeFile(file, `#!/bin/sh\n${body}\n`);
  await chmod(file, 0o755);
  return file;
}

before(async () => {
  wav = b64(await makeTone({ seconds: 1 }));
  scripts = await scratchDir();
});
after(() => rm(scripts, { recursive: true, force: true }));

describe('GET /health', () => {
  test('reports the ffmpeg version', async () => {
    const app = await startApp();
    try {
      const res = await fetch(`${app.url}/health`);
      assert.equal(res.status, 200);
      const body = await res.json();
      assert.equal(body.status, 'live');
      assert.match(body.ffmpeg, /^(\d+\.\d+|n\d|N-)/, body.ffmpeg);
      assert.equal(res.headers.get('access-control-allow-origin'), '*');
    } finally {
      await app.close();
    }
  });
});

describe('missing ffmpeg', () => {
  let app;
  before(async () => {
    app = await startApp({ ffmpegPath: '/nonexistent/bin/ffmpeg' });
  });
  after(() => app.close());

  test('health answers 503 with a reason', async () => {
    const res = await fetch(`${app.url}/health`);
    assert.equal(res.status, 503);
    const body = await res.json();
    assert.equal(body.status, 'down');
    assert.equal(body.ffmpeg, null);
    assert.match(body.error, /\/nonexistent\/bin\/ffmpeg.*not found/);
  });

  test('crop and combine answer 503 JSON, and the server stays up', async () => {
    const crop = await postJson(`${app.url}/crop-audio`, { audioData: wav, end: 0.5 });
    assert.equal(crop.status, 503);
    assert.equal(crop.json.code, 'ffmpeg_unavailable');
    assert.match(crop.json.error, /not found/);
    const combine = await postJson(`${app.url}/combine-audio`, { audioClips: [wav, wav] });
    assert.equal(combine.status, 503);
    assert.equal(combine.json.code, 'ffmpeg_unavailable');
    assert.equal((await fetch(`${app.url}/health`)).status, 503);
  });

  test('leaves no temp files behind', async () => {
    assert.deepEqual(await app.tempEntries(), []);
  });
});

describe('broken ffmpeg', () => {
  test('a failing binary gives 503 health and 500 crop with its message', async () => {
    const broken = await script('broken-ffmpeg', 'echo "libfoo.so: cannot open shared object file" >&2; exit 127');
    const app = await startApp({ ffmpegPath: broken });
    try {
      const health = await fetch(`${app.url}/health`);
      assert.equal(health.status, 503);
      assert.match((await health.json()).error, /cannot open shared object file/);
      const crop = await postJson(`${app.url}/crop-audio`, { audioData: wav, end: 0.5 });
      assert.equal(crop.status, 500);
      assert.equal(crop.json.code, 'ffmpeg_failed');
      assert.match(crop.json.error, /cannot open shared object file/);
      assert.deepEqual(await app.tempEntries(), []);
    } finally {
      await app.close();
    }
  });
});

describe('slow ffmpeg', () => {
  test('a run past the timeout is killed: 504 JSON, temp files removed', async () => {
    const slow = await script('slow-ffmpeg', 'exec sleep 600');
    const app = await startApp({ ffmpegPath: slow, ffmpegTimeoutSeconds: 0.3 });
    try {
      const started = Date.now();
      const crop = await postJson(`${app.url}/crop-audio`, { audioData: wav, end: 0.5 });
      assert.equal(crop.status, 504, crop.text);
      assert.equal(crop.json.code, 'ffmpeg_timeout');
      assert.match(crop.json.error, /0\.3 s/);
      // Killed, not waited for: far sooner than the 600 s the script would sleep (a bound, not a speed test).
      assert.ok(Date.now() - started < 120_000);
      assert.deepEqual(await app.tempEntries(), []);
    } finally {
      await app.close();
    }
  });
});

describe('summarizeStderr', () => {
  test('keeps the last meaningful line, without noise, prefixes or temp paths', () => {
    const stderr = [
      '[mp3 @ 0x55d0c0a1b2c0] Failed to read frame size',
      '/tmp/segue-audio-abc/input: Invalid data found when processing input',
      'Conversion failed!',
      '',
    ].join('\n');
    assert.equal(summarizeStderr(stderr, ['/tmp/segue-audio-abc']), 'input: Invalid data found when processing input');
    assert.equal(summarizeStderr("Stream map '0:a:0' matches no streams.\nTo ignore this, add a trailing '?' to the map."), "Stream map '0:a:0' matches no streams.");
    assert.equal(summarizeStderr('[aac @ 0xabc] something odd'), 'something odd');
    assert.equal(summarizeStderr(''), '');
  });
});
