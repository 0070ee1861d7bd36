"""Container health probe: exit 0 when a worker on this host has a fresh heartbeat.

Used by docker-compose (`python -m worker.serving.healthcheck`) and Kubernetes' liveness probe; imports no torch.
With ``--ready`` (Kubernetes' startup and readiness probes) the heartbeat must also say the worker is ready:
its default model's first load has ended, so the probe allows for model loading.
"""

import socket
import sys

import redis

from backend.core import heartbeat
from backend.core.settings import Settings


def main(argv: list[str] | None = None) -> int:
    want_ready = "--ready" in (sys.argv[1:] if argv is None else argv)
    settings = Settings.from_env()
    try:
        beats = heartbeat.read_all(redis.Redis.from_url(settings.redis_url, socket_timeout=3))
    except redis.RedisError as exc:
        print(f"redis unreachable: {exc}")
        return 1
    host = socket.gethostname()
    mine = [b for b in beats if b.get("host") == host and b.get("torch_ok") and (b.get("ready") or not want_ready)]
    print(f"{len(mine)} {'ready' if want_ready else 'live'} worker(s) on {host}")
    return 0 if mine else 1


if __name__ == "__main__":
    sys.exit(main())
