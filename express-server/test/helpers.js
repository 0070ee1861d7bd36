// Shared test helpers: real ffmpeg fixtures, a real app on port 0, ffprobe.
// (node --test also runs this file; it defines no tests.)
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import { createApp } from '../app.js';

const run = promisify(execFile);

const CODECS = {
  wav: ['-c:a', 'pcm_s16le'],
  mp3: ['-c:a', 'libmp3lame'],
  flac: ['-c:a', 'flac'],
  ogg: ['-c:a', 'libvorbis'],
  m4a: ['-c:a', 'aac'],
};

export async function scratchDir() {
  return mkdtemp(path.join(os.tmpdir(), 'segue-test-'));
}

/** A real sine tone encoded by ffmpeg; returns the file's bytes. */
export async function makeTone({ seconds = 5, rate = 44100, channels = 1, format = 'wav', frequency = 440 } = {}) {
  const dir = await scratchDir();
  try {
    const file = path.join(dir, `tone.${format}`);
    await run('ffmpeg', [
      '-hide_banner', '-nostdin', '-v', 'error', '-y',
      '-f', 'lavfi', '-i', `sine=frequency=${frequency}:sample_rate=${rate}:duration=${seconds}`,
      '-ac', String(channels), ...CODECS[format], file,
    ]);
    return await readFile(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A video-only MP4 (no audio stream). */
export async function makeVideoOnly() {
  const dir = await scratchDir();
  try {
    const file = path.join(dir, 'video.mp4');
    await run('ffmpeg', ['-hide_banner', '-nostdin', '-v', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc=duration=1:size=64x64', '-c:v', 'mpeg4', file]);
    return await readFile(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** {codec, duration, sampleRate, channels} of an audio buffer, via ffprobe. */
export async function probe(buffer) {
  const dir = await scratchDir();
  try {
    const file = path.join(dir, 'probe');
    await writeFile(file, buffer);
    const { stdout } = await run('ffprobe', [
      '-v', 'error', '-print_format', 'json', '-show_format', '-show_streams', '-select_streams', 'a:0', file,
    ]);
    const info = JSON.parse(stdout);
    const stream = info.streams[0];
    return {
      format: info.format.format_name,
      codec: stream.codec_name,
      duration: Number(info.format.duration),
      sampleRate: Number(stream.sample_rate),
      channels: stream.channels,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Starts createApp(options) on 127.0.0.1:0 with its own temp dir, so tests can
 * check that requests leave nothing behind.
 */
export async function startApp(options = {}) {
  const tmpDir = options.tmpDir ?? (await scratchDir());
  const lines = [];
  const app = createApp({ log: (line) => lines.push(line), ...options, tmpDir });
  const server = await new Promise((resolve, reject) => {
    const s = app.listen(0, '127.0.0.1', (err) => (err ? reject(err) : resolve(s)));
  });
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    slots: app.get('segue.slots'),
    tmpDir,
    logLines: lines,
    tempEntries: () => readdir(tmpDir),
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      if (!options.tmpDir) await rm(tmpDir, { recursive: true, force: true });
    },
  };
}

export async function postJson(url, body, headers = {}) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, text, json };
}

export const b64 = (buffer) => Buffer.from(buffer).toString('base64');
