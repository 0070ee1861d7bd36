// createApp(options) builds the Express app; server.js only reads the
// environment and listens. Tests start this on port 0.
import express from 'express';

import { combineAudio, cropAudio } from './src/audio.js';
import { ffmpegSlots, resolveConfig } from './src/config.js';
import { HttpError } from './src/errors.js';
import { ffmpegVersion } from './src/ffmpeg.js';
import { Slots } from './src/slots.js';
import { parseCombineRequest, parseCropRequest } from './src/validate.js';

function cors(req, res, next) {
  res.set('Access-Control-Allow-Origin', '*');
  if (req.method === 'OPTIONS') {
    res.set('Access-Control-Allow-Methods', 'GET, POST, OPTIONS');
    res.set('Access-Control-Allow-Headers', req.get('Access-Control-Request-Headers') || 'Content-Type');
    res.set('Access-Control-Max-Age', '86400');
    return res.status(204).end();
  }
  return next();
}

function requestLog(log) {
  return (req, res, next) => {
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const size = res.get('Content-Length') ?? '-';
      const code = res.locals.errorCode ? ` ${res.locals.errorCode}` : '';
      log(`${new Date().toISOString()} ${req.method} ${req.originalUrl} ${res.statusCode}${code} ${ms.toFixed(1)}ms ${size}B`);
    });
    next();
  };
}

// An empty body falls through (and fails validation with a 400 naming the
// missing field); a non-empty body must be JSON.
function requireJson(req, res, next) {
  const empty = req.get('Content-Length') === '0' || (!req.get('Content-Type') && !req.get('Transfer-Encoding'));
  if (!empty && req.is('application/json') === false) {
    return next(new HttpError(415, 'unsupported_media_type', 'send the request body as JSON with Content-Type: application/json'));
  }
  return next();
}

// body-parser errors carry `type`; map them to our JSON shape.
function toHttpError(err, maxBodyMb) {
  if (err instanceof HttpError) return err;
  if (err.type === 'entity.too.large') {
    return new HttpError(413, 'payload_too_large', `request body exceeds ${maxBodyMb} MB (SEGUE_MAX_BODY_MB)`);
  }
  if (err.type === 'entity.parse.failed') return new HttpError(400, 'invalid_json', `malformed JSON: ${err.message}`);
  if (err.type === 'encoding.unsupported' || err.type === 'charset.unsupported') {
    return new HttpError(415, 'unsupported_media_type', err.message);
  }
  if (err.type === 'request.aborted') return new HttpError(400, 'request_aborted', 'request aborted by the client');
  if (Number.isInteger(err.status) && err.status >= 400 && err.status < 500) {
    return new HttpError(err.status, 'bad_request', err.expose ? err.message : 'bad request');
  }
  return null;
}

export function createApp(options = {}) {
  const resolved = resolveConfig(options);
  const slots = new Slots(ffmpegSlots(resolved), resolved.ffmpegWaitSeconds);
  const config = { ...resolved, slots };
  const log = options.log ?? ((line) => console.log(line));
  const app = express();
  app.disable('x-powered-by');
  app.set('segue.config', config);
  app.set('segue.slots', slots);

  app.use(requestLog(log));
  app.use(cors);

  const json = express.json({ limit: Math.floor(config.maxBodyMb * 1024 * 1024), strict: false });

  // The version is cached for a minute: a flood of /health must not spawn a flood of ffmpeg.
  let versionCache = null;
  app.get('/health', async (req, res) => {
    try {
      if (!versionCache || Date.now() - versionCache.at > 60_000) {
        versionCache = null;
        versionCache = { at: Date.now(), version: await ffmpegVersion({ ffmpegPath: config.ffmpegPath }) };
      }
      const version = versionCache.version;
      res.json({ status: 'live', ffmpeg: version, ffmpeg_slots: { limit: slots.limit, busy: slots.active, waiting: slots.waiting } });
    } catch (err) {
      res.status(503).json({ status: 'down', ffmpeg: null, error: err.message });
    }
  });

  app.post('/crop-audio', requireJson, json, async (req, res) => {
    const request = parseCropRequest(req.body);
    const mp3 = await cropAudio(request, config);
    res.type('text/plain').send(mp3.toString('base64'));
  });

  app.post('/combine-audio', requireJson, json, async (req, res) => {
    const clips = parseCombineRequest(req.body);
    const mp3 = await combineAudio(clips, config);
    res.type('text/plain').send(mp3.toString('base64'));
  });

  app.use((req, res) => {
    res.status(404).json({ error: `no route for ${req.method} ${req.path}`, code: 'not_found' });
  });

  // Express 5 forwards rejected promises from async handlers here.
  // eslint-disable-next-line no-unused-vars
  app.use((err, req, res, next) => {
    const httpError = toHttpError(err, config.maxBodyMb);
    if (!httpError) log(`${new Date().toISOString()} unhandled error on ${req.method} ${req.originalUrl}: ${err.stack || err}`);
    const error = httpError ?? new HttpError(500, 'internal_error', 'internal server error');
    res.locals.errorCode = error.code;
    if (res.headersSent) return req.socket.destroy();
    // A 413 arrives before the body was read; close rather than drain 100 MB.
    if (error.status === 413) res.set('Connection', 'close');
    for (const [name, value] of Object.entries(error.headers ?? {})) res.set(name, value);
    return res.status(error.status).json({ error: error.message, code: error.code, ...error.extra });
  });

  return app;
}
