"""Webhook delivery to a real loopback HTTP receiver: signature, retries, give-up, SSRF guard, exactly-once claims."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from backend.api.app import create_app
from backend.core import webhooks
from backend.core.connections import Services
from backend.core.ids import new_task_id
from backend.dev.embedded import free_port
from tests.media_server import make_click_track, wav_bytes

SECRET = "s3cret-for-tests"
PUBLIC = "https://segue.example.com"


class Receiver:
    """A threaded HTTP server that records every POST and answers with scripted statuses."""

    def __init__(self, statuses=(), delay: float = 0.0, tls: ssl.SSLContext | None = None, meet: int = 0):
        self.statuses = list(statuses)
        self.delay = delay
        # meet=N: the first requests are not answered until N are in flight at once (proof of concurrency
        # that does not depend on how fast each side runs).
        self.meet = meet
        self.met = threading.Event()
        self.received: list[tuple[dict, bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.received.append((dict(self.headers), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    if receiver.meet and len(receiver.received) >= receiver.meet:
                        receiver.met.set()
                if receiver.meet:
                    receiver.met.wait(120)
                time.sleep(receiver.delay)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str = "/hook", *, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.server.server_address[1]}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def make_services(settings, **changes) -> Services:
    return Services.from_settings(settings.with_(**{"webhook_secret": SECRET, "public_url": PUBLIC, **changes}))


def ended_task(services: Services, webhook: str | None, status: str = "completed") -> str:
    task_id = new_task_id()
    services.store.insert_task({"_id": task_id, "job_id": task_id, "kind": "generate", "status": "processing",
                                "model": "tiny", "request": {"url": "https://example.com/a.wav", "webhook": webhook},
                                "error": None, "progress": 50.0})
    fields = {"duration_seconds": 17.5, "progress": 100.0} if status == "completed" else {"error": "it broke"}
    assert services.store.finish(task_id, status, fields)
    webhooks.schedule(services.redis, task_id)
    return task_id


def webhook_state(services: Services, task_id: str) -> dict:
    return services.store.get_task(task_id)[webhooks.DOC_FIELD]


def test_delivered_once_with_a_valid_signature(settings):
    services = make_services(settings)
    with Receiver() as receiver:
        task_id = ended_task(services, receiver.url("/hook?source=segue"))
        assert webhooks.deliver_due(services) == 1
        assert webhooks.deliver_due(services, now=time.time() + 3600) == 0  # nothing left to send

    assert len(receiver.received) == 1
    headers, body = receiver.received[0]
    expected = hmac.new(SECRET.encode(), headers["X-Segue-Timestamp"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Segue-Signature"], f"sha256={expected}")
    assert abs(int(headers["X-Segue-Timestamp"]) - time.time()) < 60
    assert headers["X-Segue-Event"] == "task.completed"
    assert headers["Content-Type"] == "application/json"
    payload = json.loads(body)
    assert payload["task_id"] == task_id and payload["status"] == "completed"
    assert payload["duration_seconds"] == 17.5 and "audio" not in payload
    assert payload["audio_url"] == f"{PUBLIC}/tasks/{task_id}/audio"
    state = webhook_state(services, task_id)
    assert state["status"] == "delivered" and state["attempts"] == 1 and state["last_status"] == 200
    assert state["delivery_id"] == headers["X-Segue-Delivery"]


STANDARD_SECRET = "whsec_" + base64.b64encode(b"a 24-byte signing secret").decode()


@pytest.mark.parametrize("secret", [STANDARD_SECRET, SECRET], ids=["whsec", "plain"])
def test_standard_webhooks_libraries_verify_the_delivery(settings, secret):
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    services = make_services(settings, webhook_secret=secret)
    with Receiver(statuses=[500, 200]) as receiver:
        task_id = ended_task(services, receiver.url())
        webhooks.deliver_due(services)
        webhooks.deliver_due(services, now=time.time() + 3600)  # the retry
    (first_headers, _), (headers, body) = receiver.received
    # A receiver holds the secret as given (whsec_...) or, for a plain one, its bytes.
    verifier = Webhook(secret if secret.startswith("whsec_") else secret.encode())
    payload = verifier.verify(body, headers)
    assert payload["task_id"] == task_id and payload["status"] == "completed"
    assert headers["webhook-id"] == first_headers["webhook-id"] == headers["X-Segue-Delivery"]  # same on retry
    assert headers["webhook-timestamp"] == headers["X-Segue-Timestamp"]
    assert headers["X-Segue-Signature"].startswith("sha256=")  # today's header stays for one release
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body.replace(b"completed", b"failed"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(base64.b64encode(b"someone else's secret").decode()).verify(body, headers)


def test_a_malformed_standard_secret_is_refused_at_start(settings):
    from backend.core.settings import Settings

    with pytest.raises(ValueError, match="whsec_"):
        Settings.from_env({"SEGUE_WEBHOOK_SECRET": "whsec_"})


def test_unsigned_without_a_secret_and_public_base_from_host_and_port(settings):
    services = Services.from_settings(settings.with_(host="127.0.0.1", port=9123))
    with Receiver() as receiver:
        task_id = ended_task(services, receiver.url())
        webhooks.deliver_due(services)
    headers, body = receiver.received[0]
    assert "X-Segue-Signature" not in headers and "webhook-signature" not in headers
    assert headers["webhook-id"] == headers["X-Segue-Delivery"] and headers["webhook-timestamp"]
    assert json.loads(body)["audio_url"] == f"http://127.0.0.1:9123/tasks/{task_id}/audio"


def test_a_500_is_retried_with_backoff_then_delivered(settings):
    services = make_services(settings)
    with Receiver(statuses=[500]) as receiver:
        task_id = ended_task(services, receiver.url())
        start = time.time()
        assert webhooks.deliver_due(services, now=start) == 1
        state = webhook_state(services, task_id)
        assert state == dict(state, status="pending", attempts=1, last_status=500)
        assert webhooks.deliver_due(services, now=start + 1) == 0  # the first backoff is 2 s
        assert webhooks.deliver_due(services, now=start + 2.5) == 1
    state = webhook_state(services, task_id)
    assert state["status"] == "delivered" and state["attempts"] == 2 and state["last_status"] == 200
    first, second = (headers for headers, _ in receiver.received)
    assert first["X-Segue-Delivery"] == second["X-Segue-Delivery"], "receivers dedupe retries by this id"
    assert webhooks.pending_count(services.redis) == 0


@pytest.mark.parametrize("status", [400, 404, 302])
def test_a_client_error_or_redirect_gives_up_at_once(settings, status):
    services = make_services(settings)
    with Receiver(statuses=[status]) as receiver:
        task_id = ended_task(services, receiver.url(), status="failed")
        assert webhooks.deliver_due(services) == 1
        assert webhooks.deliver_due(services, now=time.time() + 3600) == 0
    assert len(receiver.received) == 1
    assert receiver.received[0][0]["X-Segue-Event"] == "task.failed"
    state = webhook_state(services, task_id)
    assert state["status"] == "failed" and state["last_status"] == status and state["attempts"] == 1


def test_retries_stop_when_the_retry_window_is_over(settings):
    services = make_services(settings, webhook_retry_seconds=5)
    with Receiver(statuses=[503, 429]) as receiver:
        task_id = ended_task(services, receiver.url(), status="canceled")
        start = time.time()
        webhooks.deliver_due(services, now=start)
        assert webhook_state(services, task_id)["status"] == "pending"
        webhooks.deliver_due(services, now=start + 2.5)  # the next backoff (4 s) would end past 5 s
        assert webhooks.deliver_due(services, now=start + 3600) == 0
    assert [h["X-Segue-Event"] for h, _ in receiver.received] == ["task.canceled"] * 2
    state = webhook_state(services, task_id)
    assert state["status"] == "failed" and state["last_status"] == 429 and state["attempts"] == 2


def test_timeouts_and_refused_connections_are_retried(settings):
    services = make_services(settings, webhook_timeout=0.3)
    with Receiver(delay=1.0) as slow:
        slow_task = ended_task(services, slow.url())
        closed_task = ended_task(services, f"http://127.0.0.1:{free_port()}/hook")
        assert webhooks.deliver_due(services) == 2
    for task_id in (slow_task, closed_task):
        state = webhook_state(services, task_id)
        assert state["status"] == "pending" and state["last_status"] is None and state["last_error"]
    assert "timed out" in webhook_state(services, slow_task)["last_error"]
    assert webhooks.pending_count(services.redis) == 2


def test_private_address_is_refused_without_sending(settings):
    services = make_services(settings, allow_private_urls=False)
    with Receiver() as receiver:
        task_id = ended_task(services, receiver.url())
        by_name = ended_task(services, receiver.url(host="localhost"))
        metadata_task = ended_task(services, "http://169.254.169.254/latest/meta-data/")
        assert webhooks.deliver_due(services) == 3
    assert receiver.received == []
    for tid in (task_id, by_name, metadata_task):
        state = webhook_state(services, tid)
        assert state["status"] == "failed" and state["last_status"] is None
        assert "non-public address" in state["last_error"]
    assert webhooks.pending_count(services.redis) == 0


def test_tasks_without_a_webhook_are_dropped_quietly(settings):
    services = make_services(settings)
    task_id = ended_task(services, None)
    assert webhooks.deliver_due(services) == 0
    assert webhooks.pending_count(services.redis) == 0
    assert webhooks.DOC_FIELD not in services.store.get_task(task_id)


def test_two_concurrent_deliverers_send_each_webhook_exactly_once(settings):
    # Two Services = two worker machines: separate connections, shared Redis and MongoDB.
    # The receiver holds the first delivery until a second arrives alongside it; each deliverer sends one at
    # a time, so the second can only come from the other deliverer: both work, however the threads are timed.
    first, second = make_services(settings, webhook_timeout=120), make_services(settings, webhook_timeout=120)
    with Receiver(meet=2) as receiver:
        task_ids = [ended_task(first, receiver.url()) for _ in range(8)]
        barrier = threading.Barrier(2)
        counts = []

        def deliver(services):
            barrier.wait()
            counts.append(webhooks.deliver_due(services))

        threads = [threading.Thread(target=deliver, args=(s,)) for s in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    delivered = sorted(json.loads(body)["task_id"] for _, body in receiver.received)
    assert delivered == sorted(task_ids)
    assert sum(counts) == 8 and all(c > 0 for c in counts), f"both should have worked: {counts}"
    assert all(webhook_state(first, t)["status"] == "delivered" for t in task_ids)


def test_delivery_loop_thread_delivers_and_stops(settings):
    services = make_services(settings)
    with Receiver() as receiver:
        stop = threading.Event()
        thread = threading.Thread(target=webhooks.run_delivery_loop, args=(services, stop, 0.05), daemon=True)
        thread.start()
        task_id = ended_task(services, receiver.url())
        deadline = time.monotonic() + 10
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    assert json.loads(receiver.received[0][1])["task_id"] == task_id


def continue_body(webhook: str) -> dict:
    clip = make_click_track(100, 3.0, sr=32000)
    return {"audio": base64.b64encode(wav_bytes(clip, 32000)).decode(), "prompt_duration": 2, "duration": 4,
            "webhook": webhook}


def test_a_task_run_by_the_worker_calls_its_webhook(settings, run_worker):
    app = create_app(settings=settings.with_(webhook_secret=SECRET, public_url=""))
    client, services = app.test_client(), app.extensions["segue"]
    with Receiver() as receiver:
        task_id = client.post("/continue", json=continue_body(receiver.url())).get_json()["task_id"]
        run_worker()
        assert webhooks.deliver_due(services) == 1
    headers, body = receiver.received[0]
    assert headers["X-Segue-Event"] == "task.completed"
    payload = json.loads(body)
    assert payload["status"] == "completed" and payload["request"]["webhook"] == receiver.url()
    # The audio URL (made from host and port here) points at the result route.
    path = urlsplit(payload["audio_url"]).path
    assert path == f"/tasks/{task_id}/audio"
    audio = client.get(path)
    assert audio.status_code == 200 and audio.data[:4] == b"RIFF"
    assert client.get(f"/tasks/{task_id}").get_json()["webhook_delivery"]["status"] == "delivered"


def test_canceling_a_queued_task_calls_its_webhook(client, services):
    with Receiver() as receiver:
        task_id = client.post("/continue", json=continue_body(receiver.url())).get_json()["task_id"]
        assert client.post(f"/tasks/{task_id}/cancel").get_json()["status"] == "canceled"
        assert webhooks.deliver_due(services) == 1
    assert receiver.received[0][0]["X-Segue-Event"] == "task.canceled"
    assert json.loads(receiver.received[0][1])["status"] == "canceled"


def test_https_is_verified_against_the_host_name_not_the_address(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    headers = {"Content-Type": "application/json"}
    with Receiver(tls=server_tls) as receiver:
        url = receiver.url(scheme="https", host="localhost")
        ok = webhooks.post(url, b"{}", headers, timeout=5, allow_private=True, tls_context=trusting)
        # The system's CAs do not know this certificate: nothing may be sent.
        untrusted = webhooks.post(url, b"{}", headers, timeout=5, allow_private=True)
        # The connection goes to 127.0.0.1, but the certificate names localhost only.
        by_address = webhooks.post(receiver.url(scheme="https"), b"{}", headers, timeout=5, allow_private=True,
                                   tls_context=trusting)
    assert ok.delivered and ok.status == 200
    assert len(receiver.received) == 1
    assert receiver.received[0][0]["Host"] == f"localhost:{receiver.server.server_address[1]}"
    assert untrusted.status is None and "CERTIFICATE_VERIFY_FAILED" in untrusted.error
    assert by_address.status is None and "CERTIFICATE_VERIFY_FAILED" in by_address.error


def test_a_receiver_that_trickles_its_answer_cannot_hold_the_sender(settings):
    """Each socket read meets the timeout, but the whole attempt is bounded: the slow receiver is a timeout."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def trickle():
        conn, _ = listener.accept()
        conn.recv(65536)
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
            if stop.wait(0.3):
                break
            conn.sendall(bytes([byte]))
        conn.close()

    threading.Thread(target=trickle, daemon=True).start()
    attempt = webhooks.post_within(f"http://127.0.0.1:{listener.getsockname()[1]}/hook", b"{}", {}, timeout=0.5,
                                   allow_private=True)
    stop.set()
    listener.close()
    # Had the sender waited for the whole answer (~11 s of trickle), it would have got a 200; the timeout
    # proves the attempt was cut short, without timing it (a slow machine cannot turn this into a failure).
    assert attempt.status is None and "TimeoutError" in attempt.error and attempt.retryable
