// A real HTTP server on 127.0.0.1 that answers from a route table and records
// every request, so the API client's real fetch() calls can be checked:
// headers, bodies, streaming, and how it treats each status code.
import { createServer } from "node:http";

export async function startServer(routes) {
  const requests = [];
  const server = createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = Buffer.concat(chunks).toString("utf8");
    const record = { method: req.method, path: req.url, headers: req.headers, body };
    requests.push(record);
    const handler = routes[`${req.method} ${req.url.split("?")[0]}`];
    if (!handler) {
      res.writeHead(404, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ error: "not found", code: "not_found" }));
      return;
    }
    await handler(req, res, record);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise((resolve) => { server.closeAllConnections?.(); server.close(resolve); }),
  };
}

export function json(res, status, value, headers = {}) {
  res.writeHead(status, { "Content-Type": "application/json", ...headers });
  res.end(JSON.stringify(value));
}
