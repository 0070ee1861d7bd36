"""The Python client and the ``segue`` CLI against a real API served over HTTP, with a real worker."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf

from backend.api.app import create_app
from backend.api.auth import key_digest
from backend.client import cli
from backend.client.client import SegueAPIError, SegueClient, SegueConnectionError, SegueTaskError, SSEParser
from backend.core import heartbeat
from backend.core.ids import new_task_id
from backend.dev.embedded import free_port
from tests.conftest import ROOT, serve_app, wait_for
from tests.media_server import make_click_track, wav_bytes


@pytest.fixture
def api(app):
    with serve_app(app) as url:
        yield url


def has_route(app, rule: str) -> bool:
    return any(r.rule == rule for r in app.url_map.iter_rules())


def needs_route(app, rule: str) -> None:
    assert has_route(app, rule), f"{rule} is missing from the API"


def run_cli(*argv) -> int:
    return cli.main([str(a) for a in argv])


# -- end to end -------------------------------------------------------------------------

def test_cli_generate_waits_with_a_progress_bar_and_saves_a_wav(api, app, services, run_worker, media_server,
                                                                 tmp_path, capsys):
    out = tmp_path / "out.wav"
    codes = []
    # The CLI waits in a thread while this (main) thread runs the worker, as a real worker would elsewhere.
    waiter = threading.Thread(target=lambda: codes.append(run_cli(
        "--server", api, "generate", media_server.url("/click120.wav"), "--at", 3, "--prompt-length", 4,
        "--duration", "8-10", "--seed", 7, "-o", out)))
    waiter.start()
    wait_for(lambda: services.queue.depth() == 1, timeout=20, message="the CLI's task on the queue")
    run_worker()
    waiter.join(60)
    assert codes == [0]
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    assert "\r[" not in captured.err  # stderr is no terminal here: no bar redraws in logs or pipes
    info = sf.info(out)
    assert info.samplerate == 32000 and info.channels == 1
    # 120 BPM: 8-10 s including the prompt is 4 or 5 whole 2-second bars.
    assert 7.9 <= info.duration <= 10.1
    task_id = services.store.tasks.find_one({})["_id"]
    assert f"task {task_id} queued" in captured.err


def test_cli_draws_its_progress_bar_on_a_terminal(api, app, services, run_worker, media_server, tmp_path):
    """The installed CLI in a real pseudo-terminal: the bar is drawn there, up to 100%."""
    import os
    import pty

    out = tmp_path / "out.wav"
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "backend.client.cli", "--server", api, "generate", media_server.url("/click120.wav"),
         "--at", "3", "--prompt-length", "4", "--duration", "8-10", "--seed", "7", "-o", str(out)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, cwd=ROOT)
    os.close(slave)
    screen: list[bytes] = []

    def read_terminal():  # drained all along, so a full terminal buffer can never block the CLI
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed with the process
                return
            if not chunk:
                return
            screen.append(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        wait_for(lambda: services.queue.depth() == 1, timeout=60, message="the CLI's task on the queue")
        run_worker()
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(10)
    os.close(master)
    text = b"".join(screen).decode(errors="replace")
    assert f"\r[{'#' * cli.BAR_WIDTH}] 100%" in text
    if has_route(app, "/tasks/<task_id>/events"):  # streamed chunks show how much audio exists
        assert "s audio" in text
    assert sf.info(out).channels == 1


def test_client_continue_wait_and_download(api, app, run_worker, tmp_path):
    segue = SegueClient(api)
    clip = make_click_track(110, 4.0, sr=32000)
    task_id = segue.continue_clip(wav_bytes(clip, 32000), prompt_duration=2, duration=5, seed=3)
    assert segue.task(task_id)["status"] == "queued"
    assert segue.progress(task_id) == 0.0
    run_worker()
    seen = []
    polled = segue.wait(task_id, on_progress=seen.append, poll=True, timeout=30)
    assert polled["status"] == "completed" and "audio" not in polled
    assert seen[-1] == 100.0
    # The event stream (or, on a server without it, the polling fallback) ends the same way.
    streamed = segue.wait(task_id, timeout=30)
    assert streamed["task_id"] == task_id and streamed["status"] == "completed"
    path = segue.download(task_id, tmp_path / "longer.wav")
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    assert sr == 32000
    # The clip minus its 2 s prompt plus the 5 s generated window.
    assert abs(audio.shape[0] / sr - (4.0 - 2.0 + 5.0)) < 0.05
    assert np.abs(audio).max() > 0


def test_wait_raises_the_server_message_for_a_failed_task(api, services, run_worker, media_server):
    segue = SegueClient(api)
    task_id = segue.generate(media_server.url("/page.html"), prompt_length=4, duration="8-10")
    run_worker()
    with pytest.raises(SegueTaskError) as caught:
        segue.wait(task_id, poll=True, timeout=30)
    assert caught.value.status == "failed"
    assert caught.value.message == services.store.get_task(task_id)["error"]


# -- the event stream, parsed by the client --------------------------------------------------

def test_sse_parser_handles_any_chunking_and_line_ending():
    stream = (b": keep-alive\r\n\r\nevent: progress\r\ndata: {\"progress\": 42.5}\r\n\r\n"
              b"event: audio\nid: 7\ndata: {\"seq\": 7,\ndata:  \"final\": false}\n\n"
              b"data: plain text\r\rnot-a-field\n\nevent: completed\ndata: {\"status\": \"completed\"}\n\n")
    expected = [("progress", {"progress": 42.5}), ("audio", {"seq": 7, "final": False}),
                ("message", "plain text"), ("completed", {"status": "completed"})]
    for size in (1, 2, 3, 7, len(stream)):
        parser = SSEParser()
        events = []
        for i in range(0, len(stream), size):
            events += parser.feed(stream[i:i + size])
        assert events == expected, size
        assert parser.last_id == "7"


class ContractServer:
    """Serves canned /events answers in the contract's shape, plus a /tasks/<id> document for the fallback."""

    def __init__(self, events: list[bytes], task: dict, status: int = 200):
        self.events, self.task, self.status = events, task, status
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.paths.append(self.path)
                if self.path.endswith("/events") and outer.status == 200:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for part in outer.events:  # one write per event, as a live stream arrives
                        self.wfile.write(part)
                        self.wfile.flush()
                        time.sleep(0.01)
                    return  # closing the connection ends the stream
                if self.path.endswith("/events"):
                    body, status = b'{"error": "no such route", "code": "not_found"}', outer.status
                else:
                    body, status = json.dumps(outer.task).encode(), 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def sse(event: str, data: dict, event_id: str | None = None) -> bytes:
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    return (head + f"data: {json.dumps(data)}\n\n").encode()


