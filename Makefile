# Quick start: `make run` (whole stack) and `make test` (all tests).
# Both bootstrap what they need first and are safe to run again.
.PHONY: run test bootstrap test-python test-node maintain bench load update-ytdlp

PY := .venv/bin/python

bootstrap:
	@bash scripts/bootstrap.sh

run: bootstrap
	@exec $(PY) -m backend.devstack

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

maintain: bootstrap
	$(PY) -m backend.maintenance

# Throughput benchmark (not a test): baseline vs Segue vs raw model.generate.
bench: bootstrap
	@$(PY) -m bench

# Load benchmark (not a test): 500 tasks through two workers, exactly once; wrk on the polling routes;
# then the listener flood (1,000 open event streams while /health and submissions are measured).
load: bootstrap
	@$(PY) -m bench.load $(LOAD_ARGS)
	@$(PY) -m bench.flood $(FLOOD_ARGS)

# YouTube breaks old yt-dlp releases within weeks: upgrade yt-dlp and its solver scripts in place (safe to repeat).
update-ytdlp: bootstrap
	$(PY) -m pip install -q --upgrade 'yt-dlp[default]' yt-dlp-ejs deno
	@$(PY) -c "from worker.ytdlp_runtime import report; print(report())"
