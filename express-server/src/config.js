// The only module that reads the environment. Every setting has a default;
// README.md lists them all.
import os from 'node:os';

import { ConfigError } from './errors.js';

export const DEFAULTS = Object.freeze({
  port: 3000, // EXPRESS_PORT
  host: '0.0.0.0', // EXPRESS_HOST
  maxBodyMb: 100, // SEGUE_MAX_BODY_MB: largest JSON request body
  ffmpegPath: 'ffmpeg', // FFMPEG_PATH: binary name (looked up on PATH) or path
  ffmpegTimeoutSeconds: 120, // SEGUE_FFMPEG_TIMEOUT_SECONDS: per ffmpeg run
  mp3Bitrate: '192k', // SEGUE_MP3_BITRATE: bitrate of every MP3 we return
  ffmpegMaxConcurrent: 0, // SEGUE_FFMPEG_MAX_CONCURRENT: ffmpeg processes at once (0 = number of cores)
  ffmpegWaitSeconds: 10, // SEGUE_FFMPEG_WAIT_SECONDS: wait for a free slot before 503 ffmpeg_busy
  tmpDir: null, // TMPDIR (via os.tmpdir()): where per-request temp dirs go
});

function number(env, name, fallback, { min = 0, integer = false } = {}) {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || (integer && !Number.isInteger(value))) {
    throw new ConfigError(`${name} must be ${integer ? 'an integer' : 'a number'} >= ${min}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function string(env, name, fallback) {
  const raw = env[name];
  return raw === undefined || raw.trim() === '' ? fallback : raw.trim();
}

export function loadConfig(env = process.env) {
  const maxBodyMb = number(env, 'SEGUE_MAX_BODY_MB', DEFAULTS.maxBodyMb);
  if (maxBodyMb <= 0) throw new ConfigError('SEGUE_MAX_BODY_MB must be > 0');
  const ffmpegTimeoutSeconds = number(env, 'SEGUE_FFMPEG_TIMEOUT_SECONDS', DEFAULTS.ffmpegTimeoutSeconds);
  if (ffmpegTimeoutSeconds <= 0) throw new ConfigError('SEGUE_FFMPEG_TIMEOUT_SECONDS must be > 0');
  return {
    port: number(env, 'EXPRESS_PORT', DEFAULTS.port, { integer: true }),
    host: string(env, 'EXPRESS_HOST', DEFAULTS.host),
    maxBodyMb,
    ffmpegPath: string(env, 'FFMPEG_PATH', DEFAULTS.ffmpegPath),
    ffmpegTimeoutSeconds,
    mp3Bitrate: string(env, 'SEGUE_MP3_BITRATE', DEFAULTS.mp3Bitrate),
    ffmpegMaxConcurrent: number(env, 'SEGUE_FFMPEG_MAX_CONCURRENT', DEFAULTS.ffmpegMaxConcurrent, { integer: true }),
    ffmpegWaitSeconds: number(env, 'SEGUE_FFMPEG_WAIT_SECONDS', DEFAULTS.ffmpegWaitSeconds),
    tmpDir: os.tmpdir(),
  };
}

// createApp() takes a partial config (tests pass only what they change).
/** The ffmpeg cap a config means: 0 = one per core. */
export function ffmpegSlots(config) {
  return config.ffmpegMaxConcurrent > 0 ? config.ffmpegMaxConcurrent : os.availableParallelism();
}

export function resolveConfig(options = {}) {
  const config = { ...DEFAULTS, tmpDir: os.tmpdir() };
  for (const [key, value] of Object.entries(options)) {
    if (value !== undefined && key in DEFAULTS) config[key] = value;
  }
  return config;
}