def test_wait_follows_progress_and_audio_events_to_the_final_document():
    pcm = np.linspace(-0.5, 0.5, 3200, dtype="<f4")
    chunk = {"seq": 0, "sample_rate": 32000, "channels": 1, "dtype": "float32", "offset_samples": 0,
             "final": False, "pcm": base64.b64encode(pcm.tobytes()).decode()}
    final = {"task_id": "t1", "status": "completed", "audio_url": "/tasks/t1/audio"}
    server = ContractServer([b": keep-alive\n\n", sse("progress", {"progress": 12.5}), sse("audio", chunk, "0"),
                             sse("progress", {"progress": 60}), sse("completed", final)],
                            task={"task_id": "t1", "status": "processing"})
    try:
        progress, chunks = [], []
        bar = cli.ProgressBar(enabled=False)
        task = SegueClient(server.url).wait("t1", on_progress=progress.append,
                                            on_audio=lambda c: (chunks.append(c), bar.audio(c)))
    finally:
        server.close()
    assert task == final
    assert progress == [12.5, 60.0]
    assert np.array_equal(np.frombuffer(chunks[0]["pcm"], dtype="<f4"), pcm)
    assert bar.audio_seconds == pytest.approx(0.1)
    assert server.paths == ["/tasks/t1/events"], "no polling when the stream delivers the end"


