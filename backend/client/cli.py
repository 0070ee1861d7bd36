"""The ``segue`` command: a client of a running Segue API.

    segue generate URL --at 42 --duration 16-18 -o out.wav
    segue continue clip.wav --prompt-duration 6 -o longer.wav
    segue status ID | cancel ID | health | models
    segue convert-checkpoint SRC DST [...]      (runs locally; needs the worker's packages)

The server comes from ``--server``, else ``SEGUE_SERVER``, else
http://127.0.0.1:8001; the API key from ``--api-key``, else ``SEGUE_API_KEY``.
(This is a client program, so it reads its own environment rather than the
server's ``Settings``.)

Exit status: 0 success; 1 the task failed or was canceled (or ``health`` is
degraded); 2 bad usage, unreadable input or an API 4xx; 3 the server could
not be reached or answered 5xx; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from backend.client.client import SegueAPIError, SegueClient, SegueClientError, SegueConnectionError, SegueTaskError

DEFAULT_SERVER = "http://127.0.0.1:8001"
EXIT_OK, EXIT_TASK_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
BAR_WIDTH = 30
CONVERT = "convert-checkpoint"
_GLOBAL_WITH_VALUE = ("--server", "--api-key")


class ProgressBar:
    """``\\r[#####.....] 42%  12.0 s audio`` on stderr, redrawn only when what it shows changes."""

    def __init__(self, stream=None, enabled: bool = True):
        self.stream = stream or sys.stderr
        # Only a terminal understands \r redraws; a log file or pipe would fill with partial lines.
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = enabled and bool(isatty and isatty())
        self.percent = 0.0
        self.audio_seconds = 0.0
        self._shown = None

    def progress(self, percent: float) -> None:
        self.percent = max(self.percent, percent)
        self.draw()

    def audio(self, chunk: dict) -> None:
        # offset + this chunk's frames = how much of the continuation exists so far.
        frames = len(chunk["pcm"]) // (4 * max(1, int(chunk.get("channels") or 1)))
        end = (int(chunk.get("offset_samples") or 0) + frames) / float(chunk.get("sample_rate") or 1)
        self.audio_seconds = max(self.audio_seconds, end)
        self.draw()

    def line(self) -> str:
        filled = int(round(self.percent / 100 * BAR_WIDTH))
        text = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.percent:3.0f}%"
        if self.audio_seconds:
            text += f"  {self.audio_seconds:.1f} s audio"
        return text

    def draw(self) -> None:
        text = self.line()
        if self.enabled and text != self._shown:
            self.stream.write("\r" + text)
            self.stream.flush()
            self._shown = text

    def finish(self) -> None:
        if self.enabled and self._shown is not None:
            self.stream.write("\n")
            self.stream.flush()


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segue", description="Client for the Segue music-continuation API.")
    parser.add_argument("--server", default=None,
                        help=f"API base URL (default: $SEGUE_SERVER or {DEFAULT_SERVER})")
    parser.add_argument("--api-key", default=None, help="API key (default: $SEGUE_API_KEY)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def submission_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", help="model id (see `segue models`); the server's default when omitted")
        p.add_argument("--prompt", help="text description that conditions the music")
        p.add_argument("--seed", type=_positive(int), help="random seed, for repeatable results")
        p.add_argument("--top-k", type=_positive(int))
        p.add_argument("--top-p", type=_positive(float))
        p.add_argument("--temperature", type=_positive(float))
        p.add_argument("--cfg-coef", type=_positive(float))
        p.add_argument("--format", dest="output_format", choices=("wav", "mp3"), help="result format (default wav)")
        p.add_argument("--webhook", help="URL the server POSTs the task document to when it ends")
        p.add_argument("-o", "--output", help="where to save the result (default: segue-<id>.<format>)")
        p.add_argument("--no-wait", action="store_true", help="print the task id and return at once")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = commands.add_parser("generate", help="continue the media at a URL")
    p.add_argument("url", help="YouTube link or http(s) media URL")
    p.add_argument("--at", type=_positive(float), default=0.0, help="where the prompt starts, seconds (default 0)")
    p.add_argument("--prompt-length", type=_positive(float), default=6.0, help="prompt seconds (default 6)")
    p.add_argument("--duration", default="16-18", help="total length MIN-MAX seconds, prompt included (default 16-18)")
    submission_options(p)

    p = commands.add_parser("continue", help="extend a clip you hold")
    p.add_argument("clip", help="WAV/MP3/OGG/FLAC file")
    p.add_argument("--prompt-duration", type=_positive(float), default=6.0,
                   help="the clip's last this-many seconds are the prompt (default 6)")
    p.add_argument("--duration", type=_positive(float), help="seconds generated incl. the prompt (default 30)")
    p.add_argument("--parent", help="task id the clip came from")
    submission_options(p)

    p = commands.add_parser("status", help="print a task document (JSON, without audio)")
    p.add_argument("task_id")
    p = commands.add_parser("cancel", help="cancel a queued or running task")
    p.add_argument("task_id")
    commands.add_parser("health", help="print the server's health report (exit 1 when degraded)")
    commands.add_parser("models", help="list the models the server offers")
    commands.add_parser(CONVERT, add_help=False,
                        help="convert a fine-tuned audiocraft checkpoint (SRC DST ...; see its own --help)")
    return parser


