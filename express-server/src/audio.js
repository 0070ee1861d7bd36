// Crop and combine. Each request gets its own temp dir (inputs must be files:
// MP4/M4A and some WAVs need a seekable input), removed in `finally`.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { HttpError, badRequest } from './errors.js';
import { runFfmpeg, summarizeStderr } from './ffmpeg.js';

export const TEMP_PREFIX = 'segue-audio-';
// One output format for everything we return. libmp3lame cannot encode above
// 48 kHz or more than 2 channels, so inputs are always brought to this.
const SAMPLE_RATE = 44100;
const CHANNEL_LAYOUT = 'stereo';

async function withTempDir(config, fn) {
  const dir = await mkdtemp(path.join(config.tmpDir, TEMP_PREFIX));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// ffmpeg's time syntax has no exponent form, so never pass String(1e-7).
const seconds = (value) => value.toFixed(6);

function encodeArgs(config) {
  return ['-map_metadata', '-1', '-c:a', 'libmp3lame', '-b:a', config.mp3Bitrate, '-f', 'mp3'];
}

// Input problems (garbage, no audio stream, bad clip) are the client's; anything
// else ffmpeg fails on is ours.
const INPUT_PROBLEM =
  /^(input|clip-\d+):|matches no streams|Invalid data found|moov atom not found|could not find codec parameters|Error while decoding|does not contain any stream/i;

function mapFailure(err, dir, inputLabel) {
  if (err instanceof HttpError || err.name !== 'FfmpegFailure') throw err;
  const reason = summarizeStderr(err.stderr, [dir]) || `ffmpeg exited with ${err.exitCode ?? err.signal}`;
  if (err.signal) {
    throw new HttpError(500, 'ffmpeg_failed', `ffmpeg was killed by ${err.signal}: ${reason}`);
  }
  const clip = /\bclip-(\d+)\b/.exec(reason);
  if (clip) {
    const index = Number(clip[1]);
    throw badRequest('undecodable_audio', `audioClips[${index}] could not be decoded: ${reason}`, { index });
  }
  if (INPUT_PROBLEM.test(reason)) {
    throw badRequest('undecodable_audio', `${inputLabel} could not be decoded: ${reason}`);
  }
  throw new HttpError(500, 'ffmpeg_failed', `ffmpeg failed: ${reason}`);
}

const EMPTY_OUTPUT = /Output file is empty, nothing was encoded/;

/** Crops [start, end) (end undefined = to the end); returns an MP3 Buffer. */
export async function cropAudio({ audio, start, end }, config) {
  return withTempDir(config, async (dir) => {
    const input = path.join(dir, 'input');
    const output = path.join(dir, 'output.mp3');
    await writeFile(input, audio);
    const args = ['-hide_banner', '-nostdin', '-nostats', '-v', 'warning', '-y'];
    // -ss before -i seeks the input; ffmpeg still trims audio sample-accurately.
    if (start > 0) args.push('-ss', seconds(start));
    args.push('-i', input);
    if (end !== undefined) args.push('-t', seconds(end - start));
    args.push('-map', '0:a:0', '-vn', '-ar', String(SAMPLE_RATE), '-ac', '2', ...encodeArgs(config), output);
    let stderr;
    try {
      ({ stderr } = await runFfmpeg(args, { ffmpegPath: config.ffmpegPath, timeoutSeconds: config.ffmpegTimeoutSeconds, slots: config.slots }));
    } catch (err) {
      mapFailure(err, dir, 'audioData');
    }
    if (EMPTY_OUTPUT.test(stderr)) {
      if (start > 0) throw badRequest('empty_range', `start (${start} s) is at or beyond the end of the audio`);
      throw badRequest('empty_audio', 'audioData contains no decodable audio samples');
    }
    return readFile(output);
  });
}

// Some failures (a clip without an audio stream) name the filtergraph, not the
// input; only on that error path, open each clip alone to find the culprit.
async function blameClip(count, dir, config) {
  for (let index = 0; index < count; index += 1) {
    const args = ['-hide_banner', '-nostdin', '-v', 'error', '-i', path.join(dir, `clip-${index}`)];
    args.push('-map', '0:a:0', '-frames:a', '1', '-f', 'null', '-');
    try {
      await runFfmpeg(args, { ffmpegPath: config.ffmpegPath, timeoutSeconds: config.ffmpegTimeoutSeconds, slots: config.slots });
    } catch (err) {
      if (err.name !== 'FfmpegFailure') throw err;
      const reason = summarizeStderr(err.stderr, [dir]) || 'unknown error';
      throw badRequest('undecodable_audio', `audioClips[${index}] could not be decoded: ${reason}`, { index });
    }
  }
}

/** Concatenates clips in order (any rates/channels); returns an MP3 Buffer. */
export async function combineAudio(clips, config) {
  return withTempDir(config, async (dir) => {
    const args = ['-hide_banner', '-nostdin', '-nostats', '-v', 'warning', '-y'];
    const labels = [];
    const filters = [];
    for (const [index, clip] of clips.entries()) {
      const file = path.join(dir, `clip-${index}`);
      await writeFile(file, clip);
      args.push('-i', file);
      // concat needs identical formats on every input; aformat converts.
      filters.push(
        `[${index}:a:0]aformat=sample_fmts=fltp:sample_rates=${SAMPLE_RATE}:channel_layouts=${CHANNEL_LAYOUT}[a${index}]`,
      );
      labels.push(`[a${index}]`);
    }
    filters.push(`${labels.join('')}concat=n=${clips.length}:v=0:a=1[out]`);
    const output = path.join(dir, 'output.mp3');
    args.push('-filter_complex', filters.join(';'), '-map', '[out]', ...encodeArgs(config), output);
    let stderr;
    try {
      ({ stderr } = await runFfmpeg(args, { ffmpegPath: config.ffmpegPath, timeoutSeconds: config.ffmpegTimeoutSeconds, slots: config.slots }));
    } catch (err) {
      if (err.name === 'FfmpegFailure' && !err.signal && !/\bclip-\d+\b/.test(err.stderr)) {
        await blameClip(clips.length, dir, config); // throws if one clip is at fault
      }
      mapFailure(err, dir, 'audioClips');
    }
    if (EMPTY_OUTPUT.test(stderr)) throw badRequest('empty_audio', 'the clips contain no audio');
    return readFile(output);
  });
}
