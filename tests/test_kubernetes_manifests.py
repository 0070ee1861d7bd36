"""deploy/kubernetes, checked offline: rendered by the real kustomize, validated strictly against the schemas
of Kubernetes 1.30-1.33 (kubernetes-validate) and KEDA's own CRDs (vendored), linted, and held to the
invariants a cluster would only reveal at run time (selectors, names, grace periods, probes, the queue key).

Nothing here talks to a cluster: what these tests cannot prove is in docs/deploy-kubernetes.md.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from backend.api.openapi import build_openapi
from backend.api.responses import QueueLoad
from backend.core.jobqueue import queue_key
from backend.core.settings import SETTINGS, Settings
from tests import kube

KEDA_DIR = Path(__file__).parent / "kubernetes" / "keda-v2.20.2"
KUBERNETES_VERSIONS = ("1.30.0", "1.31.0", "1.32.0", "1.33.0")
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
# The images our Dockerfiles build (`make images`), by the name the manifests give them.
IMAGES = {"segue-api": "Dockerfile.api", "segue-worker": "Dockerfile.worker",
          "segue-express-server": "express-server/Dockerfile"}
DRAIN_SETTING = "SEGUE_DRAIN_SECONDS"  # the worker's drain limit on SIGTERM (backend/core/settings.py)


@pytest.fixture(scope="module", params=kube.OVERLAYS)
def overlay(request) -> tuple[str, list[dict]]:
    return request.param, kube.render(request.param)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: kube.render(name) for name in kube.OVERLAYS}


def containers(workload: dict) -> list[dict]:
    return kube.pod_spec(workload)["containers"]


# -- rendering and schemas ------------------------------------------------------------------------

def test_every_overlay_renders_the_whole_deployment(overlay):
    name, objects = overlay
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects
                   if o["kind"] not in ("ConfigMap",))
    assert kinds == sorted([
        ("CronJob", "segue-maintenance"), ("Deployment", "segue-api"), ("Deployment", "segue-express-server"),
        ("Deployment", "segue-worker"), ("HorizontalPodAutoscaler", "segue-api"), ("Namespace", "segue"),
        ("NetworkPolicy", "segue-api-ingress"), ("NetworkPolicy", "segue-default-deny-ingress"),
        ("NetworkPolicy", "segue-express-server-ingress"), ("PersistentVolumeClaim", "segue-model-cache"),
        ("PodDisruptionBudget", "segue-api"), ("ScaledObject", "segue-worker"), ("Secret", "segue-secrets"),
        ("Service", "segue-api"), ("Service", "segue-express-server"), ("TriggerAuthentication", "segue-redis"),
    ]), name
    assert kube.config_data(objects)
    for o in objects:
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == "segue", o["metadata"]["name"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_are_valid_for_kubernetes_1_30_to_1_33(rendered, version):
    checked = 0
    for name, objects in rendered.items():
        for o in objects:
            if o["kind"] in KEDA_KINDS:
                continue
            try:
                kubernetes_validate.validate(o, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {o['kind']} {o['metadata']['name']} is invalid for Kubernetes {version}: "
                            f"{exc.message} at {'.'.join(map(str, exc.path))}", pytrace=False)
            checked += 1
    assert checked == 2 * 15  # every object but the two KEDA ones, in both overlays


def test_strict_validation_rejects_an_unknown_field(rendered):
    # The check above would pass a typo if validation were not strict: show that it is not.
    api = copy.deepcopy(kube.one(rendered["cpu"], "Deployment", "segue-api"))
    api["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"httpGet": {"path": "/ping", "port": 8001}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, KUBERNETES_VERSIONS[0], strict=True)


def _strict(schema):
    """A CRD's structural schema as the API server applies it with strict field validation (kubectl's
    default since 1.27): unknown fields are errors, except where the schema preserves unknown fields."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def keda_validator(kind: str) -> jsonschema.Draft7Validator:
    plural = {"ScaledObject": "scaledobjects", "TriggerAuthentication": "triggerauthentications"}[kind]
    crd = yaml.safe_load((KEDA_DIR / f"keda.sh_{plural}.yaml").read_text())
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
    assert version["name"] == "v1alpha1"
    schema = _strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object", "required": ["name"]}
    schema["properties"]["apiVersion"]["const"] = f"{crd['spec']['group']}/{version['name']}"
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
    return jsonschema.Draft7Validator(schema)