def _delegated_convert(argv: list[str]) -> list[str] | None:
    """The arguments after ``convert-checkpoint`` when that is the command, else None."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == CONVERT:
            return argv[i + 1:]
        if arg in _GLOBAL_WITH_VALUE:
            i += 2
        elif arg.startswith(tuple(f"{g}=" for g in _GLOBAL_WITH_VALUE)):
            i += 1
        else:
            return None
    return None


# A task id (or API key) with a leading "-", from before the server stopped making such ids: argparse would
# take it for an option. Single dash, then at least 15 id characters: no option of this CLI looks like that.
_DASHED_ID = re.compile(r"^-[A-Za-z0-9_][A-Za-z0-9_-]{14,62}$")
_OPTIONS_TAKING_IDS = ("--parent", "--api-key")


def _dashed_ids_as_values(argv: list[str]) -> list[str]:
    """``--parent -abc…`` becomes ``--parent=-abc…``; a positional ``-abc…`` (the last argument of
    ``status`` and ``cancel``) gets a ``--`` before it."""
    out: list[str] = []
    for token in argv:
        if not _DASHED_ID.match(token):
            out.append(token)
        elif out and out[-1] in _OPTIONS_TAKING_IDS:
            out[-1] = f"{out[-1]}={token}"
        else:
            out.extend(["--", token])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = _dashed_ids_as_values(list(sys.argv[1:] if argv is None else argv))
    rest = _delegated_convert(argv)
    if rest is not None:
        # Imported only here: conversion needs torch, every other command must not.
        from worker.models.audiocraft_convert import main as convert

        return convert(rest)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage and 0 for --help
        return int(exc.code or 0)
    server = args.server or os.environ.get("SEGUE_SERVER") or DEFAULT_SERVER
    client = SegueClient(server, api_key=args.api_key or os.environ.get("SEGUE_API_KEY") or None)
    try:
        return COMMANDS[args.command](client, args)
    except SegueConnectionError as exc:
        return _fail(EXIT_UNREACHABLE, exc.message)
    except SegueAPIError as exc:
        return _fail(EXIT_UNREACHABLE if exc.status >= 500 else EXIT_USAGE, f"{exc.message} ({exc.code}, HTTP {exc.status})")
    except SegueTaskError as exc:
        return _fail(EXIT_TASK_FAILED, f"task {exc.task.get('task_id')} {exc.status}: {exc.message}")
    except SegueClientError as exc:
        return _fail(EXIT_TASK_FAILED, exc.message)
    except KeyboardInterrupt:
        return _fail(EXIT_INTERRUPTED, "interrupted")


def _fail(code: int, message: str) -> int:
    print(f"segue: {message}", file=sys.stderr)
    return code


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def _sampling(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in ("top_k", "top_p", "temperature", "cfg_coef", "output_format", "webhook")}


def _follow(client: SegueClient, task_id: str, args: argparse.Namespace) -> int:
    print(f"task {task_id} queued", file=sys.stderr)
    if args.no_wait:
        print(task_id)
        return EXIT_OK
    bar = ProgressBar(enabled=not args.quiet)
    try:
        task = client.wait(task_id, on_progress=bar.progress, on_audio=bar.audio)
    except KeyboardInterrupt:
        bar.finish()
        return _fail(EXIT_INTERRUPTED, f"stopped waiting; the task goes on (segue cancel {task_id})")
    except SegueTaskError:
        bar.finish()
        raise
    bar.progress(100.0)
    bar.finish()
    fmt = task.get("output_format") or getattr(args, "output_format", None) or "wav"
    path = Path(args.output or f"segue-{task_id[:8]}.{fmt}")
    client.download(task_id, path)
    details = [f"{task['duration_seconds']:.1f} s" if task.get("duration_seconds") else None,
               f"{task['bpm']:.0f} BPM" if task.get("bpm") else None,
               f"seed {task['seed']}" if task.get("seed") is not None else None]
    print(f"wrote {path} ({', '.join(d for d in details if d)})" if any(details) else f"wrote {path}", file=sys.stderr)
    print(path)
    return EXIT_OK


def cmd_generate(client: SegueClient, args: argparse.Namespace) -> int:
    task_id = client.generate(args.url, at=args.at, model=args.model, prompt_length=args.prompt_length,
                              duration=args.duration, prompt=args.prompt, seed=args.seed, **_sampling(args))
    return _follow(client, task_id, args)


def cmd_continue(client: SegueClient, args: argparse.Namespace) -> int:
    try:
        audio = Path(args.clip).read_bytes()
    except OSError as exc:
        return _fail(EXIT_USAGE, f"cannot read {args.clip}: {exc.strerror or exc}")
    task_id = client.continue_clip(audio, prompt_duration=args.prompt_duration, duration=args.duration,
                                   model=args.model, prompt=args.prompt, seed=args.seed, task_id=args.parent,
                                   **_sampling(args))
    return _follow(client, task_id, args)


def cmd_status(client: SegueClient, args: argparse.Namespace) -> int:
    task = client.task(args.task_id)
    task.pop("audio", None)
    _print_json(task)
    return EXIT_OK


def cmd_cancel(client: SegueClient, args: argparse.Namespace) -> int:
    task = client.cancel(args.task_id)
    note = " (cancel requested; it stops within a few steps)" if task.get("cancel_requested") and \
        task.get("status") == "processing" else ""
    print(f"task {task.get('task_id', args.task_id)}: {task.get('status')}{note}")
    return EXIT_OK


def cmd_health(client: SegueClient, args: argparse.Namespace) -> int:
    report = client.health()
    _print_json(report)
    return EXIT_OK if report.get("status") == "live" else EXIT_TASK_FAILED


def cmd_models(client: SegueClient, args: argparse.Namespace) -> int:
    for model in client.models():
        flags = [f for f, on in (("default", model.get("default")), ("loaded", model.get("loaded"))) if on]
        audio = f"{model.get('sample_rate') or '?'} Hz, {model.get('channels') or '?'} ch"
        print(f"{model['id']}\t{audio}\t{','.join(flags) or '-'}\t{model.get('description') or ''}".rstrip())
    return EXIT_OK


COMMANDS = {"generate": cmd_generate, "continue": cmd_continue, "status": cmd_status, "cancel": cmd_cancel,
            "health": cmd_health, "models": cmd_models}

if __name__ == "__main__":
    sys.exit(main())