def test_wait_polls_when_the_stream_breaks_or_is_missing():
    done = {"task_id": "t2", "status": "completed", "progress": 100.0, "audio": "UklGRg=="}
    broken = ContractServer([sse("progress", {"progress": 30})], task=done)
    missing = ContractServer([], task=done, status=404)
    try:
        seen = []
        assert SegueClient(broken.url).wait("t2", on_progress=seen.append, timeout=10)["status"] == "completed"
        assert seen == [30.0, 100.0]
        assert broken.paths == ["/tasks/t2/events", "/tasks/t2"]
        task = SegueClient(missing.url).wait("t2", timeout=10)
        assert missing.paths == ["/tasks/t2/events", "/tasks/t2"]
        assert "audio" not in task, "wait returns the document without the audio blob"
    finally:
        broken.close()
        missing.close()


def test_a_failed_event_raises_with_the_servers_message():
    failed = {"task_id": "t3", "status": "failed", "error": "the media URL returned HTTP 404"}
    server = ContractServer([sse("progress", {"progress": 5}), sse("failed", failed)], task=failed)
    try:
        with pytest.raises(SegueTaskError, match="returned HTTP 404"):
            SegueClient(server.url).wait("t3")
    finally:
        server.close()


# -- small commands ------------------------------------------------------------------------

def test_cli_health_prints_the_report_and_exits_by_status(api, services, capsys):
    assert run_cli("--server", api, "health") == 1  # no worker yet: pytorch down
    report = json.loads(capsys.readouterr().out)
    assert report["mongodb"] == "live" and report["redis"] == "live" and report["pytorch"] == "down"
    heartbeat.write(services.redis, "w1", {"torch_ok": True, "device": "cpu", "models_loaded": ["tiny"]}, 10)
    assert run_cli("--server", api, "health") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "live" and report["workers"] == 1


def test_cli_models_lists_the_offered_models(api, app, settings, capsys):
    needs_route(app, "/models")
    assert run_cli("--server", api, "models") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == list(settings.models)
    assert "default" in lines[0].split("\t")[2]


def test_cli_status_and_cancel(api, app, services, capsys):
    segue = SegueClient(api)
    task_id = segue.continue_clip(wav_bytes(make_click_track(100, 3.0, sr=32000), 32000), prompt_duration=2,
                                  duration=4)
    assert run_cli("--server", api, "status", task_id) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["task_id"] == task_id and shown["status"] == "queued"
    needs_route(app, "/tasks/<task_id>/cancel")
    assert run_cli("--server", api, "cancel", task_id) == 0
    assert capsys.readouterr().out.strip() == f"task {task_id}: canceled"
    assert services.store.get_task(task_id)["status"] == "canceled"
    done = new_task_id()
    services.store.insert_task({"_id": done, "job_id": done, "kind": "generate", "status": "completed",
                                "model": "m", "request": {}})
    assert run_cli("--server", api, "cancel", done) == 2  # 409: it already ended
    assert "task_finished" in capsys.readouterr().err


def test_api_key_is_sent_when_configured(settings, capsys):
    app = create_app(settings=settings.with_(api_keys=(key_digest("sesame"),)))
    with serve_app(app) as url:
        with pytest.raises(SegueAPIError) as caught:
            SegueClient(url).task("0" * 32)
        assert caught.value.status == 401 and caught.value.code == "missing_api_key"
        with pytest.raises(SegueAPIError) as caught:
            SegueClient(url, api_key="sesame").task("0" * 32)
        assert caught.value.status == 404
        assert run_cli("--server", url, "--api-key", "wrong", "status", "0" * 32) == 2
        assert "invalid_api_key" in capsys.readouterr().err


