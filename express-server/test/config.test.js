import assert from 'node:assert/strict';
import os from 'node:os';
import { test } from 'node:test';

import { loadConfig } from '../src/config.js';
import { ConfigError } from '../src/errors.js';

test('defaults', () => {
  assert.deepEqual(loadConfig({}), {
    port: 3000,
    host: '0.0.0.0',
    maxBodyMb: 100,
    ffmpegPath: 'ffmpeg',
    ffmpegTimeoutSeconds: 120,
    mp3Bitrate: '192k',
    ffmpegMaxConcurrent: 0,
    ffmpegWaitSeconds: 10,
    tmpDir: os.tmpdir(),
  });
});

test('reads the environment', () => {
  const config = loadConfig({
    EXPRESS_PORT: '8081',
    EXPRESS_HOST: '127.0.0.1',
    SEGUE_MAX_BODY_MB: '12.5',
    FFMPEG_PATH: '/opt/ffmpeg/bin/ffmpeg',
    SEGUE_FFMPEG_TIMEOUT_SECONDS: '30',
    SEGUE_MP3_BITRATE: '128k',
  });
  assert.equal(config.port, 8081);
  assert.equal(config.host, '127.0.0.1');
  assert.equal(config.maxBodyMb, 12.5);
  assert.equal(config.ffmpegPath, '/opt/ffmpeg/bin/ffmpeg');
  assert.equal(config.ffmpegTimeoutSeconds, 30);
  assert.equal(config.mp3Bitrate, '128k');
});

test('empty values fall back to defaults', () => {
  assert.equal(loadConfig({ EXPRESS_PORT: '', FFMPEG_PATH: ' ' }).port, 3000);
  assert.equal(loadConfig({ FFMPEG_PATH: ' ' }).ffmpegPath, 'ffmpeg');
});

test('rejects nonsense', () => {
  assert.throws(() => loadConfig({ EXPRESS_PORT: 'abc' }), ConfigError);
  assert.throws(() => loadConfig({ EXPRESS_PORT: '1.5' }), ConfigError);
  assert.throws(() => loadConfig({ SEGUE_MAX_BODY_MB: '0' }), ConfigError);
  assert.throws(() => loadConfig({ SEGUE_FFMPEG_TIMEOUT_SECONDS: '-1' }), ConfigError);
});
