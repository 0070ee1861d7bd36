# Quick start: `make run` (whole stack) and `make test` (all tests).
# Both bootstrap what they need first and are safe to run again.
.PHONY: run test bootstrap test-python test-node docs maintain bench bench-gpu bench-engine load update-ytdlp images test-images test-kubernetes

PY := .venv/bin/python

bootstrap:
	@bash scripts/bootstrap.sh

run: bootstrap
	@exec $(PY) -m backend.dev.devstack

# The browser tests drive Debian's Chromium: `make test` has bootstrap install it; `make run` never needs it.
test: export SEGUE_BOOTSTRAP_BROWSER = 1
test: bootstrap
	@$(MAKE) --no-print-directory test-node
	@$(MAKE) --no-print-directory test-python

test-python:
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-node:
	cd express-server && npm test
	cd extension && npm test

# The docs site (docs/, mkdocs.yml) with live reload; `make test` builds it with --strict (tests/test_docs.py).
DOCS_ADDR ?= 127.0.0.1:8000
docs: bootstrap
	$(PY) -m mkdocs serve -a $(DOCS_ADDR)

maintain: bootstrap
	$(PY) -m backend.core.maintenance

# Throughput benchmark (not a test): baseline vs Segue vs raw model.generate.
bench: bootstrap
	@$(PY) -m bench

# Engine v2 on one GPU (not a test; minutes on an H100/H200): steps/s with and without CUDA graphs vs
# transformers' generate, one JSON line. `python -m bench.gpu --dry` runs the same path on CPU (tested).
bench-gpu: bootstrap
	@$(PY) -m bench.gpu $(BENCH_GPU_ARGS)

# Engine v2 on CPU (not a test): decoding step fp32 vs int8, 1 vs 8 tasks, drift; ENGINE_ARGS="--e2e --poisson 6".
bench-engine: bootstrap
	@$(PY) -m bench.engine_v2 $(ENGINE_ARGS)

# Load benchmark (not a test): 500 tasks through two workers, exactly once; wrk on the polling routes;
# then the listener flood (1,000 open event streams while /health and submissions are measured).
load: bootstrap
	@$(PY) -m bench.load $(LOAD_ARGS)
	@$(PY) -m bench.flood $(FLOOD_ARGS)

# YouTube breaks old yt-dlp releases within weeks: upgrade yt-dlp and its solver scripts in place (safe to repeat).
update-ytdlp: bootstrap
	$(PY) -m pip install -q --upgrade 'yt-dlp[default]' yt-dlp-ejs deno
	@$(PY) -c "from worker.pipeline.ytdlp_runtime import report; print(report())"

# Container images (docs/deploy-compose.md): every Dockerfile built, with docker where a daemon runs, else buildah
# (on machines with no registry for the public bases, from stand-in bases, said so in the output).
images: bootstrap
	@bash scripts/images.sh build $(IMAGES_ARGS)

# Not part of `make test` (see docs/deploy-compose.md for the figures): builds every image on stand-in bases and
# runs docker-compose.yml itself as real containers with podman, driven like the web app.
test-images: bootstrap
	@TORCH_SPEC='torch==2.13.0+cpu' bash scripts/images.sh build --standins
	$(PY) -m pytest -q -p no:cacheprovider deploy/tests $(PYTEST_ARGS)

# Not part of `make test` (docs/deploy-kubernetes.md): the rendered cpu overlay of deploy/kubernetes played as
# real pods with `podman kube play`, on images built from our Dockerfiles (own tag: other checkouts' builds
# under `latest` are never played), one /generate driven through the API pod with the tiny model, then torn down.
test-kubernetes: export SEGUE_IMAGE_TAG = kube-test
test-kubernetes: bootstrap
	@TORCH_SPEC='torch==2.13.0+cpu' bash scripts/images.sh build --standins
	@eval "$$(bash scripts/images.sh env)" && $(PY) -m pytest -q -p no:cacheprovider tests/kubernetes_play.py $(PYTEST_ARGS)
