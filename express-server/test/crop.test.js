import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { b64, makeTone, makeVideoOnly, postJson, probe, startApp } from './helpers.js';

const TOLERANCE = 0.1;

function assertDuration(actual, expected) {
  assert.ok(Math.abs(actual - expected) <= TOLERANCE, `duration ${actual} s, expected ${expected} ± ${TOLERANCE} s`);
}

async function cropOk(url, body) {
  const res = await postJson(`${url}/crop-audio`, body);
  assert.equal(res.status, 200, res.text);
  assert.match(res.headers.get('content-type'), /^text\/plain/);
  const mp3 = Buffer.from(res.text, 'base64');
  const info = await probe(mp3);
  assert.equal(info.codec, 'mp3');
  return info;
}

async function cropError(url, body, status, code) {
  const res = await postJson(`${url}/crop-audio`, body);
  assert.equal(res.status, status, res.text);
  assert.match(res.headers.get('content-type'), /^application\/json/);
  assert.equal(res.json.code, code, res.text);
  assert.equal(typeof res.json.error, 'string');
  return res.json;
}

describe('POST /crop-audio', () => {
  let app;
  let wav;

  before(async () => {
    app = await startApp();
    wav = b64(await makeTone({ seconds: 5, rate: 22050 }));
  });
  after(() => app.close());

  test('returns a base64 MP3 of [start, end)', async () => {
    const info = await cropOk(app.url, { audioData: wav, start: 1, end: 3.5 });
    assertDuration(info.duration, 2.5);
    assert.equal(info.sampleRate, 44100);
    assert.equal(info.channels, 2);
  });

  test('accepts numeric strings', async () => {
    const info = await cropOk(app.url, { audioData: wav, start: '0.5', end: ' 2 ' });
    assertDuration(info.duration, 1.5);
  });

  test('start defaults to 0; a missing end means the end of the clip', async () => {
    assertDuration((await cropOk(app.url, { audioData: wav, end: 1 })).duration, 1);
    assertDuration((await cropOk(app.url, { audioData: wav, start: 3 })).duration, 2);
    assertDuration((await cropOk(app.url, { audioData: wav, end: null })).duration, 5);
  });

  test('an end past the clip stops at the clip end', async () => {
    assertDuration((await cropOk(app.url, { audioData: wav, start: 4, end: 60 })).duration, 1);
  });

  for (const format of ['mp3', 'flac', 'ogg', 'm4a']) {
    test(`crops ${format} input`, async () => {
      const audio = b64(await makeTone({ seconds: 3, rate: 48000, channels: 2, format }));
      assertDuration((await cropOk(app.url, { audioData: audio, start: 0.25, end: 1.75 })).duration, 1.5);
    });
  }

  test('accepts a data: URL', async () => {
    const info = await cropOk(app.url, { audioData: `data:audio/wav;base64,${wav}`, start: 0, end: 1 });
    assertDuration(info.duration, 1);
  });

  test('rejects missing or non-base64 audioData', async () => {
    await cropError(app.url, { start: 0, end: 1 }, 400, 'missing_audio');
    await cropError(app.url, { audioData: '', end: 1 }, 400, 'missing_audio');
    await cropError(app.url, { audioData: 'not base64 !!!', end: 1 }, 400, 'invalid_base64');
    await cropError(app.url, { audioData: 12345, end: 1 }, 400, 'invalid_base64');
    await cropError(app.url, { audioData: 'abcde', end: 1 }, 400, 'invalid_base64');
  });

  test('rejects bad numbers and ranges', async () => {
    await cropError(app.url, { audioData: wav, start: 'abc', end: 1 }, 400, 'invalid_number');
    await cropError(app.url, { audioData: wav, start: -1, end: 1 }, 400, 'invalid_number');
    await cropError(app.url, { audioData: wav, start: '0x10' }, 400, 'invalid_number');
    await cropError(app.url, { audioData: wav, start: true }, 400, 'invalid_number');
    await cropError(app.url, { audioData: wav, start: 0, end: [1] }, 400, 'invalid_number');
    await cropError(app.url, { audioData: wav, start: 2, end: 2 }, 400, 'invalid_range');
    await cropError(app.url, { audioData: wav, start: '3', end: '1' }, 400, 'invalid_range');
  });

  test('rejects undecodable audio with ffmpeg\'s reason', async () => {
    const garbage = b64(Buffer.from('this is not audio at all, just some text '.repeat(20)));
    const body = await cropError(app.url, { audioData: garbage, end: 1 }, 400, 'undecodable_audio');
    assert.match(body.error, /Invalid data found/);
    assert.doesNotMatch(body.error, new RegExp(app.tmpDir), 'temp paths must not leak');
    assert.doesNotMatch(body.error, /\n/);
  });

  test('rejects a file without an audio stream', async () => {
    const video = b64(await makeVideoOnly());
    const body = await cropError(app.url, { audioData: video }, 400, 'undecodable_audio');
    assert.match(body.error, /matches no streams/);
  });

  test('rejects a start beyond the end of the audio', async () => {
    await cropError(app.url, { audioData: wav, start: 10, end: 12 }, 400, 'empty_range');
  });

  test('rejects malformed JSON and non-JSON bodies with JSON errors', async () => {
    const res = await postJson(`${app.url}/crop-audio`, '{"audioData": ');
    assert.equal(res.status, 400);
    assert.equal(res.json.code, 'invalid_json');
    const array = await postJson(`${app.url}/crop-audio`, '[1, 2]');
    assert.equal(array.status, 400);
    assert.equal(array.json.code, 'invalid_body');
    const plain = await fetch(`${app.url}/crop-audio`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: 'x' });
    assert.equal(plain.status, 415);
    assert.equal((await plain.json()).code, 'unsupported_media_type');
    const empty = await fetch(`${app.url}/crop-audio`, { method: 'POST' });
    assert.equal(empty.status, 400);
    assert.equal((await empty.json()).code, 'invalid_body');
  });

  test('answers CORS preflight and sets the allow-origin header', async () => {
    const preflight = await fetch(`${app.url}/crop-audio`, {
      method: 'OPTIONS',
      headers: { Origin: 'http://example.test', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get('access-control-allow-origin'), '*');
    assert.match(preflight.headers.get('access-control-allow-methods'), /POST/);
    assert.match(preflight.headers.get('access-control-allow-headers'), /content-type/i);
    const res = await postJson(`${app.url}/crop-audio`, { audioData: wav, end: 0.5 });
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
  });

  test('unknown routes answer 404 JSON', async () => {
    const res = await fetch(`${app.url}/nope`);
    assert.equal(res.status, 404);
    assert.equal((await res.json()).code, 'not_found');
  });

  test('logs one line per request', () => {
    assert.ok(app.logLines.length > 10);
    assert.ok(app.logLines.some((line) => / POST \/crop-audio 200 /.test(line)));
    assert.ok(app.logLines.some((line) => / POST \/crop-audio 400 invalid_range /.test(line)));
  });

  test('leaves no temp files behind', async () => {
    assert.deepEqual(await app.tempEntries(), []);
  });
});

describe('body size limit', () => {
  let app;
  before(async () => {
    app = await startApp({ maxBodyMb: 0.01 }); // ~10 KB
  });
  after(() => app.close());

  test('a body over the limit answers 413 JSON', async () => {
    const big = b64(Buffer.alloc(64 * 1024, 1));
    const res = await postJson(`${app.url}/crop-audio`, { audioData: big, end: 1 });
    assert.equal(res.status, 413);
    assert.equal(res.json.code, 'payload_too_large');
    const combine = await postJson(`${app.url}/combine-audio`, { audioClips: [big] });
    assert.equal(combine.status, 413);
  });

  test('a body under the limit is processed', async () => {
    const small = b64(await makeTone({ seconds: 0.5, rate: 8000, format: 'mp3' }));
    assert.ok(small.length < 10 * 1024, `fixture is ${small.length} bytes`);
    const res = await postJson(`${app.url}/crop-audio`, { audioData: small, end: 0.25 });
    assert.equal(res.status, 200, res.text);
  });
});
