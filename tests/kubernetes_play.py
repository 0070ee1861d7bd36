"""`make test-kubernetes`: the rendered cpu overlay played as real pods with `podman kube play`.

Not part of `make test` (its file name is not ``test_*.py``; the Makefile names it): it needs podman and the
images built from our Dockerfiles (``scripts/images.sh build``), and takes minutes.

What runs: ``kubectl kustomize deploy/kubernetes/overlays/cpu``, then the API, worker and sidecar Deployments,
the settings ConfigMap, the Secret, the model-cache PersistentVolumeClaim, and the maintenance CronJob's pod
template (played once as a Pod), with the images' own commands, environment, volumes, security contexts and
resource limits. The stand-ins for Redis and MongoDB are the real servers the other tests use (Valkey and
SecantusDB) on this machine's loopback, and the media is served from loopback too. One ``/generate`` goes
through the API pod to the worker pod (the tiny MusicGen) and completes; then everything is torn down.

What podman cannot play is left out and said so: Services, the HPA, the PodDisruptionBudget, NetworkPolicies
and KEDA's objects (no cluster DNS, no scheduler, no KEDA here). The changes made to the rendered objects for
this machine are all in ``for_podman`` below, each with its reason.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import soundfile as sf
import yaml

from tests import kube
from tests.conftest import wait_for

PLAYED_KINDS = {"Deployment", "ConfigMap", "PersistentVolumeClaim"}
NOT_PLAYABLE = {"Namespace", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
                "ScaledObject", "TriggerAuthentication"}
IMAGES = ("segue-api", "segue-worker", "segue-express-server")
MODEL_MOUNT = "/opt/segue-test-model"
READY_TIMEOUT = 600.0  # the worker image imports torch and loads the model on a shared 2-core machine
TASK_TIMEOUT = 600.0


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    conf = env.get("CONTAINERS_CONF") or str(kube.ROOT / "deploy" / "podman" / "containers.conf")
    if not Path(conf).is_file():
        pytest.fail(f"CONTAINERS_CONF={conf} does not exist: run `make test-kubernetes` (it sets it)", pytrace=False)
    env["CONTAINERS_CONF"] = conf
    return env


def podman(*args: str, check: bool = True, timeout: float = 300, input: bytes | None = None):
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: `scripts/images.sh tools` installs it (apt, as root)", pytrace=False)
    # crun refuses these machines' hybrid cgroups: runc with cgroupfs (also in containers.conf, said here too
    # so a CONTAINERS_CONF without [engine] still works).
    done = subprocess.run(["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs", *args], env=podman_env(),
                          capture_output=True, timeout=timeout, input=input)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({done.returncode}):\n"
                             f"{done.stdout.decode(errors='replace')}\n{done.stderr.decode(errors='replace')}")
    return done


def _rename(value: str, run: str) -> str:
    return f"{value}-{run}"


def for_podman(objects: list[dict], *, run: str, redis_url: str, mongo_url: str, api_port: int,
               sidecar_port: int, model_dir: Path) -> tuple[list[dict], dict[str, dict[str, str]]]:
    """The rendered objects podman can play, changed only where this machine needs it.

    Returns the objects to play and the Secrets (name -> data), which podman 4.3 reads from its own secret
    store (a JSON object of base64 values) rather than from the played file.
    """
    objects = copy.deepcopy(objects)
    played, secrets = [], {}
    names = {}  # ConfigMap, Secret and claim names -> this run's (so parallel or leftover runs never collide)
    for o in objects:
        if o["kind"] in ("ConfigMap", "Secret", "PersistentVolumeClaim"):
            names[o["metadata"]["name"]] = _rename(o["metadata"]["name"], run)
    for o in objects:
        kind = o["kind"]
        if kind in NOT_PLAYABLE:
            continue
        if kind == "Secret":
            data = dict(o.get("stringData", {}))
            data.update({k: base64.b64decode(v).decode() for k, v in o.get("data", {}).items()})
            assert set(data) >= {"REDIS_URL", "MONGO_URL", "REDIS_ADDRESS", "REDIS_PASSWORD"}, sorted(data)
            # The stand-ins instead of the example's in-cluster addresses.
            redis = urlsplit(redis_url)
            data.update(REDIS_URL=redis_url, MONGO_URL=mongo_url, REDIS_ADDRESS=f"{redis.hostname}:{redis.port}",
                        REDIS_PASSWORD="")
            secrets[names[o["metadata"]["name"]]] = data
            continue
        o["metadata"]["name"] = names.get(o["metadata"]["name"], o["metadata"]["name"])
        if kind == "ConfigMap":
            o["data"].update({
                # No Services here: pods share the host's network, so each listens on a free loopback port.
                "PORT": str(api_port), "EXPRESS_PORT": str(sidecar_port), "SEGUE_HOST": "127.0.0.1",
                # The tiny model (mounted below) instead of weights from the Hugging Face Hub.
                "SEGUE_MODELS": MODEL_MOUNT,
                # The media server is on loopback, which Segue refuses by default.
                "SEGUE_ALLOW_PRIVATE_URLS": "1",
            })
        if kind == "CronJob":
            # podman plays no CronJob: its job's pod template is played once as a Pod that runs to its end.
            template = o["spec"]["jobTemplate"]["spec"]["template"]
            o = {"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": _rename(o["metadata"]["name"], run), "labels": template["metadata"]["labels"]},
                 "spec": template["spec"]}
        if kind in ("Deployment", "CronJob"):
            if kind == "Deployment":
                o["metadata"]["name"] = _rename(o["metadata"]["name"], run)
                o["spec"]["replicas"] = 1
            spec = o["spec"]["template"]["spec"] if kind == "Deployment" else o["spec"]
            # Redis, MongoDB and the media server are this machine's loopback services.
            spec["hostNetwork"] = True
            for c in spec["containers"]:
                # Host networking takes no port mappings: the ports go, and probes name the port's number.
                port_numbers = {p["name"]: p["containerPort"] for p in c.pop("ports", [])}
                for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                    http = c.get(probe, {}).get("httpGet")
                    if http:
                        port = port_numbers.get(http["port"], http["port"])
                        http["port"] = {8001: api_port, 3000: sidecar_port}.get(port, port)
                for source in c.get("envFrom", []):
                    ref = source.get("configMapRef") or source.get("secretRef")
                    ref["name"] = names[ref["name"]]
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        ref["name"] = names[ref["name"]]
                    if e["name"] == "EXPRESS_PORT":
                        e["value"] = str(sidecar_port)
                    if e["name"] == "EXPRESS_HOST":
                        e["value"] = "127.0.0.1"
            for volume in spec.get("volumes", []):
                claim = volume.get("persistentVolumeClaim")
                if claim:
                    claim["claimName"] = names[claim["claimName"]]
            if o["metadata"]["name"].startswith("segue-worker"):
                spec["volumes"].append({"name": "test-model",
                                        "hostPath": {"path": str(model_dir), "type": "Directory"}})
                spec["containers"][0]["volumeMounts"].append(
                    {"name": "test-model", "mountPath": MODEL_MOUNT, "readOnly": True})
        played.append(o)
    return played, secrets


@pytest.fixture(scope="module")
def stack(redis_server, mongo_server, tiny_model, tmp_path_factory):
    podman("version")
    tag = os.environ.get("SEGUE_IMAGE_TAG", "latest")
    for image in IMAGES:
        if podman("image", "exists", f"{image}:{tag}", check=False).returncode != 0:
            pytest.fail(f"image {image}:{tag} is missing: `SEGUE_IMAGE_TAG={tag} scripts/images.sh build` builds "
                        "it (`make test-kubernetes` does)", pytrace=False)
    run = uuid.uuid4().hex[:8]
    work = tmp_path_factory.mktemp("kube-play")
    # The worker runs as uid 10001: a world-readable copy of the tiny model.
    model_dir = work / "model"
    shutil.copytree(tiny_model, model_dir)
    for path in [model_dir, *model_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    work.chmod(0o755)
    ports = [_free_port(), _free_port()]
    objects = kube.render(_tagged_cpu_overlay(work, tag))
    played, secrets = for_podman(objects, run=run, redis_url=redis_server.url, mongo_url=mongo_server.url,
                                 api_port=ports[0], sidecar_port=ports[1], model_dir=model_dir)
    skipped = sorted({f"{o['kind']} {o['metadata']['name']}" for o in objects if o["kind"] in NOT_PLAYABLE})
    print(f"\nkube play: run {run}; not playable by podman, left out: {', '.join(skipped)}")
    manifest = work / "play.yaml"
    manifest.write_text(yaml.safe_dump_all(played, sort_keys=False))
    for name, data in secrets.items():
        content = json.dumps({k: base64.b64encode(v.encode()).decode() for k, v in data.items()}).encode()
        podman("secret", "create", name, "-", input=content)
    try:
        podman("kube", "play", str(manifest), timeout=600)
        yield {"run": run, "api": f"http://127.0.0.1:{ports[0]}", "sidecar": f"http://127.0.0.1:{ports[1]}",
               "objects": played, "manifest": manifest}
    finally:
        _teardown(run, manifest, secrets, played)


def _tagged_cpu_overlay(work: Path, tag: str) -> Path:
    """A kustomization that is the cpu overlay with the images this test built (a tag of their own, so
    images built meanwhile from another checkout under ``latest`` are never played by mistake)."""
    folder = work / "overlay"
    folder.mkdir()
    cpu = os.path.relpath(kube.KUBERNETES / "overlays" / "cpu", folder)  # kustomize takes no absolute paths
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": [cpu],
        "images": [{"name": image, "newTag": tag} for image in IMAGES]}))
    return folder


def _teardown(run: str, manifest: Path, secrets: dict, played: list[dict]) -> None:
    for pod in _pods(run):
        print(f"--- logs of {pod} (last 40 lines) ---")
        for container in _containers(pod):
            logs = podman("logs", "--tail", "40", container, check=False)
            print(logs.stdout.decode(errors="replace") + logs.stderr.decode(errors="replace"))
    podman("kube", "down", str(manifest), check=False, timeout=300)
    for pod in _pods(run):  # the maintenance Pod is not a Deployment's: `kube down` removes it too, or this does
        podman("pod", "rm", "--force", pod, check=False)
    for name in secrets:
        podman("secret", "rm", name, check=False)
    for o in played:
        if o["kind"] == "PersistentVolumeClaim":
            podman("volume", "rm", "--force", o["metadata"]["name"], check=False)
    assert not _pods(run), f"pods of run {run} left behind: {_pods(run)}"


def _pods(run: str) -> list[str]:
    out = podman("pod", "ps", "--format", "{{.Name}}", check=False).stdout.decode().split()
    return [p for p in out if run in p]


def _containers(pod: str) -> list[str]:
    out = podman("ps", "-a", "--filter", f"pod={pod}", "--format", "{{.Names}}", check=False).stdout.decode().split()
    return [c for c in out if not c.endswith("-infra")]


def _container(stack: dict, deployment: str) -> str:
    (pod,) = [p for p in _pods(stack["run"]) if p.startswith(f"{deployment}-{stack['run']}")]
    (container,) = _containers(pod)
    return container


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    try:
        return requests.get(url, timeout=5)
    except requests.RequestException:
        return None


def test_generate_completes_through_the_played_cpu_overlay(stack, media_server):
    api = stack["api"]
    # The API pod: liveness (/ping) and readiness (/ready, i.e. Redis and MongoDB answer) as its probes ask.
    wait_for(lambda: (r := _get(f"{api}/ready")) is not None and r.status_code == 200,
             timeout=300, interval=0.5, message="the API pod to be ready")
    assert _get(f"{api}/ping").json() == {"status": "ok"}
    # The worker pod: its startup/readiness probe's command passes once the model is loaded.
    worker = _container(stack, "segue-worker")
    wait_for(lambda: podman("exec", worker, "python", "-m", "worker.serving.healthcheck", "--ready",
                            check=False, timeout=60).returncode == 0,
             timeout=READY_TIMEOUT, interval=2, message="the worker pod's startup probe to pass")
    assert podman("healthcheck", "run", worker, check=False, timeout=60).returncode == 0  # its liveness probe
    inspect = json.loads(podman("inspect", worker).stdout)[0]
    assert inspect["HostConfig"]["ReadonlyRootfs"] is True
    assert inspect["Config"]["User"] == "10001:10001"
    health = _get(f"{api}/health").json()
    assert health["status"] == "live" and health["workers"] == 1, health
    assert _get(f"{api}/queue").json() == {"queue": "segue", "queued": 0, "running": 0, "total": 0}

    answer = requests.post(f"{api}/generate", json={"url": media_server.url("/click120.wav"), "currentTime": 2,
                                                    "promptLength": 2, "duration": "4-6", "seed": 3}, timeout=30)
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task_id"]
    seen_total = []

    def ended():
        seen_total.append(_get(f"{api}/queue").json()["total"])
        task = _get(f"{api}/tasks/{task_id}").json()
        return task if task["status"] in ("completed", "failed", "canceled") else None

    task = wait_for(ended, timeout=TASK_TIMEOUT, interval=0.5, message="the task to end")
    assert task["status"] == "completed", task.get("error")
    assert max(seen_total) == 1  # KEDA's metrics-api trigger would have seen the task until it ended
    assert _get(f"{api}/queue").json()["total"] == 0
    audio = base64.b64decode(task["audio"])
    info = sf.info(io.BytesIO(audio))
    assert info.samplerate == 32000 and 4 <= info.duration <= 6.1
    assert _get(f"{api}/progress/{task_id}").json() == {"progress": 100.0}

    # The sidecar pod crops the result (the web app's next step), once its probe's /health answers.
    wait_for(lambda: (r := _get(f"{stack['sidecar']}/health")) is not None and r.status_code == 200,
             timeout=300, interval=0.5, message="the sidecar pod to be ready")
    cropped = requests.post(f"{stack['sidecar']}/crop-audio",
                            json={"audioData": task["audio"], "start": 0, "end": 2}, timeout=60)
    assert cropped.status_code == 200, cropped.text
    assert sf.info(io.BytesIO(base64.b64decode(cropped.text))).duration == pytest.approx(2.0, abs=0.2)


def test_the_maintenance_cronjobs_pod_runs_to_success(stack):
    (pod,) = [p for p in _pods(stack["run"]) if p.startswith("segue-maintenance")]
    (container,) = _containers(pod)
    code = podman("wait", container, timeout=300).stdout.decode().strip()
    logs = podman("logs", container, check=False)
    assert code == "0", logs.stdout.decode(errors="replace") + logs.stderr.decode(errors="replace")
    inspect = json.loads(podman("inspect", container).stdout)[0]
    assert inspect["HostConfig"]["ReadonlyRootfs"] is True