def test_keda_objects_are_valid_against_kedas_crds(rendered):
    assert (KEDA_DIR / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert "v2.20.2" in (KEDA_DIR / "VERSION").read_text()
    checked = 0
    for name, objects in rendered.items():
        for o in objects:
            if o["kind"] in KEDA_KINDS:
                errors = sorted(keda_validator(o["kind"]).iter_errors(o), key=str)
                assert not errors, f"{name}: {o['kind']}: " + "; ".join(
                    f"{e.message} at {'.'.join(map(str, e.path))}" for e in errors)
                checked += 1
    assert checked == 4


def test_keda_validation_rejects_unknown_and_mistyped_fields(rendered):
    scaled = kube.one(rendered["gpu"], "ScaledObject")
    typo = copy.deepcopy(scaled)
    typo["spec"]["minReplicaCounts"] = 0
    wrong_type = copy.deepcopy(scaled)
    wrong_type["spec"]["minReplicaCount"] = "zero"
    no_target = copy.deepcopy(scaled)
    del no_target["spec"]["scaleTargetRef"]
    for bad in (typo, wrong_type, no_target):
        assert list(keda_validator("ScaledObject").iter_errors(bad))


def test_triggers_use_only_parameters_their_keda_scaler_reads(rendered):
    known = json.loads((KEDA_DIR / "scaler-parameters.json").read_text())
    for name, objects in rendered.items():
        scaled = kube.one(objects, "ScaledObject")
        assert {t["type"] for t in scaled["spec"]["triggers"]} == {"redis", "metrics-api"}
        for trigger in scaled["spec"]["triggers"]:
            params = known[trigger["type"]]
            for key in trigger["metadata"]:
                base = key.removesuffix("FromEnv")
                ok = base in params["fromEnv"] if key != base else key in params["metadata"]
                assert ok, f"{name}: {trigger['type']} trigger has no parameter {key!r}"
            for value in trigger["metadata"].values():
                assert isinstance(value, str), f"{name}: KEDA trigger metadata values are strings, got {value!r}"
            auth_ref = trigger.get("authenticationRef")
            if auth_ref:
                auth = kube.one(objects, "TriggerAuthentication", auth_ref["name"])
                for ref in auth["spec"]["secretTargetRef"]:
                    assert ref["parameter"] in params["authParams"], ref
        # KEDA refuses a fallback unless every trigger's metric is an average (the default type).
        if "fallback" in scaled["spec"]:
            assert all(t.get("metricType", "AverageValue") in ("AverageValue", "Value")
                       for t in scaled["spec"]["triggers"])
        assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


def test_manifests_pass_yamllint():
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    config = YamlLintConfig(file=str(kube.KUBERNETES / ".yamllint.yaml"))
    files = sorted(kube.KUBERNETES.rglob("*.yaml"))
    assert len(files) >= 10
    problems = [f"{path.relative_to(kube.ROOT)}:{p.line}:{p.column}: {p.desc} ({p.rule})"
                for path in files for p in linter.run(path.read_text(), config, str(path))]
    assert not problems, "\n".join(problems)


def test_a_missing_kubectl_fails_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="kubectl is not on PATH"):
        kube.render("cpu")


# -- invariants -----------------------------------------------------------------------------------

