"""Task progress in Redis: a float 0-100 that never goes down.

The old backend kept one global progress value, so a new task showed the
previous task's number and nothing ever reached 100. Here each task has its
own key, and a Lua script makes writes monotonic even with several writers.
"""

from __future__ import annotations

import redis

KEY = "segue:progress:{}"
CHANNEL = "segue:events:{}"
# Progress keys outlive any realistic task; the final value is also copied
# onto the task document when the task ends.
TTL_SECONDS = 2 * 86400

_RAISE_TO = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local proposed = tonumber(ARGV[1])
if proposed > current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return ARGV[1]
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return tostring(current)
"""


class ProgressStore:
    def __init__(self, connection: redis.Redis):
        self.redis = connection
        self._raise_to = connection.register_script(_RAISE_TO)

    def raise_to(self, task_id: str, value: float) -> float:
        """Set progress to ``value`` unless it is already higher; return the stored value."""
        value = min(100.0, max(0.0, float(value)))
        stored = self._raise_to(keys=[KEY.format(task_id)], args=[f"{value:.2f}", TTL_SECONDS])
        return float(stored)

    def get(self, task_id: str) -> float | None:
        raw = self.redis.get(KEY.format(task_id))
        return None if raw is None else float(raw)

    def clear(self, task_id: str) -> None:
        self.redis.delete(KEY.format(task_id))
