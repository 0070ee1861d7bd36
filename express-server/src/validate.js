// Request validation: turns a parsed JSON body into typed arguments or throws
// a 400 HttpError that names the offending field.
import { badRequest } from './errors.js';

// Standard or URL-safe alphabet, padding optional, whitespace ignored.
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;
const DATA_URL = /^data:[^,]*;base64,/i;
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

function requireObject(body) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw badRequest('invalid_body', 'request body must be a JSON object');
  }
  return body;
}

/** Decodes base64 (optionally a data: URL) to a non-empty Buffer. */
export function decodeBase64(value, field, extra) {
  if (value === undefined || value === null || value === '') {
    throw badRequest('missing_audio', `${field} is required (base64-encoded audio)`, extra);
  }
  if (typeof value !== 'string') {
    throw badRequest('invalid_base64', `${field} must be a base64 string`, extra);
  }
  const text = value.replace(DATA_URL, '').replace(/\s+/g, '');
  if (text.length % 4 === 1 || !BASE64.test(text)) {
    throw badRequest('invalid_base64', `${field} is not valid base64`, extra);
  }
  const buffer = Buffer.from(text, 'base64');
  if (buffer.length === 0) {
    throw badRequest('missing_audio', `${field} decodes to zero bytes`, extra);
  }
  return buffer;
}

/** A JSON number or numeric string; undefined/null/"" mean "not given". */
export function parseSeconds(value, field) {
  if (value === undefined || value === null || value === '') return undefined;
  let number;
  if (typeof value === 'number') number = value;
  else if (typeof value === 'string' && DECIMAL.test(value.trim())) number = Number(value.trim());
  if (number === undefined || !Number.isFinite(number)) {
    throw badRequest('invalid_number', `${field} must be a number of seconds, got ${JSON.stringify(value)}`);
  }
  if (number < 0) throw badRequest('invalid_number', `${field} must not be negative, got ${number}`);
  return number;
}

/** {audioData, start = 0, end = to the end of the clip} */
export function parseCropRequest(body) {
  requireObject(body);
  const start = parseSeconds(body.start, 'start') ?? 0;
  const end = parseSeconds(body.end, 'end');
  if (end !== undefined && end <= start) {
    throw badRequest('invalid_range', `end (${end}) must be greater than start (${start})`);
  }
  const audio = decodeBase64(body.audioData, 'audioData');
  return { audio, start, end };
}

// ffmpeg opens every clip at once (one input and one filter chain each): thousands of tiny clips would
// exhaust file descriptors or the command line and fail as a 500.
export const MAX_CLIPS = 64;

/** {audioClips: [base64, ...]} with at least one clip and at most MAX_CLIPS. */
export function parseCombineRequest(body) {
  requireObject(body);
  const clips = body.audioClips;
  if (clips === undefined || clips === null) {
    throw badRequest('missing_audio', 'audioClips is required (an array of base64-encoded clips)');
  }
  if (!Array.isArray(clips)) throw badRequest('invalid_body', 'audioClips must be an array of base64 strings');
  if (clips.length === 0) throw badRequest('empty_list', 'audioClips must contain at least one clip');
  if (clips.length > MAX_CLIPS) {
    throw badRequest('too_many_clips', `audioClips has ${clips.length} clips; the limit is ${MAX_CLIPS}`);
  }
  return clips.map((clip, index) => decodeBase64(clip, `audioClips[${index}]`, { index }));
}
