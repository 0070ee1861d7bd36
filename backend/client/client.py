"""A small Python client for the Segue API (needs only ``requests`` and ``pydantic``; no torch, no Flask).

    from backend.client.client import SegueClient

    segue = SegueClient("http://127.0.0.1:8001", api_key=None)
    task_id = segue.generate("https://www.youtube.com/watch?v=...", at=42, duration="16-18", seed=7)
    task = segue.wait(task_id, on_progress=lambda p: print(f"{p:.0f}%"))
    segue.download(task_id, "continuation.wav")

``wait`` listens to ``GET /tasks/<id>/events`` (Server-Sent Events, parsed
here) and falls back to polling ``GET /tasks/<id>`` every second when the
server has no event stream or the connection breaks. Errors the API answers
(``{"error", "code"}``) raise ``SegueAPIError``; an unreachable server raises
``SegueConnectionError``; a task that ends failed or canceled raises
``SegueTaskError`` from ``wait``. All three are ``SegueClientError``.

Requests are built with the server's own request models (``backend.api.schemas``),
so a field the server would refuse is refused here, before anything is sent,
with the server's code and sentence (``SegueInvalidRequest``, a 400
``SegueAPIError``); answers are read with its response models
(``backend.api.responses``). Task documents stay plain dicts: events and older
servers (gary4web) send partial ones.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import requests
from pydantic import BaseModel, ValidationError

from backend.api import responses, schemas
from backend.core.tasks import FINAL_STATES

#: A task's last event is named after the status it ended in.
FINAL_EVENTS = FINAL_STATES
POLL_SECONDS = 1.0


class SegueClientError(Exception):
    """Anything that went wrong talking to Segue."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class SegueAPIError(SegueClientError):
    """The API answered with an error status (4xx/5xx) and, usually, ``{"error", "code"}``."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


class SegueInvalidRequest(SegueAPIError):
    """A request the server would refuse, refused before sending (same status, code and sentence)."""

    def __init__(self, code: str, message: str):
        super().__init__(400, code, message)


class SegueConnectionError(SegueClientError):
    """The server could not be reached (refused, DNS, timeout)."""


class SegueTaskError(SegueClientError):
    """The task ended ``failed`` or ``canceled``; ``task`` is its final document."""

    def __init__(self, task: dict):
        status = task.get("status")
        reason = task.get("error") or ("the task was canceled" if status == "canceled" else f"the task {status}")
        super().__init__(reason)
        self.task = task
        self.status = status


# -- Server-Sent Events -----------------------------------------------------------

class SSEParser:
    """Incremental ``text/event-stream`` parser (the WHATWG rules the browser's EventSource follows).

    ``feed(bytes)`` returns the events completed by those bytes as ``(event, data)``
    tuples; ``data`` is the JSON-decoded ``data:`` lines (raw text if not JSON).
    Comment lines (``: keep-alive``) are ignored; ``id:`` is remembered in ``last_id``.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self.last_id: str | None = None

    def feed(self, chunk: bytes) -> list[tuple[str, Any]]:
        self._buffer += chunk
        events = []
        while True:
            # Lines end in \n, \r\n or \r; a \r at the very end may be half of a \r\n still in flight.
            cut = min((i for i in (self._buffer.find(b"\n"), self._buffer.find(b"\r")) if i >= 0), default=-1)
            if cut < 0 or (self._buffer[cut:cut + 1] == b"\r" and cut == len(self._buffer) - 1):
                break
            line = self._buffer[:cut].decode("utf-8", errors="replace")
            skip = 2 if self._buffer[cut:cut + 2] == b"\r\n" else 1
            self._buffer = self._buffer[cut + skip:]
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> tuple[str, Any] | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self.last_id = value
        return None

    def _dispatch(self) -> tuple[str, Any] | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        text = "\n".join(data)
        try:
            return event, json.loads(text)
        except ValueError:
            return event, text


# -- the client ---------------------------------------------------------------------

class SegueClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "segue-client/1"
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    # -- plumbing -------------------------------------------------------------------
    def _send(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            return self.session.request(method, self.base_url + path, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise SegueConnectionError(f"cannot reach the Segue server at {self.base_url}: {_short(exc)}") from None

    def _request(self, method: str, path: str, *, ok=(200, 202), **kwargs) -> requests.Response:
        response = self._send(method, path, **kwargs)
        if response.status_code not in ok:
            raise api_error(response)
        return response

    def _json(self, method: str, path: str, **kwargs) -> Any:
        return self._request(method, path, **kwargs).json()

    # -- submitting -------------------------------------------------------------------
    def generate(self, url: str, at: float = 0, model: str | None = None, prompt_length: float = 6,
                 duration: str = "16-18", prompt: str | None = None, seed: int | None = None,
                 **sampling: Any) -> str:
        """Continue the media at ``url`` from ``at`` seconds; returns the task id.

        ``sampling``: ``top_k``, ``top_p``, ``temperature``, ``cfg_coef``,
        ``output_format`` (``"wav"``/``"mp3"``), ``webhook``.
        """
        body = {"url": url, "currentTime": at, "promptLength": prompt_length, "duration": duration,
                "model": model, "prompt": prompt, "seed": seed, **sampling}
        return self._submit("/generate", schemas.GenerateRequest, body)

    def continue_clip(self, audio: bytes | str | os.PathLike, prompt_duration: float = 6,
                      duration: float | None = None, model: str | None = None, prompt: str | None = None,
                      seed: int | None = None, task_id: str | None = None, **sampling: Any) -> str:
        """Extend a clip (bytes, or the path of a WAV/MP3/OGG/FLAC file); returns the new task id."""
        data = audio if isinstance(audio, (bytes, bytearray)) else Path(audio).read_bytes()
        # Bytes go in as they are: the request model encodes them (and would decode base64 text again).
        body = {"audio": bytes(data), "prompt_duration": prompt_duration,
                "duration": duration, "model": model, "prompt": prompt, "seed": seed, "task_id": task_id,
                **sampling}
        return self._submit("/continue", schemas.ContinueRequest, body)

    def _submit(self, path: str, request: type[schemas.RequestModel], body: dict) -> str:
        payload = request_body(request, body)
        answer = _read(responses.SubmitResponse, self._json("POST", path, json=payload, ok=(202,)))
        return answer.task_id

    # -- reading -----------------------------------------------------------------------
    def task(self, task_id: str) -> dict:
        return self._json("GET", f"/tasks/{task_id}")

    def progress(self, task_id: str) -> float:
        return _read(responses.Progress, self._json("GET", f"/progress/{task_id}")).progress

    def health(self) -> dict:
        """The health report; returned for 503 (degraded) as well, since it says what is down."""
        return self._json("GET", "/health", ok=(200, 503))

    def models(self) -> list[dict]:
        offered = _read(responses.Models, self._json("GET", "/models"))
        return [model.model_dump(exclude_unset=True) for model in offered.models]

    def cancel(self, task_id: str) -> dict:
        return self._json("POST", f"/tasks/{task_id}/cancel")

    def audio(self, task_id: str) -> bytes:
        """The result file's bytes (WAV or MP3)."""
        response = self._send("GET", f"/tasks/{task_id}/audio")
        if response.status_code == 200:
            return response.content
        if response.status_code in (404, 405) and _code(response) != "task_not_found":
            # A server without the /audio route (older Segue, gary4web): the document carries base64.
            task = self.task(task_id)
            if task.get("status") == "completed" and task.get("audio"):
                return base64.b64decode(task["audio"])
            raise SegueAPIError(409, "task_not_completed", f"task {task_id} is {task.get('status')}")
        raise api_error(response)

    def download(self, task_id: str, path: str | os.PathLike) -> Path:
        """Save the result to ``path``; returns it."""
        path = Path(path)
        path.write_bytes(self.audio(task_id))
        return path

    # -- following a task ----------------------------------------------------------------
    def events(self, task_id: str) -> Iterator[tuple[str, Any]]:
        """Yield ``(event, data)`` from ``GET /tasks/<id>/events`` until the stream ends.

        Events: ``progress`` ``{"progress": P}``; ``audio`` (a PCM chunk, see the
        API contract); one final ``completed`` / ``failed`` / ``canceled`` with the
        task document; ``("keepalive", None)`` while nothing else happens. Raises
        ``SegueAPIError`` for an error answer (e.g. 404).
        """
        # The read timeout only has to outlast the server's ~15 s keep-alive comments.
        response = self._send("GET", f"/tasks/{task_id}/events", stream=True,
                              headers={"Accept": "text/event-stream"},
                              timeout=(min(self.timeout, 10), max(self.timeout, 45)))
        with response:
            if response.status_code != 200:
                raise api_error(response)
            parser = SSEParser()
            try:
                for chunk in response.iter_content(chunk_size=None):
                    events = list(parser.feed(chunk))
                    # A chunk without events is a keep-alive comment: say so, so a waiting caller
                    # can check its deadline while a task sits in the queue.
                    yield from events or [("keepalive", None)]
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                raise SegueConnectionError(f"the event stream broke: {_short(exc)}") from None

    def wait(self, task_id: str, on_progress: Callable[[float], Any] | None = None,
             on_audio: Callable[[dict], Any] | None = None, poll: bool = False,
             timeout: float | None = None) -> dict:
        """Follow a task to its end and return its final document (without ``audio``).

        ``on_progress(percent)`` is called as progress rises; ``on_audio(chunk)``
        for each streamed chunk, with ``chunk["pcm"]`` decoded to bytes
        (little-endian float32, channels interleaved). Polling never sees chunks.
        Raises ``SegueTaskError`` when the task ends failed or canceled, and
        ``SegueClientError`` when ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if not poll:
            final = self._follow_events(task_id, on_progress, on_audio, deadline)
            if final is not None:
                return _finished(final)
        return _finished(self._poll(task_id, on_progress, deadline))

    def _follow_events(self, task_id, on_progress, on_audio, deadline) -> dict | None:
        """The final task document, or None when polling must take over."""
        try:
            for event, data in self.events(task_id):
                if event == "progress" and on_progress is not None:
                    on_progress(float(data["progress"]))
                elif event == "audio" and on_audio is not None:
                    on_audio(dict(data, pcm=base64.b64decode(data.get("pcm") or "")))
                elif event in FINAL_EVENTS:
                    return dict(data, status=data.get("status") or event)
                _check_deadline(deadline, task_id)
        except SegueAPIError as exc:
            if exc.status in (404, 405) and exc.code != "task_not_found":
                return None  # no event stream on this server
            raise
        except SegueConnectionError:
            return None  # the stream broke; polling says where the task is
        return None  # the stream ended without a final event

    def _poll(self, task_id, on_progress, deadline) -> dict:
        last = None
        unreachable_since = None
        while True:
            try:
                task = self.task(task_id)
                unreachable_since = None
            except SegueConnectionError:
                # Ride out a restart of the API; give up once it has been gone for a while.
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > max(self.timeout, 30):
                    raise
                task = None
            if task is not None:
                progress = float(task.get("progress") or 0.0)
                if on_progress is not None and progress != last:
                    on_progress(progress)
                    last = progress
                if task.get("status") in FINAL_EVENTS:
                    task.pop("audio", None)
                    return task
            _check_deadline(deadline, task_id)
            time.sleep(POLL_SECONDS)


def request_body(request: type[schemas.RequestModel], body: dict) -> dict:
    """The JSON body for ``request``: validated as the server will (the offered models aside: only it knows them).

    Unset fields stay out, so the server applies its defaults; keys the model does not know are passed
    through (a newer server may accept them).
    """
    try:
        model = schemas.validate(request, body)
    except schemas.FieldError as exc:
        raise SegueInvalidRequest(exc.code, exc.message) from None
    extra = {k: v for k, v in body.items() if k not in request.model_fields and v is not None}
    return {**model.model_dump(mode="json", exclude_unset=True), **extra}


def _read(model: type[BaseModel], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise SegueClientError(f"the server's answer is not a {model.__name__}: {exc.errors()[0]['msg']}") from None


def _finished(task: dict) -> dict:
    if task.get("status") != "completed":
        raise SegueTaskError(task)
    return task


def _check_deadline(deadline: float | None, task_id: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise SegueClientError(f"task {task_id} did not end in time")


def _code(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def api_error(response: requests.Response) -> SegueAPIError:
    """The ``SegueAPIError`` for an error answer, with the server's message and code when it sent JSON."""
    message, code = None, None
    try:
        body = response.json()
    except ValueError:
        body = None
    try:
        error = responses.Error.model_validate(body)
        message, code = error.error, error.code
    except ValidationError:
        # Not every error answer is Segue's {"error", "code"} (a proxy's; gary4web's lack the code).
        if isinstance(body, dict):
            message, code = body.get("error"), body.get("code")
    retry = response.headers.get("Retry-After")
    try:
        retry_after = float(retry) if retry else None
    except ValueError:
        retry_after = None
    return SegueAPIError(response.status_code, code or "http_error",
                         message or (response.text.strip()[:200] or response.reason or "error"), retry_after)


def _short(exc: Exception) -> str:
    # requests nests the socket error deep inside; its last line is the readable part.
    text = str(exc)
    return text.rsplit(": ", 1)[-1].rstrip("')\"") if len(text) > 160 else text