def test_unreachable_server_exits_3(capsys, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"
    assert run_cli("--server", url, "health") == 3
    assert "cannot reach the Segue server" in capsys.readouterr().err
    monkeypatch.setenv("SEGUE_SERVER", url)  # the environment is the default server
    assert run_cli("status", "abc") == 3
    with pytest.raises(SegueConnectionError):
        SegueClient(url, timeout=2).models()


def test_bad_usage_and_rejected_requests_exit_2(api, capsys, tmp_path):
    assert run_cli("generate") == 2  # missing URL
    assert run_cli("--server", api, "generate", "https://example.com/a.wav", "--prompt-length", "abc") == 2
    assert run_cli("frobnicate") == 2
    capsys.readouterr()
    assert run_cli("--server", api, "generate", "ftp://example.com/a.wav") == 2
    assert "http://" in capsys.readouterr().err  # the server's own message
    assert run_cli("--server", api, "continue", tmp_path / "missing.wav") == 2
    assert run_cli("--server", api, "status", "no-such-task") == 2
    assert "task_not_found" in capsys.readouterr().err
    assert run_cli("--help") == 0


def test_convert_checkpoint_arguments_are_handed_over_untouched():
    assert cli._delegated_convert(["convert-checkpoint", "a", "b", "--dtype", "fp16"]) == ["a", "b", "--dtype", "fp16"]
    assert cli._delegated_convert(["--server", "x", "--api-key=k", "convert-checkpoint", "--help"]) == ["--help"]
    assert cli._delegated_convert(["status", "convert-checkpoint"]) is None


def test_cli_and_client_never_import_torch_or_flask():
    code = ("import sys, backend.client.cli as c; c.main(['--server', 'http://127.0.0.1:9', 'health']); "
            "print(sorted(m for m in ('torch', 'flask', 'pymongo') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_client_builds_requests_with_the_servers_models():
    from backend.api import schemas
    from backend.client.client import SegueInvalidRequest, request_body

    body = request_body(schemas.GenerateRequest, {"url": "https://youtu.be/dQw4w9WgXcQ?t=4", "currentTime": 1,
                                                  "promptLength": 6, "duration": "16-18", "model": None,
                                                  "later_field": "kept"})
    assert body == {"url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ", "currentTime": 1.0, "promptLength": 6.0,
                    "duration": "16-18", "later_field": "kept"}
    clip = request_body(schemas.ContinueRequest, {"audio": b"RIFF", "prompt_duration": 2, "duration": None})
    assert clip == {"audio": base64.b64encode(b"RIFF").decode(), "prompt_duration": 2.0}
    # Refused before sending, with the code and sentence the server would answer.
    with pytest.raises(SegueInvalidRequest) as caught:
        SegueClient("http://127.0.0.1:9").generate("https://e.com/a", prompt_length=10, duration="4-5")
    assert caught.value.status == 400 and caught.value.code == "invalid_field" and "promptLength" in caught.value.message


def test_a_task_id_with_a_leading_dash_is_an_argument_not_an_option(api, app, services, capsys):
    """Ids made before the server stopped making them can begin with "-"; argparse read them as options."""
    segue = SegueClient(api)
    task_id = segue.continue_clip(wav_bytes(make_click_track(100, 3.0, sr=32000), 32000), prompt_duration=2,
                                  duration=4)
    dashed = "-" + task_id[1:]
    doc = services.store.get_task(task_id)  # a real task's document, stored again under an old-style id
    services.store.insert_task(dict(doc, _id=dashed, job_id=dashed))
    assert run_cli("--server", api, "status", dashed) == 0
    assert json.loads(capsys.readouterr().out)["task_id"] == dashed
    assert cli._dashed_ids_as_values(["continue", "a.wav", "--parent", dashed]) == [
        "continue", "a.wav", f"--parent={dashed}"]
    assert cli._dashed_ids_as_values(["status", "-h"]) == ["status", "-h"]  # help stays help


def test_new_task_ids_never_begin_with_a_dash():
    from backend.core.ids import looks_like_task_id, new_task_id

    ids = [new_task_id() for _ in range(5000)]  # ~78 would begin with "-" at 1 in 64
    assert all(looks_like_task_id(i) and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
