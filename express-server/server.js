// Reads the environment, starts the app, stops cleanly on SIGTERM/SIGINT.
import { createApp } from './app.js';
import { loadConfig } from './src/config.js';

let config;
try {
  config = loadConfig();
} catch (err) {
  console.error(`segue-express-server: ${err.message}`);
  process.exit(2);
}

const app = createApp(config);
const server = app.listen(config.port, config.host, (err) => {
  if (err) {
    console.error(`segue-express-server: cannot listen on ${config.host}:${config.port}: ${err.message}`);
    process.exit(1);
  }
  const { address, port } = server.address();
  console.log(`segue-express-server listening on ${address}:${port} (ffmpeg: ${config.ffmpegPath})`);
});

// In-flight ffmpeg jobs may finish; after this long we stop waiting.
const SHUTDOWN_GRACE_MS = 10_000;

function shutdown(signal) {
  console.log(`segue-express-server: ${signal} received, closing`);
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  setTimeout(() => {
    console.error('segue-express-server: requests still running after grace period, exiting');
    server.closeAllConnections();
    process.exit(0);
  }, SHUTDOWN_GRACE_MS).unref();
}

process.once('SIGTERM', () => shutdown('SIGTERM'));
process.once('SIGINT', () => shutdown('SIGINT'));
