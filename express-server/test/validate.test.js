import assert from 'node:assert/strict';
import { test } from 'node:test';

import { HttpError } from '../src/errors.js';
import { decodeBase64, parseCombineRequest, parseCropRequest, parseSeconds } from '../src/validate.js';

const code = (c) => (err) => err instanceof HttpError && err.status === 400 && err.code === c;

test('parseSeconds accepts numbers and numeric strings', () => {
  assert.equal(parseSeconds(1.5, 'start'), 1.5);
  assert.equal(parseSeconds('2', 'start'), 2);
  assert.equal(parseSeconds(' 0.25 ', 'start'), 0.25);
  assert.equal(parseSeconds('.5', 'start'), 0.5);
  assert.equal(parseSeconds('1e1', 'start'), 10);
  assert.equal(parseSeconds(undefined, 'start'), undefined);
  assert.equal(parseSeconds(null, 'start'), undefined);
  assert.equal(parseSeconds('', 'start'), undefined);
});

test('parseSeconds rejects non-numbers and negatives', () => {
  for (const value of ['abc', '1,5', '0x10', 'Infinity', 'NaN', true, [], {}, -0.5, '-1']) {
    assert.throws(() => parseSeconds(value, 'start'), code('invalid_number'), JSON.stringify(value));
  }
});

test('decodeBase64 accepts standard, URL-safe, unpadded, wrapped and data: URLs', () => {
  const bytes = Buffer.from([0, 1, 2, 250, 251, 252, 253]);
  const std = bytes.toString('base64');
  assert.deepEqual(decodeBase64(std, 'x'), bytes);
  assert.deepEqual(decodeBase64(bytes.toString('base64url'), 'x'), bytes);
  assert.deepEqual(decodeBase64(std.replace(/=+$/, ''), 'x'), bytes);
  assert.deepEqual(decodeBase64(`${std.slice(0, 4)}\n${std.slice(4)}`, 'x'), bytes);
  assert.deepEqual(decodeBase64(`data:audio/mpeg;base64,${std}`, 'x'), bytes);
});

test('decodeBase64 rejects non-base64', () => {
  assert.throws(() => decodeBase64(undefined, 'x'), code('missing_audio'));
  assert.throws(() => decodeBase64('', 'x'), code('missing_audio'));
  assert.throws(() => decodeBase64('====', 'x'), code('invalid_base64'));
  assert.throws(() => decodeBase64('==', 'x'), code('missing_audio'));
  assert.throws(() => decodeBase64('ab=c', 'x'), code('invalid_base64'));
  assert.throws(() => decodeBase64('a', 'x'), code('invalid_base64'));
  assert.throws(() => decodeBase64('héllo', 'x'), code('invalid_base64'));
  assert.throws(() => decodeBase64(['abcd'], 'x'), code('invalid_base64'));
});

test('parseCropRequest defaults start to 0 and leaves end open', () => {
  const { start, end, audio } = parseCropRequest({ audioData: 'AAAA' });
  assert.equal(start, 0);
  assert.equal(end, undefined);
  assert.equal(audio.length, 3);
  assert.throws(() => parseCropRequest({ audioData: 'AAAA', start: 5, end: 4 }), code('invalid_range'));
  assert.throws(() => parseCropRequest(null), code('invalid_body'));
  assert.throws(() => parseCropRequest('x'), code('invalid_body'));
});

test('parseCombineRequest names the bad index', () => {
  assert.equal(parseCombineRequest({ audioClips: ['AAAA', 'AAAA'] }).length, 2);
  assert.throws(
    () => parseCombineRequest({ audioClips: ['AAAA', '!'] }),
    (err) => err.code === 'invalid_base64' && err.extra.index === 1 && /audioClips\[1\]/.test(err.message),
  );
});
