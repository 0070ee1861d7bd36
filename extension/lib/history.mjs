// Generation history in extension storage: newest first, metadata only (the
// audio stays on the server and is fetched when played), capped so
// chrome.storage.local never approaches its quota.

export const HISTORY_KEY = "history";
export const HISTORY_LIMIT = 50;

/** Fields of a task document worth keeping in an entry. */
const TASK_FIELDS = ["status", "progress", "model", "error", "queue_position", "eta_seconds", "duration_seconds",
  "sample_rate", "bpm", "completed_at", "cancel_requested"];

export function entryUpdateFromTask(task) {
  const update = {};
  for (const key of TASK_FIELDS) if (task[key] !== undefined) update[key] = task[key];
  if (task.status === "completed") update.progress = 100;
  return update;
}

/**
 * @param storage  anything with chrome.storage.local's promise API: get(key) and set(object)
 * @param now  clock, injectable for tests
 */
export function createHistory(storage, { limit = HISTORY_LIMIT, now = () => Date.now() } = {}) {
  // One write at a time, so two quick updates never read the same old list
  // and the second silently drops the first.
  let queue = Promise.resolve();
  const serial = (work) => {
    const next = queue.then(work, work);
    queue = next.catch(() => {});
    return next;
  };

  async function read() {
    const list = (await storage.get(HISTORY_KEY))[HISTORY_KEY];
    return Array.isArray(list) ? list : [];
  }

  return {
    list: read,

    async get(id) {
      return (await read()).find((entry) => entry.id === id) ?? null;
    },

    /** Add an entry ({id, kind, ...}); returns it with createdAt/updatedAt. */
    add(entry) {
      return serial(async () => {
        if (!entry || typeof entry.id !== "string" || !entry.id) throw new Error("history entry needs an id");
        const stamped = { status: "queued", progress: 0, createdAt: now(), ...entry, updatedAt: now() };
        const list = (await read()).filter((item) => item.id !== entry.id);
        list.unshift(stamped);
        await storage.set({ [HISTORY_KEY]: list.slice(0, limit) });
        return stamped;
      });
    },

    /** Merge fields into an entry; returns the new entry, or null if it is gone. */
    update(id, fields) {
      return serial(async () => {
        const list = await read();
        const index = list.findIndex((item) => item.id === id);
        if (index === -1) return null;
        // Progress never goes backwards on screen, even if a poll races an event.
        const progress = typeof fields.progress === "number"
          ? Math.max(fields.progress, list[index].progress ?? 0) : list[index].progress;
        list[index] = { ...list[index], ...fields, progress, updatedAt: now() };
        await storage.set({ [HISTORY_KEY]: list });
        return list[index];
      });
    },

    remove(id) {
      return serial(async () => {
        const list = (await read()).filter((item) => item.id !== id);
        await storage.set({ [HISTORY_KEY]: list });
      });
    },

    clear() {
      return serial(() => storage.set({ [HISTORY_KEY]: [] }));
    },
  };
}

/** Entries still running (to resume watching them when the service worker restarts). */
export function unfinished(list) {
  return list.filter((entry) => entry.status === "queued" || entry.status === "processing");
}
