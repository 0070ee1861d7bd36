// This browser's clips, kept in IndexedDB (audio as Blobs), so the history survives a reload.
// Entries: {id, createdAt, kind: "generate"|"continue"|"crop", status: "running"|"done"|"failed",
//           taskId, parentId, title, subtitle, boundary, duration, peaks: number[], blob, error}.

const DB_NAME = "segue";
const STORE = "clips";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => {
      const store = request.result.createObjectStore(STORE, { keyPath: "id" });
      store.createIndex("createdAt", "createdAt");
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

let dbPromise = null;
const db = () => (dbPromise ??= open());

async function run(mode, work) {
  const database = await db();
  return new Promise((resolve, reject) => {
    const tx = database.transaction(STORE, mode);
    const result = work(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(result && "result" in result ? result.result : undefined);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

export const history = {
  put: (entry) => run("readwrite", (store) => store.put(entry)),
  get: (id) => run("readonly", (store) => store.get(id)),
  remove: (id) => run("readwrite", (store) => store.delete(id)),
  clear: () => run("readwrite", (store) => store.clear()),
  async all() {
    const entries = await run("readonly", (store) => store.getAll());
    return entries.sort((a, b) => b.createdAt - a.createdAt);
  },
  async update(id, changes) {
    const entry = await history.get(id);
    if (!entry) return null;
    const next = { ...entry, ...changes };
    await history.put(next);
    return next;
  },
};

export function newId(prefix) {
  const random = crypto.getRandomValues(new Uint32Array(2));
  return `${prefix}-${Date.now().toString(36)}-${random[0].toString(36)}${random[1].toString(36)}`;
}
