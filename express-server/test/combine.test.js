import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { b64, makeTone, makeVideoOnly, postJson, probe, startApp } from './helpers.js';

async function combine(url, body) {
  return postJson(`${url}/combine-audio`, body);
}

describe('POST /combine-audio', () => {
  let app;
  before(async () => {
    app = await startApp();
  });
  after(() => app.close());

  test('plays clips of different rates and channel counts one after another', async () => {
    const monoWav = b64(await makeTone({ seconds: 1.5, rate: 22050, channels: 1, format: 'wav' }));
    const stereoFlac = b64(await makeTone({ seconds: 2, rate: 48000, channels: 2, format: 'flac', frequency: 660 }));
    const res = await combine(app.url, { audioClips: [monoWav, stereoFlac] });
    assert.equal(res.status, 200, res.text);
    assert.match(res.headers.get('content-type'), /^text\/plain/);
    const info = await probe(Buffer.from(res.text, 'base64'));
    assert.equal(info.codec, 'mp3');
    assert.equal(info.sampleRate, 44100);
    assert.equal(info.channels, 2);
    assert.ok(Math.abs(info.duration - 3.5) <= 0.1, `duration ${info.duration}, expected 3.5`);
  });

  test('mixes compressed formats and accepts a single clip', async () => {
    const mp3 = b64(await makeTone({ seconds: 1, rate: 32000, format: 'mp3' }));
    const ogg = b64(await makeTone({ seconds: 1, rate: 16000, channels: 2, format: 'ogg' }));
    const res = await combine(app.url, { audioClips: [mp3, ogg, mp3] });
    assert.equal(res.status, 200, res.text);
    const { duration } = await probe(Buffer.from(res.text, 'base64'));
    assert.ok(Math.abs(duration - 3) <= 0.15, `duration ${duration}, expected 3`);
    const single = await combine(app.url, { audioClips: [ogg] });
    assert.equal(single.status, 200, single.text);
  });

  test('rejects a missing, non-array or empty list', async () => {
    for (const [body, code] of [
      [{}, 'missing_audio'],
      [{ audioClips: 'abc' }, 'invalid_body'],
      [{ audioClips: {} }, 'invalid_body'],
      [{ audioClips: [] }, 'empty_list'],
    ]) {
      const res = await combine(app.url, body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(res.json.code, code, res.text);
    }
  });

  test('names the index of a bad clip', async () => {
    const good = b64(await makeTone({ seconds: 0.5 }));
    const notBase64 = await combine(app.url, { audioClips: [good, good, '***'] });
    assert.equal(notBase64.status, 400);
    assert.equal(notBase64.json.code, 'invalid_base64');
    assert.equal(notBase64.json.index, 2);
    assert.match(notBase64.json.error, /audioClips\[2\]/);

    const notString = await combine(app.url, { audioClips: [good, 7] });
    assert.equal(notString.json.index, 1);

    const garbage = b64(Buffer.from('definitely not audio '.repeat(50)));
    const undecodable = await combine(app.url, { audioClips: [good, garbage] });
    assert.equal(undecodable.status, 400, undecodable.text);
    assert.equal(undecodable.json.code, 'undecodable_audio');
    assert.equal(undecodable.json.index, 1);
    assert.match(undecodable.json.error, /^audioClips\[1\] could not be decoded: .*Invalid data found/);

    const silentVideo = b64(await makeVideoOnly());
    const noAudio = await combine(app.url, { audioClips: [silentVideo, good] });
    assert.equal(noAudio.status, 400, noAudio.text);
    assert.equal(noAudio.json.index, 0);
    assert.match(noAudio.json.error, /matches no streams/);
  });

  test('leaves no temp files behind', async () => {
    assert.deepEqual(await app.tempEntries(), []);
  });
});
