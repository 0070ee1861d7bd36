// Runs the system ffmpeg with argument arrays (execFile, never a shell), and
// turns its failures into HttpErrors with a short, readable reason.
import { execFile } from 'node:child_process';
import path from 'node:path';

import { HttpError } from './errors.js';

const MAX_STDERR = 4 * 1024 * 1024;

// Lines ffmpeg prints after the real reason; they explain nothing.
const NOISE = [
  /^To ignore this, add a trailing '\?' to the map\.?$/,
  /^Conversion failed!?$/,
  /^Error opening (input|output) files?/,
  /^Exiting normally/,
  /^Error while filtering/i,
];

/**
 * The last meaningful stderr line, without "[mp3 @ 0x...]" prefixes and with
 * temp paths cut down to file names (clients never see our temp dirs).
 */
export function summarizeStderr(stderr, tmpPaths = []) {
  let text = String(stderr || '');
  for (const p of tmpPaths) text = text.split(p + path.sep).join('').split(p).join('');
  const lines = text
    .split(/\r?\n/)
    .map((line) => line.replace(/^\s*(\[[^\]]+ @ 0x[0-9a-f]+\]\s*)+/i, '').trim())
    .filter((line) => line && !NOISE.some((re) => re.test(line)));
  const last = lines.at(-1) || '';
  return last.length > 500 ? `${last.slice(0, 497)}...` : last;
}

function unavailable(ffmpegPath, err) {
  const reason = err.code === 'ENOENT' ? 'not found' : err.code === 'EACCES' ? 'not executable' : err.message;
  return new HttpError(503, 'ffmpeg_unavailable', `ffmpeg (${ffmpegPath}) cannot be run: ${reason}`);
}

/**
 * Runs ffmpeg; resolves {stdout, stderr} on exit 0.
 * Rejects with HttpError: 503 ffmpeg_unavailable (spawn failed), 504
 * ffmpeg_timeout, or a FfmpegFailure (non-zero exit) that the caller maps.
 */
export function runFfmpeg(args, { ffmpegPath, timeoutSeconds, slots }) {
  // Every ffmpeg a request starts takes a slot first (see slots.js); the version probe does not.
  if (slots) return slots.run(() => runFfmpeg(args, { ffmpegPath, timeoutSeconds }));
  return new Promise((resolve, reject) => {
    execFile(
      ffmpegPath,
      args,
      {
        timeout: Math.max(1, Math.round(timeoutSeconds * 1000)),
        killSignal: 'SIGKILL',
        maxBuffer: MAX_STDERR,
        windowsHide: true,
      },
      (err, stdout, stderr) => {
        if (!err) return resolve({ stdout, stderr });
        if (typeof err.code === 'string' && err.code !== 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER') {
          return reject(unavailable(ffmpegPath, err)); // spawn failed: ENOENT, EACCES, ...
        }
        if (err.killed && err.signal === 'SIGKILL') {
          return reject(new HttpError(504, 'ffmpeg_timeout', `ffmpeg took longer than ${timeoutSeconds} s and was stopped`));
        }
        const failure = new Error(`ffmpeg exited with ${err.code ?? err.signal}`);
        failure.name = 'FfmpegFailure';
        failure.exitCode = err.code;
        failure.signal = err.signal;
        failure.stderr = String(stderr || '');
        reject(failure);
      },
    );
  });
}

/** The version from the first line of `ffmpeg -version`, e.g. "5.1.9-0+deb12u1". */
export async function ffmpegVersion({ ffmpegPath, timeoutSeconds = 10 }) {
  let stdout;
  try {
    ({ stdout } = await runFfmpeg(['-hide_banner', '-version'], { ffmpegPath, timeoutSeconds }));
  } catch (err) {
    if (err instanceof HttpError) throw err;
    throw new HttpError(503, 'ffmpeg_unavailable', `ffmpeg -version failed: ${summarizeStderr(err.stderr) || err.message}`);
  }
  const first = String(stdout).split(/\r?\n/)[0].trim();
  const match = /^ffmpeg version (\S+)/.exec(first);
  if (!match) {
    throw new HttpError(503, 'ffmpeg_unavailable', `unexpected ffmpeg -version output: ${first.slice(0, 200)}`);
  }
  return match[1];
}