def _matches(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are used here: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_every_selector_matches_its_labels(overlay):
    name, objects = overlay
    deployments = kube.find(objects, "Deployment")
    for d in deployments:
        assert d["spec"]["selector"]["matchLabels"], d["metadata"]["name"]
        assert _matches(d["spec"]["selector"], kube.pod_labels(d)), d["metadata"]["name"]
        # Two Deployments whose selectors overlap would fight over each other's pods.
        others = [o for o in deployments if o is not d and _matches(d["spec"]["selector"], kube.pod_labels(o))]
        assert not others, d["metadata"]["name"]
    for service in kube.find(objects, "Service"):
        (target,) = [d for d in deployments if _matches({"matchLabels": service["spec"]["selector"]},
                                                       kube.pod_labels(d))]
        ports = {p["name"]: p["containerPort"] for c in containers(target) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)
    for pdb in kube.find(objects, "PodDisruptionBudget"):
        assert [d for d in deployments if _matches(pdb["spec"]["selector"], kube.pod_labels(d))]
    for policy in kube.find(objects, "NetworkPolicy"):
        selected = [w for w in kube.workloads(objects) if _matches(policy["spec"]["podSelector"], kube.pod_labels(w))]
        assert selected, policy["metadata"]["name"]
    for ref in ([h["spec"]["scaleTargetRef"] for h in kube.find(objects, "HorizontalPodAutoscaler")]
                + [s["spec"]["scaleTargetRef"] for s in kube.find(objects, "ScaledObject")]):
        assert ref.get("kind", "Deployment") == "Deployment"
        kube.one(objects, "Deployment", ref["name"])
    # HPA and KEDA never manage the same Deployment (KEDA makes its own HPA).
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in kube.find(objects, "HorizontalPodAutoscaler")}
    keda_targets = {s["spec"]["scaleTargetRef"]["name"] for s in kube.find(objects, "ScaledObject")}
    assert hpa_targets == {"segue-api"} and keda_targets == {"segue-worker"}


def _env_names(objects: list[dict], container: dict) -> set[str]:
    names = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(kube.one(objects, "ConfigMap", source["configMapRef"]["name"]).get("data", {}))
        if "secretRef" in source:
            secret = kube.one(objects, "Secret", source["secretRef"]["name"])
            names |= set(secret.get("stringData", {})) | set(secret.get("data", {}))
    return names


def _secret_keys(objects: list[dict], name: str) -> set[str]:
    secret = kube.one(objects, "Secret", name)
    return set(secret.get("stringData", {})) | set(secret.get("data", {}))


