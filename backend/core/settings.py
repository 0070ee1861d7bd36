"""Every setting Segue reads, in one place.

Nothing else in the code base reads ``os.environ``: components receive a
``Settings`` instance, so tests can build one with overrides and the docs' settings page
(docs/settings.md) is generated from ``SETTINGS`` below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, make_dataclass, replace
from pathlib import Path
from typing import Any, Mapping

OFFICIAL_MODELS = (
    "facebook/musicgen-small",
    "facebook/musicgen-medium",
    "facebook/musicgen-large",
    "facebook/musicgen-melody",
    "facebook/musicgen-stereo-small",
    "facebook/musicgen-stereo-medium",
    "facebook/musicgen-stereo-large",
    "facebook/musicgen-stereo-melody",
)
# Community fine-tunes the gary4web web app and the gary-on-the-fly extension
# send (audiocraft checkpoints, converted once on first use).
COMMUNITY_MODELS = (
    "thepatch/vanya_ai_dnb_0.1",
    "thepatch/hoenn_lofi",
    "thepatch/budots_remix",
    "thepatch/PhonkV2",
    "thepatch/bleeps-medium",
)
DEFAULT_MODELS = OFFICIAL_MODELS + COMMUNITY_MODELS


def _models(text: str) -> tuple[str, ...]:
    """Comma list of ``ID`` or ``ID=PATH`` entries (an alias: requests name ID, the worker loads PATH)."""
    entries = _list(text)
    for entry in entries:
        model_id, sep, path = entry.partition("=")
        if sep and (not model_id.strip() or not path.strip()):
            raise ValueError(f"{entry!r} is not ID or ID=PATH")
    ids = [entry.partition("=")[0].strip() for entry in entries]
    if len(set(ids)) != len(ids):
        raise ValueError("a model id is offered twice")
    return tuple(entries)


def _upstream_proxy(text: str) -> str:
    from urllib.parse import urlsplit

    text = text.strip()
    parts = urlsplit(text)
    if parts.scheme.lower() != "http" or not parts.hostname:
        raise ValueError("must be an http://[user:password@]host:port proxy URL")
    return text


def _webhook_secret(text: str) -> str:
    """A Standard Webhooks ``whsec_<base64>`` secret (checked), or any other string (older deployments)."""
    import base64
    import binascii

    if text.startswith("whsec_"):
        try:
            key = base64.b64decode(text.removeprefix("whsec_") + "==", validate=False)
        except (binascii.Error, ValueError):
            key = b""
        if not key:
            raise ValueError("a whsec_ secret must carry base64 bytes after the prefix")
    return text


def _bool(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _digests(text: str) -> tuple[str, ...]:
    """Comma list of SHA-256 hex digests (64 hex characters each), lower-cased."""
    digests = tuple(d.lower() for d in _list(text))
    for d in digests:
        if len(d) != 64 or any(c not in "0123456789abcdef" for c in d):
            raise ValueError(f"{d[:8]}... is not a SHA-256 hex digest (64 hex characters); store digests, not keys")
    return digests


def _descriptions(text: str) -> tuple[tuple[str, str], ...]:
    """``model=description`` pairs separated by ``;`` (descriptions may contain commas)."""
    out: dict[str, str] = {}
    for part in text.split(";"):
        if part.strip():
            model, sep, description = part.partition("=")
            if not sep or not model.strip():
                raise ValueError(f"{part.strip()!r} is not model=description")
            out[model.strip()] = description.strip()
    return tuple(out.items())


def _kv_cache(text: str) -> str:
    # The dtypes of worker.engine.quantize.kv_dtype (named here: the API process never imports torch).
    text = text.strip().lower() or "auto"
    if text not in ("auto", "float32", "bfloat16", "float16"):
        raise ValueError("must be auto (the default), float32, bfloat16 or float16")
    return text


def _quantize(text: str) -> str:
    # The modes of worker.engine.quantize (named here: the API process never imports torch).
    text = text.strip().lower()
    if text in ("0", "off", "none", "no"):
        return ""
    if text in ("", "auto"):
        return "auto"
    if text not in ("int8-rows", "int8", "int8-weight-only", "openvino-int8"):
        raise ValueError("must be auto (the default), off, int8-rows, int8, int8-weight-only or openvino-int8")
    return text


def _worker_class(text: str) -> str:
    text = text.strip().lower()
    if text not in ("gevent", "gthread"):
        raise ValueError("must be gevent or gthread")
    return text


RATE_LIMIT_OFF = ("", "0", "off", "none", "no")


def _rate_limit(text: str) -> str:
    """A flask-limiter rate string such as ``30/minute`` (checked now), or ``off``."""
    text = text.strip()
    if text.lower() in RATE_LIMIT_OFF:
        return "off"
    from limits import parse_many  # installed with flask-limiter

    parse_many(text)  # ValueError for a malformed string
    return text


@dataclass(frozen=True)
class Setting:
    env: str
    attr: str
    default: Any
    help: str
    parse: Any = str


# The single table of settings: environment variable, attribute, default, help.
SETTINGS: tuple[Setting, ...] = (
    Setting("PORT", "port", 8001, "HTTP port of the API (gunicorn).", int),
    Setting("SEGUE_HOST", "host", "0.0.0.0", "Address the API (and, under `make run`, the sidecar) listens on."),
    Setting("EXPRESS_PORT", "express_port", 3000, "HTTP port of the express-server ffmpeg sidecar.", int),
    Setting("REDIS_URL", "redis_url", "", "Redis URL. Empty: `make run` starts an embedded Valkey server on 127.0.0.1."),
    Setting("MONGO_URL", "mongo_url", "", "MongoDB URL. Empty: `make run` starts an embedded SecantusDB server (data under SEGUE_DATA_DIR)."),
    Setting("SEGUE_MONGO_DB", "mongo_db", "segue", "MongoDB database name."),
    Setting("SEGUE_MODELS", "models", DEFAULT_MODELS,
            "Comma list of offered models, the first the default: Hugging Face ids, local `save_pretrained` or "
            "audiocraft checkpoint folders, or `ID=PATH` aliases (requests name `ID`, the worker loads the folder "
            "`PATH`; e.g. `facebook/musicgen-small=/models/small`). Default: Meta's MusicGen models and the "
            "community fine-tunes the gary4web clients send.", _models),
    Setting("SEGUE_MODEL_DESCRIPTIONS", "model_descriptions", (),
            "Default text prompts per model, `model=description` pairs separated by `;` (e.g. "
            "`thepatch/hoenn_lofi=lofi hip hop, mellow keys`); used when a request has no `prompt`. "
            "Known community fine-tunes have built-in ones; `model=` (empty) removes one.", _descriptions),
    Setting("SEGUE_DEVICE", "device", "auto", "Worker device: auto (CUDA when available), cuda, cuda:N or cpu."),
    Setting("SEGUE_HALF_PRECISION", "half_precision", True, "Use fp16/bf16 on CUDA (ignored on CPU).", _bool),
    Setting("SEGUE_DATA_DIR", "data_dir", Path("./var"), "Where embedded servers keep their data, logs and caches.", Path),
    Setting("SEGUE_ALLOW_PRIVATE_URLS", "allow_private_urls", False,
            "Allow media URLs on loopback/private addresses (local use and tests only).", _bool),
    Setting("SEGUE_QUEUE", "queue_name", "segue", "Name of the RQ queue jobs go through."),
    Setting("SEGUE_JOB_TIMEOUT", "job_timeout", 1800, "Seconds a task may run on a worker before it is failed.", int),
    Setting("SEGUE_FETCH_TIMEOUT", "fetch_timeout", 30, "Socket timeout (s) for media downloads.", int),
    Setting("SEGUE_YTDLP_COOKIES", "ytdlp_cookies", "",
            "Path to a cookies.txt (Netscape format, exported from a signed-in browser) that yt-dlp sends to "
            "YouTube, for hosts YouTube asks to sign in; empty = none. Each download uses a private copy."),
    Setting("SEGUE_YTDLP_PROXY", "ytdlp_proxy", "",
            "Upstream http:// proxy (`http://[user:password@]host:port`) for media downloads; Segue's address "
            "guard checks every host first and forwards only checked addresses to it; empty = direct.",
            _upstream_proxy),
    Setting("SEGUE_RESULT_TTL_DAYS", "result_ttl_days", 7.0, "Days task documents and audio are kept after a task ends.", float),
    Setting("SEGUE_MAX_BODY_MB", "max_body_mb", 100.0, "Largest request body accepted (413 above).", float),
    Setting("SEGUE_MAX_CLIP_SECONDS", "max_clip_seconds", 600.0, "Longest /continue input clip accepted, seconds.", float),
    Setting("SEGUE_TORCH_THREADS", "torch_threads", 0,
            "CPU threads a worker's torch uses while generating (0 = automatic: 1 for tiny models, else torch's default).", int),
    Setting("SEGUE_MAX_BATCH", "max_batch", 8,
            "Most tasks a worker's engine decodes together (its KV cache holds this many 31 s tasks, two rows "
            "each); tasks join and leave at every step; 1 = one task at a time.", int),
    Setting("SEGUE_QUANTIZE", "quantize", "auto",
            "CPU workers' decoder precision: `auto` = `openvino-int8` for real checkpoints on an x86-64 CPU (the whole "
            "decoding step as one compiled OpenVINO graph: int8 weights, a float16 paged KV cache; ~1.4x faster steps "
            "than `int8-rows` for one task, a seed sounds the same alone and batched) and `int8-rows` on other CPUs "
            "(int8 weights and activations, one scale per row), float for the tiny test models and on GPUs; `off` = "
            "float32; `int8` (one activation scale per call: a seed may sound slightly different alone and batched); "
            "`int8-weight-only` (slower). See docs/cpu-engine.md.",
            _quantize),
    Setting("SEGUE_KV_CACHE", "kv_cache", "auto",
            "Precision of the decoder's key/value cache: `auto` = `bfloat16` when the decoder is quantized on a CPU "
            "(half the bytes each step reads from the cache: 28 % faster steps for 8 tasks, 7 % for one, measured), "
            "else the model's own; `float32`, `bfloat16`, `float16`. See docs/cpu-engine.md.", _kv_cache),
    Setting("SEGUE_CUDA_GRAPHS", "cuda_graphs", True,
            "GPU workers: replay the decoding step as CUDA graphs (one per batch-size bucket); 0 = eager.", _bool),
    Setting("SEGUE_RECYCLE_AFTER_TASKS", "recycle_after_tasks", 0,
            "Restart a worker process (between sessions) after this many tasks; 0 = never.", int),
    Setting("SEGUE_RECYCLE_ABOVE_MB", "recycle_above_mb", 0.0,
            "Restart a worker process (between sessions) when its resident memory exceeds this, MB; 0 = never.", float),
    Setting("SEGUE_DRAIN_SECONDS", "drain_seconds", 60.0,
            "On SIGTERM (compose stop, Kubernetes scale-in, Ctrl-C) a worker stops taking tasks, finishes what it "
            "holds for up to this many seconds, then hands the rest back to the queue; keep it below the "
            "orchestrator's grace period (compose `stop_grace_period`, Kubernetes `terminationGracePeriodSeconds`).",
            float),
    Setting("SEGUE_FAULT_HOLD_DIR", "fault_hold_dir", "",
            "Tests only (the fault-injection suite): a folder of hold-point files that pause a task at a named "
            "instant; empty (always, in production) = off."),
    Setting("SEGUE_MODEL_CACHE", "model_cache_size", 2, "How many models a worker keeps loaded (LRU).", int),
    Setting("SEGUE_HEARTBEAT_SECONDS", "heartbeat_seconds", 10, "Worker heartbeat period; /health counts a worker live for 3 periods.", int),
    Setting("SEGUE_CORS_ORIGINS", "cors_origins", ("*",), "Comma list of allowed CORS origins (`*` = any).", _list),
    Setting("SEGUE_API_WORKERS", "api_workers", 2, "gunicorn worker processes for the API.", int),
    Setting("SEGUE_API_THREADS", "api_threads", 16,
            "Threads per gunicorn worker; used only with `SEGUE_API_WORKER_CLASS=gthread`.", int),
    Setting("SEGUE_API_WORKER_CLASS", "api_worker_class", "gevent",
            "gunicorn worker class of the API: `gevent` (an open event stream costs a greenlet, not a thread) "
            "or `gthread` (each open stream holds one of `SEGUE_API_THREADS`).", _worker_class),
    Setting("SEGUE_API_CONNECTIONS", "api_connections", 2000,
            "Most simultaneous connections one API worker process serves (gevent), open streams included.", int),
    Setting("SEGUE_STREAM_ADMISSIONS", "stream_admissions", 2,
            "Most `/events` + `/stream` requests one API process admits at once (the rest wait their turn, "
            "so a flood of listeners cannot crowd out `/health` and other routes); 0 = no limit.", int),
    Setting("SEGUE_MAX_STREAMS_PER_CALLER", "max_streams_per_caller", 32,
            "Most `/events` + `/stream` connections one API key (or client IP) may hold open at once, across "
            "API processes (429 beyond it); 0 = no cap.", int),
    Setting("SEGUE_FFMPEG_MAX_CONCURRENT", "ffmpeg_max_concurrent", 0,
            "Most ffmpeg processes one API process runs at once to decode uploaded audio; 0 = the number of CPU cores.",
            int),
    Setting("SEGUE_FFMPEG_WAIT_SECONDS", "ffmpeg_wait_seconds", 10.0,
            "How long a request waits for a free ffmpeg slot before it gets 503 with `Retry-After`.", float),
    Setting("SEGUE_WORKERS", "workers", 1, "Worker processes `make run` starts.", int),
    Setting("SEGUE_LOG_LEVEL", "log_level", "INFO", "Log level of API and worker."),
    Setting("SEGUE_API_KEYS", "api_keys", (),
            "Comma list of SHA-256 hex digests of the accepted API keys (the keys are never stored); empty = no auth.",
            _digests),
    Setting("SEGUE_RATE_LIMIT", "rate_limit", "30/minute",
            "Submissions (POST /generate, /continue) per API key, or per client IP when keys are off "
            "(flask-limiter syntax, e.g. `30/minute` or `5/second;30/minute`); `off` = unlimited.", _rate_limit),
    Setting("SEGUE_READ_RATE_LIMIT", "read_rate_limit", "1200/minute",
            "Every other request (polling reads, cancel) per API key or client IP; `off` = unlimited.", _rate_limit),
    Setting("SEGUE_MAX_QUEUED_PER_KEY", "max_queued_per_key", 20,
            "Most tasks one API key (or client IP) may have queued or processing; 0 = no cap.", int),
    Setting("SEGUE_TRUST_PROXY", "trust_proxy", False,
            "Take the client IP from the last X-Forwarded-For entry (only behind a reverse proxy you run).", _bool),
    Setting("SEGUE_WEBHOOK_SECRET", "webhook_secret", "",
            "Secret for webhook signatures, best a Standard Webhooks `whsec_<base64>` secret: deliveries carry "
            "`webhook-id`, `webhook-timestamp` and `webhook-signature` (verify with any Standard Webhooks library) "
            "and, for one more release, `X-Segue-Signature: sha256=<HMAC-SHA256 of X-Segue-Timestamp + \".\" + "
            "body>`; empty = unsigned.", _webhook_secret),
    Setting("SEGUE_WEBHOOK_TIMEOUT", "webhook_timeout", 10.0, "Seconds one webhook delivery attempt may take.", float),
    Setting("SEGUE_WEBHOOK_RETRY_SECONDS", "webhook_retry_seconds", 600.0,
            "How long failed webhook deliveries (timeouts, 5xx) are retried with backoff, seconds.", float),
    Setting("SEGUE_PUBLIC_URL", "public_url", "",
            "Base URL clients reach the API at (e.g. `https://segue.example.com`), used for audio URLs in webhooks; "
            "empty = `http://<host>:<port>`."),
)


class _SettingsBehaviour:
    """What every ``Settings`` can do; its fields come from ``SETTINGS`` (see below)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for s in SETTINGS:
            raw = environ.get(s.env)
            if raw is not None and raw != "":
                try:
                    values[s.attr] = s.parse(raw)
                except ValueError as exc:
                    raise ValueError(f"{s.env}={raw!r} is not valid: {exc}") from None
        values.update(overrides)
        settings = cls(**values)
        if not settings.models:
            raise ValueError("SEGUE_MODELS must name at least one model")
        return settings

    def with_(self, **changes: Any) -> "Settings":
        return replace(self, **changes)

    @property
    def model_ids(self) -> tuple[str, ...]:
        """The ids requests name and ``/models`` lists (an ``ID=PATH`` entry's ``ID``)."""
        return tuple(entry.partition("=")[0].strip() for entry in self.models)

    def model_source(self, model_id: str) -> str:
        """What the worker loads for ``model_id``: an alias's ``PATH``, else the id itself."""
        for entry in self.models:
            entry_id, sep, path = entry.partition("=")
            if entry_id.strip() == model_id:
                return path.strip() if sep else model_id
        return model_id

    @property
    def default_model(self) -> str:
        return self.model_ids[0]

    @property
    def descriptions(self) -> dict[str, str]:
        return dict(self.model_descriptions)

    @property
    def result_ttl_seconds(self) -> int:
        return int(self.result_ttl_days * 86400)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def as_env(self) -> dict[str, str]:
        """The settings written back as environment variables (for child processes)."""
        env = {}
        for s in SETTINGS:
            value = getattr(self, s.attr)
            if s.attr == "model_descriptions":
                value = ";".join(f"{k}={v}" for k, v in value)
            elif isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "1" if value else "0"
            env[s.env] = str(value)
        return env


# The settings object: one frozen field per row of SETTINGS, its default the row's, so each
# default is declared once (in the table) and the docs' settings page, `as_env` and `from_env` follow it.
Settings = make_dataclass(
    "Settings", [(s.attr, type(s.default), field(default=s.default)) for s in SETTINGS],
    bases=(_SettingsBehaviour,), frozen=True)
Settings.__module__ = __name__  # for pickling and reprs (make_dataclass takes module= only from 3.12)
Settings.__doc__ = "Segue's settings: an immutable value with one field per row of ``SETTINGS``."
