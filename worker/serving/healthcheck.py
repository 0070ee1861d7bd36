"""Container health probe: exit 0 when a worker on this host has a fresh heartbeat.

Used by docker-compose (`python -m worker.serving.healthcheck`); imports no torch.
"""

import socket
import sys

import redis

from backend.core import heartbeat
from backend.core.settings import Settings


def main() -> int:
    settings = Settings.from_env()
    try:
        beats = heartbeat.read_all(redis.Redis.from_url(settings.redis_url, socket_timeout=3))
    except redis.RedisError as exc:
        print(f"redis unreachable: {exc}")
        return 1
    host = socket.gethostname()
    mine = [b for b in beats if b.get("host") == host and b.get("torch_ok")]
    print(f"{len(mine)} live worker(s) on {host}")
    return 0 if mine else 1


if __name__ == "__main__":
    sys.exit(main())