def test_every_from_env_env_from_and_secret_reference_exists(overlay):
    name, objects = overlay
    for workload in kube.workloads(objects):
        spec = kube.pod_spec(workload)
        for c in containers(workload):
            for source in c.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in source:
                        kube.one(objects, kind, source[key]["name"])
            for e in c.get("env", []):
                ref = e.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    assert ref["secretKeyRef"]["key"] in _secret_keys(objects, ref["secretKeyRef"]["name"]), e
                if "configMapKeyRef" in ref:
                    data = kube.one(objects, "ConfigMap", ref["configMapKeyRef"]["name"]).get("data", {})
                    assert ref["configMapKeyRef"]["key"] in data, e
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                kube.one(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
            if "configMap" in volume or "secret" in volume:
                kind = "ConfigMap" if "configMap" in volume else "Secret"
                source = volume.get("configMap") or volume.get("secret")
                kube.one(objects, kind, source.get("name") or source.get("secretName"))
    scaled = kube.one(objects, "ScaledObject")
    target = kube.one(objects, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    env = _env_names(objects, containers(target)[0])
    from_env = [(k, v) for t in scaled["spec"]["triggers"] for k, v in t["metadata"].items() if k.endswith("FromEnv")]
    assert from_env, "the redis trigger reads its address from the worker's environment"
    for key, var in from_env:
        assert var in env, f"{name}: {key}: {var} is not set in {target['metadata']['name']}'s container"
    for auth in kube.find(objects, "TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in _secret_keys(objects, ref["name"]), ref
    for trigger in scaled["spec"]["triggers"]:
        if "authenticationRef" in trigger:
            kube.one(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])


def drain_limit(objects: list[dict]) -> float:
    """The worker's drain limit: the rendered ConfigMap's, else the code's default."""
    data = kube.config_data(objects)
    if DRAIN_SETTING in data:
        return float(data[DRAIN_SETTING])
    defaults = {s.env: s.default for s in SETTINGS}
    if DRAIN_SETTING not in defaults:
        pytest.fail(f"{DRAIN_SETTING} is neither in the ConfigMap nor in backend/core/settings.py", pytrace=False)
    return float(defaults[DRAIN_SETTING])


def test_the_workers_grace_period_covers_the_drain_limit(overlay):
    name, objects = overlay
    worker = kube.one(objects, "Deployment", "segue-worker")
    grace = kube.pod_spec(worker)["terminationGracePeriodSeconds"]
    limit = drain_limit(objects)
    assert limit > 0
    # Above the limit, with room for handing back what is left after it, before Kubernetes' SIGKILL.
    assert grace >= limit + 10, f"{name}: grace {grace}s, drain limit {limit}s"
    # The worker must get SIGTERM itself: its command is the process (no shell that would swallow it).
    assert containers(worker)[0]["command"] == ["python", "-m", "worker"]


def test_configmap_holds_only_settings_segue_reads_and_they_parse(overlay):
    name, objects = overlay
    data = kube.config_data(objects)
    known = {s.env for s in SETTINGS}
    assert not set(data) - known, f"{name}: not Segue settings: {sorted(set(data) - known)}"
    settings = Settings.from_env(data)  # a bad value raises ValueError naming it
    assert settings.max_batch >= 1
    assert settings.drain_seconds == drain_limit(objects)
    secret = kube.one(objects, "Secret", "segue-secrets")
    assert not set(secret["stringData"]) & set(data), "a setting is both in the ConfigMap and the Secret"


def test_every_container_has_probes_resources_and_a_security_context(overlay):
    name, objects = overlay
    for workload in kube.workloads(objects):
        spec = kube.pod_spec(workload)
        where = f"{name}: {workload['kind']} {workload['metadata']['name']}"
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] > 0, where
        assert pod_security["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        temp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for c in containers(workload):
            security = c["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["runAsNonRoot"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert not security.get("privileged"), where
            # A read-only root needs somewhere to write temporary files.
            assert any(m["mountPath"] == "/tmp" and m["name"] in temp_volumes for m in c["volumeMounts"]), where
            resources = c["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert "memory" in resources["limits"], where
            if workload["kind"] == "CronJob":
                # A job's liveness is its deadline: probes are for long-running processes.
                assert workload["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] > 0, where
                continue
            assert "livenessProbe" in c and "readinessProbe" in c, where
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if port is not None:
                    assert port in {p["name"] for p in c["ports"]} | {p["containerPort"] for p in c["ports"]}, where


def test_probes_ask_the_routes_that_mean_alive_and_ready(rendered):
    paths = build_openapi(Settings())["paths"]
    api = containers(kube.one(rendered["cpu"], "Deployment", "segue-api"))[0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/ping"
    # Ready means "can take requests", which must not depend on a worker (they may be scaled to zero).
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert {"/ping", "/ready"} <= set(paths)
    worker = containers(kube.one(rendered["gpu"], "Deployment", "segue-worker"))[0]
    assert worker["startupProbe"]["exec"]["command"] == ["python", "-m", "worker.serving.healthcheck", "--ready"]
    assert worker["livenessProbe"]["exec"]["command"] == ["python", "-m", "worker.serving.healthcheck"]
    # The startup probe allows for loading the model: at least 10 minutes.
    startup = worker["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


def test_the_redis_trigger_reads_the_codes_queue_key(overlay):
    name, objects = overlay
    data = kube.config_data(objects)
    queue = data.get("SEGUE_QUEUE", Settings().queue_name)
    scaled = kube.one(objects, "ScaledObject")
    (redis_trigger,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "redis"]
    assert redis_trigger["metadata"]["listName"] == queue_key(queue) == "rq:queue:segue"


def test_the_metrics_api_trigger_reads_queued_plus_running_from_the_api_service(overlay):
    name, objects = overlay
    scaled = kube.one(objects, "ScaledObject")
    (metrics,) = [t["metadata"] for t in scaled["spec"]["triggers"] if t["type"] == "metrics-api"]
    url = urlsplit(metrics["url"])
    service = kube.one(objects, "Service", "segue-api")
    # KEDA's operator lives in another namespace: the host must name this one.
    assert url.hostname == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    assert url.path in build_openapi(Settings())["paths"] and url.path == "/queue"
    assert metrics["valueLocation"] == "total" and "total" in QueueLoad.model_fields
    # Both targets are per worker: one worker's engine batch (SEGUE_MAX_BATCH).
    batch = kube.config_data(objects)["SEGUE_MAX_BATCH"]
    (redis_trigger,) = [t["metadata"] for t in scaled["spec"]["triggers"] if t["type"] == "redis"]
    assert metrics["targetValue"] == redis_trigger["listLength"] == batch
    assert metrics["activationTargetValue"] == redis_trigger["activationListLength"] == "0"


def test_gpu_workers_take_one_gpu_each_and_scale_to_zero(rendered):
    gpu = kube.one(rendered["gpu"], "Deployment", "segue-worker")
    (worker,) = containers(gpu)
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == 1
    spec = kube.pod_spec(gpu)
    assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert kube.config_data(rendered["gpu"])["SEGUE_DEVICE"] == "cuda"
    assert kube.one(rendered["gpu"], "ScaledObject")["spec"]["minReplicaCount"] == 0
    # The cpu overlay runs anywhere: no GPU asked for, and one worker always up.
    cpu = kube.one(rendered["cpu"], "Deployment", "segue-worker")
    assert "nvidia.com/gpu" not in json.dumps(cpu)
    assert "tolerations" not in kube.pod_spec(cpu) and "nodeSelector" not in kube.pod_spec(cpu)
    assert kube.one(rendered["cpu"], "ScaledObject")["spec"]["minReplicaCount"] >= 1
    for name, objects in rendered.items():  # nothing but the worker asks for a GPU
        for workload in kube.workloads(objects):
            if workload["metadata"]["name"] != "segue-worker":
                assert "nvidia.com/gpu" not in json.dumps(workload), (name, workload["metadata"]["name"])


def test_only_the_api_and_the_sidecar_take_traffic(overlay):
    name, objects = overlay
    policies = kube.find(objects, "NetworkPolicy")
    (deny,) = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert deny["spec"]["policyTypes"] == ["Ingress"] and not deny["spec"].get("ingress")
    open_to = {}
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            for w in kube.workloads(objects):
                if _matches(policy["spec"]["podSelector"], kube.pod_labels(w)):
                    open_to.setdefault(w["metadata"]["name"], set()).update(p["port"] for p in rule["ports"])
    assert open_to == {"segue-api": {8001}, "segue-express-server": {3000}}, name
    for w in kube.workloads(objects):
        ports = {p["containerPort"] for c in containers(w) for p in c.get("ports", [])}
        assert ports == open_to.get(w["metadata"]["name"], set()), w["metadata"]["name"]


def test_images_are_the_ones_our_dockerfiles_build_and_commands_exist(overlay):
    name, objects = overlay
    for workload in kube.workloads(objects):
        for c in containers(workload):
            image = c["image"].rsplit(":", 1)[0]
            assert image in IMAGES, c["image"]
            assert (kube.ROOT / IMAGES[image]).is_file()
    api = containers(kube.one(objects, "Deployment", "segue-api"))[0]
    assert (kube.ROOT / api["command"][2]).is_file()  # gunicorn -c backend/api/gunicorn_conf.py
    maintenance = containers(kube.one(objects, "CronJob", "segue-maintenance"))[0]
    assert maintenance["command"] == ["python", "-m", "backend.core.maintenance"]
    assert (kube.ROOT / "backend" / "core" / "maintenance.py").is_file()
