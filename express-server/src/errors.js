// Errors carry their HTTP status and a machine-readable code; the one error
// handler in app.js renders them as {"error", "code"} JSON.

export class HttpError extends Error {
  constructor(status, code, message, extra = {}, headers = {}) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.code = code;
    this.extra = extra; // merged into the JSON body (e.g. {"index": 2})
    this.headers = headers; // set on the response (e.g. Retry-After)
  }
}

export const badRequest = (code, message, extra) => new HttpError(400, code, message, extra);

export class ConfigError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ConfigError';
  }
}
