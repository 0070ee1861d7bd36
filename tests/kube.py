"""Rendering deploy/kubernetes with the real kustomize (``kubectl kustomize``), offline.

Shared by the offline manifest tests and ``make test-kubernetes``. Where kubectl is missing this fails
with a sentence saying so: a manifest test that skips would pass on a machine that checked nothing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("cpu", "gpu")
KUBECTL_MISSING = ("kubectl is not on PATH: the Kubernetes manifest tests render deploy/kubernetes with "
                   "`kubectl kustomize` and cannot check anything without it. Install kubectl (1.27 or later, "
                   "it bundles kustomize v5), e.g. from https://kubernetes.io/docs/tasks/tools/")


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail(KUBECTL_MISSING, pytrace=False)
    return path


def render(folder: str | Path) -> list[dict]:
    """The objects ``kubectl kustomize FOLDER`` renders (an overlay name, or any kustomization folder)."""
    folder = Path(folder)
    if not folder.is_absolute() and not folder.exists():
        folder = KUBERNETES / "overlays" / str(folder)
    done = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize {folder} failed:\n{done.stderr}", pytrace=False)
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(workload: dict) -> dict:
    """The pod spec of a Deployment or a CronJob."""
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: dict) -> dict:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    return workload["spec"]["template"]["metadata"].get("labels", {})


def workloads(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] in ("Deployment", "CronJob")]


def config_data(objects: list[dict]) -> dict[str, str]:
    """The settings ConfigMap's data (its name carries kustomize's content hash)."""
    maps = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("segue-config")]
    assert len(maps) == 1, [m["metadata"]["name"] for m in maps]
    return maps[0].get("data", {})
