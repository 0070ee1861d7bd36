#!/usr/bin/env bash
# Idempotent set-up used by `make run` and `make test`:
# system packages (when root), the Python venv, and the sidecar's npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."

want_system=("ffmpeg")
# Chromium (Debian's, driven by Playwright in the browser tests) and libfaketime (the fault-injection suite
# skews one worker's clock) only when asked: `make test` sets this.
[ "${SEGUE_BOOTSTRAP_BROWSER:-0}" = "1" ] && want_system+=("chromium" "faketime")

missing=()
for tool in "${want_system[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing ${missing[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "bootstrap: missing system packages: ${missing[*]}" >&2
    echo "bootstrap: install them first, e.g.: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

command -v node >/dev/null 2>&1 || { echo "bootstrap: Node.js 20 is required (https://nodejs.org or apt-get install nodejs)" >&2; exit 1; }

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON="$candidate"; break
    fi
  done
fi
[ -n "$PYTHON" ] || { echo "bootstrap: Python 3.11 is required (python3.11 not found)" >&2; exit 1; }

# Reinstall only when pyproject.toml changed since the last install.
stamp=.venv/.segue-installed
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[server,worker,embedded,test]'
  touch "$stamp"
fi

# npm packages: the sidecar's, and the extension's (eventsource-parser, which its tests compare with the vendored copies).
for project in express-server extension; do
  lock=$project/package-lock.json
  nstamp=$project/node_modules/.segue-installed
  if [ ! -f "$nstamp" ] || [ "$lock" -nt "$nstamp" ]; then
    echo "bootstrap: installing $project's npm packages"
    (cd "$project" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$nstamp"
  fi
done
