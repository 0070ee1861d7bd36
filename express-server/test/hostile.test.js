// Hostile bodies on every route and method of the sidecar: no 5xx, every error is {"error", "code"} JSON.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { b64, makeTone, startApp } from './helpers.js';

const nested = (depth, leaf = '1') => '{"a":'.repeat(depth) + leaf + '}'.repeat(depth);

const BODIES = [
  '', ' ', 'null', 'true', '0', '[]', '{}', '"x"', '{', '[['.repeat(10),
  '['.repeat(100_000), '['.repeat(100_000) + ']'.repeat(100_000), nested(5_000), nested(64),
  '1e999', '{"audioData": "AAAA", "start": 1e999}', '{"audioData": "AAAA", "end": -1e999}',
  `{"start": ${'9'.repeat(400)}}`, '{"start": NaN}', '{"audioData": "AAAA", "audioData": "BBBB"}',
  '{"audioClips": [' + '"AAAA",'.repeat(5000) + '"AAAA"]}', '{"audioClips": "AAAA"}', '{"audioClips": [1, null, {}]}',
  `{"audioData": "${'A'.repeat(3_000_000)}"}`, '{"audioData": "\\ud800"}', '{"audioData": "data:;base64,"}',
  '{"audioData": {"toString": 1}, "start": [], "end": {}}', '{"__proto__": {"audioData": "AAAA"}}',
  '{"constructor": {"prototype": {"x": 1}}}',
];
const RAW = [Buffer.from([0xff, 0xfe, 0x00, 0x7b]), Buffer.from('{"audioData": "\xc3\x28"}', 'latin1'), Buffer.alloc(64)];
const TYPES = [undefined, 'application/json', 'text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin-1',
  'application/json; charset=utf-16', 'multipart/form-data; boundary=x'];
const ROUTES = ['/crop-audio', '/combine-audio', '/health', '/nope', '/crop-audio/%ff', '/%00'];
const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'];

async function call(url, method, body, type) {
  const headers = type ? { 'Content-Type': type } : {};
  const res = await fetch(url, { method, headers, body: method === 'GET' || method === 'HEAD' ? undefined : body });
  const text = await res.text();
  const what = `${method} ${url} [${type}] ${String(body).slice(0, 60)}`;
  assert.ok(res.status < 500 || (res.status === 503 && url.endsWith('/health')), `${what}: ${res.status} ${text.slice(0, 200)}`);
  if (res.status >= 400) {
    assert.match(res.headers.get('content-type') || '', /^application\/json/, what);
    const json = JSON.parse(text);
    assert.equal(typeof json.error, 'string', what);
    assert.equal(typeof json.code, 'string', what);
  }
  return res.status;
}

describe('hostile input', () => {
  let app;
  let wav;
  before(async () => {
    app = await startApp({ maxBodyMb: 8 });
    wav = b64(await makeTone({ seconds: 1 }));
  });
  after(() => app.close());

  test('no body, content type, route or method gives a 5xx', async () => {
    for (const route of ROUTES) {
      for (const method of METHODS) {
        const bodies = route.endsWith('-audio') && method === 'POST' ? [...BODIES, ...RAW] : BODIES.slice(0, 3);
        for (const body of bodies) {
          for (const type of route.endsWith('-audio') && method === 'POST' ? TYPES : ['application/json']) {
            await call(`${app.url}${route}`, method, body, type);
          }
        }
      }
    }
    assert.deepEqual(await app.tempEntries(), []);
  });

  test('numbers that do not fit and duplicate keys are 400s', async () => {
    const crop = (body) => call(`${app.url}/crop-audio`, 'POST', body, 'application/json');
    assert.equal(await crop(`{"audioData": "${wav}", "end": 1e999}`), 400);
    assert.equal(await crop(`{"audioData": "${wav}", "start": ${'9'.repeat(400)}}`), 400);
    assert.equal(await crop('['.repeat(100_000)), 400);
  });

  test('the most clips allowed combine; one more is a 400', async () => {
    const { MAX_CLIPS } = await import('../src/validate.js');
    const combine = (n) => call(`${app.url}/combine-audio`, 'POST', JSON.stringify({ audioClips: Array(n).fill(wav) }),
      'application/json');
    assert.equal(await combine(MAX_CLIPS), 200);
    assert.equal(await combine(MAX_CLIPS + 1), 400);
  });
});
