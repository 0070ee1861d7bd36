"""docker-compose.yml, .env.example, scripts/images.sh and the settings table agree.

`make test-images` runs the compose file for real; these checks are the cheap part that `make test` keeps:
every variable compose passes through is listed in .env.example with Segue's own default, and compose runs
the images scripts/images.sh builds.
"""

from __future__ import annotations

import re
import subprocess

import yaml

from backend.core.settings import SETTINGS
from tests.conftest import ROOT

COMPOSE = (ROOT / "docker-compose.yml").read_text()
# Variables compose reads that are not settings of backend/core/settings.py, with their defaults.
COMPOSE_ONLY = {
    "SEGUE_IMAGE_TAG": "latest",
    "SEGUE_MONGO_IMAGE": "mongo:7.0",
    "SEGUE_PUBLISH_ADDRESS": "0.0.0.0",
    # The worker's drain on SIGTERM (issue 19); once it is in settings.py it is checked like the others.
    "SEGUE_DRAIN_SECONDS": "60",
}


def _render(value) -> str:
    """A default as it is written in an environment file."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        if value and isinstance(value[0], tuple):
            return ";".join(f"{k}={v}" for k, v in value)
        return ",".join(value)
    return str(value)


def _example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(m.groups() for line in lines if (m := re.fullmatch(r"# ([A-Z][A-Z0-9_]*)=(.*)", line)))


def test_env_example_lists_exactly_what_compose_passes_through():
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE))
    assert interpolated == set(_example())
    # Every one has a fallback, so a host without a .env file gets the defaults, never an error.
    assert not re.findall(r"\$\{[A-Z0-9_]+\}", COMPOSE)


def test_env_example_shows_segues_defaults():
    settings = {s.env: s for s in SETTINGS}
    example = _example()
    for name, shown in example.items():
        if name in settings:
            assert shown == _render(settings[name].default), name
        else:
            assert shown == COMPOSE_ONLY[name], f"{name} is neither a setting nor a known compose variable"


def test_compose_runs_the_images_that_images_sh_builds():
    names = dict(line.split("=", 1) for line in subprocess.run(
        ["bash", str(ROOT / "scripts/images.sh"), "names"], capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin"}).stdout.split())
    services = yaml.safe_load(COMPOSE)["services"]
    assert set(services) == {"redis", "mongo", "api", "worker", "express-server", "maintenance"}
    tag = "${SEGUE_IMAGE_TAG:-latest}"
    expected = {"redis": names["SEGUE_REDIS_IMAGE"], "api": names["SEGUE_API_IMAGE"],
                "maintenance": names["SEGUE_API_IMAGE"], "worker": names["SEGUE_WORKER_IMAGE"],
                "express-server": names["SEGUE_SIDECAR_IMAGE"]}
    for service, image in expected.items():
        assert services[service]["image"] == image.replace(":latest", ":" + tag), service
    assert services["mongo"]["image"] == "${SEGUE_MONGO_IMAGE:-" + names["PUBLIC_MONGO"] + "}"
    # The worker outlives its drain (SEGUE_DRAIN_SECONDS, 60 s) before compose kills it, and holds one GPU.
    worker = services["worker"]
    assert worker["stop_grace_period"] == "75s"
    assert worker["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_dockerfiles_take_their_base_as_an_argument_defaulting_to_the_public_image():
    names = dict(line.split("=", 1) for line in subprocess.run(
        ["bash", str(ROOT / "scripts/images.sh"), "names"], capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin"}).stdout.split())
    for dockerfile, arg, public in (("Dockerfile.api", "PYTHON_IMAGE", "PUBLIC_PYTHON"),
                                    ("Dockerfile.worker", "PYTHON_IMAGE", "PUBLIC_PYTHON"),
                                    ("Dockerfile.redis", "REDIS_IMAGE", "PUBLIC_REDIS"),
                                    ("express-server/Dockerfile", "NODE_IMAGE", "PUBLIC_NODE")):
        text = (ROOT / dockerfile).read_text()
        assert f"ARG {arg}={names[public]}\nFROM ${{{arg}}}\n" in text, dockerfile
        assert re.search(r"^USER (?!root)\w+$", text, re.M), f"{dockerfile} runs as root"
        assert re.search(r"^HEALTHCHECK ", text, re.M), f"{dockerfile} has no health check"
