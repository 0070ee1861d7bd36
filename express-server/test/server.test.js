// server.js as a process: reads the environment, serves, exits 0 on signals.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const serverJs = fileURLToPath(new URL('../server.js', import.meta.url));

async function startServer(env) {
  const child = spawn(process.execPath, [serverJs], {
    env: { ...process.env, EXPRESS_HOST: '127.0.0.1', EXPRESS_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stderr.on('data', (chunk) => {
    output += chunk;
  });
  const port = await new Promise((resolve, reject) => {
    child.stdout.on('data', (chunk) => {
      output += chunk;
      const match = /listening on [^\s]+:(\d+)/.exec(output);
      if (match) resolve(Number(match[1]));
    });
    child.once('exit', (code) => reject(new Error(`server exited early (${code}): ${output}`)));
  });
  return { child, port, output: () => output };
}

for (const signal of ['SIGTERM', 'SIGINT']) {
  test(`serves requests and exits 0 on ${signal}`, async () => {
    const { child, port, output } = await startServer({});
    const res = await fetch(`http://127.0.0.1:${port}/health`);
    assert.equal(res.status, 200);
    assert.equal((await res.json()).status, 'live');
    const exited = once(child, 'exit');
    child.kill(signal);
    const [code] = await exited;
    assert.equal(code, 0, output());
    assert.match(output(), /GET \/health 200/);
  });
}

test('exits with a message on invalid configuration', async () => {
  const child = spawn(process.execPath, [serverJs], {
    env: { ...process.env, SEGUE_MAX_BODY_MB: 'lots' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const [code] = await once(child, 'exit');
  assert.equal(code, 2);
  assert.match(stderr, /SEGUE_MAX_BODY_MB/);
});
