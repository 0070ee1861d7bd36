#!/usr/bin/env bash
# Segue's container images: build them (`make images`), and on machines without Docker or a registry, the
# stand-in bases and podman settings the image test uses (`make test-images`, Kubernetes' test too).
#
# Usage: scripts/images.sh COMMAND [ARGS]
#   build [--standins|--public]  Build every image below from the real Dockerfiles. With docker where a daemon
#                                answers, else buildah. Bases: the public ones (the Dockerfiles' defaults) when
#                                they can be found or pulled, else the stand-ins (said so in the output);
#                                --standins / --public force one or the other.
#   standins [--force]           Bootstrap the stand-in bases from Debian packages (mmdebstrap + podman import),
#                                skipping those present. A test harness only: never push them anywhere.
#   tools                        Install podman, buildah, runc, mmdebstrap, catatonit (apt, as root) and
#                                podman-compose (into .venv) when missing.
#   podman ARGS...               Run podman with this machine's settings (CONTAINERS_CONF below).
#   env                          Print `export` lines for that environment (eval "$(scripts/images.sh env)").
#   names                        Print VARIABLE=image lines for the images and stand-ins below.
#   sizes                        Print each image's size.
#   lock                         Rewrite deploy/requirements/{api,worker}.txt (the exact versions the images
#                                install) from pyproject.toml; run it after changing a dependency.
#
# Environment: SEGUE_IMAGE_TAG (default latest); SEGUE_IMAGE_BUILDER=docker|buildah (default: docker if a
# daemon answers); TORCH_SPEC (the worker's torch, default PyPI's CUDA build). PIP_INDEX_URL,
# PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_CERT (default: this machine's pip config) and NODE_EXTRA_CA_CERTS
# are passed to the builds as build arguments, and local files and folders among them mounted read-only.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

# ---- Image names (docker-compose.yml uses the same names; podman stores them as localhost/NAME:TAG) ----
TAG="${SEGUE_IMAGE_TAG:-latest}"
SEGUE_API_IMAGE="segue-api:$TAG"                # Dockerfile.api: the api and maintenance services
SEGUE_WORKER_IMAGE="segue-worker:$TAG"          # Dockerfile.worker
SEGUE_REDIS_IMAGE="segue-redis:$TAG"            # Dockerfile.redis
SEGUE_SIDECAR_IMAGE="segue-express-server:$TAG" # express-server/Dockerfile
# ---- The public bases (the Dockerfiles' ARG defaults) and the stand-ins that replace them in tests ----
PUBLIC_PYTHON="python:3.11-slim-bookworm"
PUBLIC_NODE="node:20-bookworm-slim"
PUBLIC_REDIS="redis:7.4-alpine"
PUBLIC_MONGO="mongo:7.0"
STANDIN_PYTHON="localhost/segue-standin/python:3.11-slim-bookworm"  # Debian 12 python3 (3.11) in a venv
STANDIN_NODE="localhost/segue-standin/node:20-bookworm-slim"       # Debian 12 + this machine's Node.js 20
STANDIN_REDIS="localhost/segue-standin/redis:7.4-alpine"            # Debian 12's redis-server (7.0)
STANDIN_MONGO="localhost/segue-standin/mongo:7.0"                   # SecantusDB (MongoDB wire protocol)
# The worker's torch: PyPI's default build (CUDA) unless told otherwise, e.g. TORCH_SPEC='torch==2.13.0+cpu'.
TORCH_SPEC="${TORCH_SPEC:-}"

export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/deploy/podman/containers.conf}"
PODMAN_COMPOSE_VERSION="1.6.0"
DEBIAN_SUITE="bookworm"
DEBIAN_MIRROR="http://deb.debian.org/debian"
SECANTUSDB_VERSION="0.7.0b3"
PYMONGO_VERSION="4.20.0"
STANDIN_DIR="$ROOT/deploy/standins"
CACHE_DIR="$ROOT/.cache/images"

say() { echo "images: $*" >&2; }
die() { say "error: $*"; exit 1; }

have_docker() {
  case "${SEGUE_IMAGE_BUILDER:-}" in
    docker) return 0 ;;
    buildah) return 1 ;;
  esac
  command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

cmd_tools() {
  local missing=() tool
  for tool in podman buildah runc mmdebstrap catatonit; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/libexec/podman/$tool" ] || missing+=("$tool")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
      || die "missing ${missing[*]}; install them, e.g. sudo apt-get install -y ${missing[*]}"
    say "installing ${missing[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc mmdebstrap catatonit >/dev/null
  fi
  [ -x .venv/bin/python ] || bash scripts/bootstrap.sh
  if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('podman-compose') != '$PODMAN_COMPOSE_VERSION')" 2>/dev/null; then
    say "installing podman-compose $PODMAN_COMPOSE_VERSION into .venv"
    .venv/bin/python -m pip install -q "podman-compose==$PODMAN_COMPOSE_VERSION" 2>&1 | grep -v '^WARNING: Location' >&2 || true
  fi
}

image_exists() {
  if have_docker; then docker image inspect "$1" >/dev/null 2>&1; else podman image exists "$1"; fi
}

# The effective pip setting $1 (e.g. find-links): the environment's PIP_* first, else pip's config files.
pip_setting() {
  local var="PIP_$(echo "$1" | tr 'a-z-' 'A-Z_')"
  if [ -n "${!var:-}" ]; then echo "${!var}"; return; fi
  local py=python3
  [ -x .venv/bin/python ] && py=.venv/bin/python
  "$py" -m pip config get "global.$1" 2>/dev/null || true
}

# Build arguments (and read-only mounts of local files and folders) that hand this machine's package sources
# and trusted certificates to a build: pip's index, extra indexes, find-links and CA bundle, and Node's extra
# CA certificates (machines behind a TLS-intercepting egress proxy need them). Sets BUILD_SOURCE_ARGS.
BUILD_SOURCE_ARGS=()
build_source_args() {
  BUILD_SOURCE_ARGS=()
  have_docker && return 0  # docker build mounts nothing: a Docker host uses PyPI and npm's registry directly
  local key var value entry path mounts=" "
  for key in index-url extra-index-url find-links cert; do
    var="PIP_$(echo "$key" | tr 'a-z-' 'A-Z_')"
    value="$(pip_setting "$key" | tr '\n' ' ' | xargs)"
    [ -n "$value" ] && add_source_arg "$var" "$value"
  done
  value="${NODE_EXTRA_CA_CERTS:-}"
  [ -n "$value" ] && add_source_arg NODE_EXTRA_CA_CERTS "$value"
  return 0
}

add_source_arg() {
  local var="$1" value="$2" entry path
  BUILD_SOURCE_ARGS+=(--build-arg "$var=$value")
  for entry in $value; do
    path="${entry#file://}"
    [ "${path:0:1}" = / ] && [ -e "$path" ] || continue
    # A simple index's pages may link to files beside it: mount the folder that holds "simple/".
    [ "$(basename "$path")" = simple ] && path="$(dirname "$path")"
    case " ${BUILD_SOURCE_ARGS[*]} " in *" $path:$path:ro "*) continue ;; esac
    BUILD_SOURCE_ARGS+=(-v "$path:$path:ro")
  done
}

# One image from a Dockerfile: build NAME DOCKERFILE CONTEXT [--build-arg K=V ...]
build_one() {
  local name="$1" dockerfile="$2" context="$3"
  shift 3
  say "building $name from $dockerfile"
  local started=$SECONDS
  if have_docker; then
    # docker build has no -v: drop the mounts (a Docker host uses its own pip configuration: PyPI).
    local args=() skip=0 arg
    for arg in "$@"; do
      if [ $skip = 1 ]; then skip=0; continue; fi
      if [ "$arg" = -v ]; then skip=1; continue; fi
      args+=("$arg")
    done
    docker build -f "$dockerfile" -t "$name" "${args[@]}" "$context"
  else
    # --format docker keeps HEALTHCHECK (the OCI format has none); chroot isolation works on these machines.
    buildah bud --isolation chroot --format docker --force-rm --layers -f "$dockerfile" -t "$name" "$@" "$context"
  fi
  say "built $name in $((SECONDS - started)) s"
}

# Which base to use for PUBLIC (whose stand-in is STANDIN): echoes the image, says why on stderr.
pick_base() {
  local public="$1" standin="$2" mode="$3"
  if [ "$mode" != standins ]; then
    if image_exists "$public"; then echo "$public"; return; fi
    if have_docker; then docker pull -q "$public" >/dev/null 2>&1 && { echo "$public"; return; }
    else podman pull -q "docker.io/library/$public" >/dev/null 2>&1 && { echo "$public"; return; }; fi
    [ "$mode" = public ] && die "cannot find or pull $public"
    say "cannot pull $public here: using the stand-in $standin (a test base, never published)"
  fi
  have_docker && die "stand-in bases are built with podman; run with SEGUE_IMAGE_BUILDER=buildah"
  image_exists "$standin" || cmd_standins >&2
  echo "$standin"
}

cmd_build() {
  local mode=auto
  case "${1:-}" in
    --standins) mode=standins ;;
    --public) mode=public ;;
    "") ;;
    *) die "unknown option $1" ;;
  esac
  have_docker || cmd_tools
  local python node redis
  python="$(pick_base "$PUBLIC_PYTHON" "$STANDIN_PYTHON" "$mode")"
  node="$(pick_base "$PUBLIC_NODE" "$STANDIN_NODE" "$mode")"
  redis="$(pick_base "$PUBLIC_REDIS" "$STANDIN_REDIS" "$mode")"
  build_source_args
  local torch=()
  [ -n "$TORCH_SPEC" ] && torch=(--build-arg "TORCH_SPEC=$TORCH_SPEC")
  build_one "$SEGUE_REDIS_IMAGE" Dockerfile.redis . --build-arg "REDIS_IMAGE=$redis"
  build_one "$SEGUE_SIDECAR_IMAGE" express-server/Dockerfile express-server --build-arg "NODE_IMAGE=$node" \
    ${BUILD_SOURCE_ARGS[@]+"${BUILD_SOURCE_ARGS[@]}"}
  build_one "$SEGUE_API_IMAGE" Dockerfile.api . --build-arg "PYTHON_IMAGE=$python" ${BUILD_SOURCE_ARGS[@]+"${BUILD_SOURCE_ARGS[@]}"}
  build_one "$SEGUE_WORKER_IMAGE" Dockerfile.worker . --build-arg "PYTHON_IMAGE=$python" \
    ${torch[@]+"${torch[@]}"} ${BUILD_SOURCE_ARGS[@]+"${BUILD_SOURCE_ARGS[@]}"}
  cmd_sizes
}

# A Debian root filesystem with PACKAGES as a local image:
#   standin_debian IMAGE PACKAGES EXTRA_APT_SOURCE ("" for none) [mmdebstrap options...]
standin_debian() {
  local image="$1" packages="$2" extra_source="$3"
  shift 3
  local sources=("deb $DEBIAN_MIRROR $DEBIAN_SUITE main")
  [ -n "$extra_source" ] && sources+=("$extra_source")
  local tarball="$CACHE_DIR/$(echo "$image" | tr '/:' '__').tar"
  mkdir -p "$CACHE_DIR"
  say "stand-in $image: Debian $DEBIAN_SUITE with $packages (mmdebstrap)"
  mmdebstrap --quiet --variant=minbase --include="$packages" "$@" "$DEBIAN_SUITE" "$tarball" "${sources[@]}"
  # An imported image has no configuration: give it what the public image's users rely on.
  podman import --quiet --change "ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" --change 'CMD ["bash"]' "$tarball" "$image" >/dev/null
  rm -f "$tarball"
}

cmd_standins() {
  local force=0
  [ "${1:-}" = --force ] && force=1
  cmd_tools
  say "bootstrapping stand-in bases from Debian packages: the public bases cannot be pulled here (test harness only)"
  if [ $force = 1 ] || ! podman image exists "$STANDIN_PYTHON"; then
    # python:3.11-slim has `python` and `pip` on PATH and lets pip install into it: a venv in /opt/python does.
    standin_debian "$STANDIN_PYTHON" python3,python3-venv,ca-certificates,passwd "" \
      --customize-hook='chroot "$1" python3 -m venv /opt/python' \
      --customize-hook='chroot "$1" /opt/python/bin/pip --version'
  fi
  if [ $force = 1 ] || ! podman image exists "$STANDIN_NODE"; then
    # Node.js 20 (as in node:20): NodeSource's repository is not reachable from these machines, so the stand-in
    # takes this machine's installed nodejs package (NodeSource's 20.x), and the image's `node` user (uid 1000).
    command -v node >/dev/null && node --version | grep -q '^v20\.' && dpkg -s nodejs >/dev/null 2>&1 \
      || die "the Node stand-in copies this machine's Node.js 20 package (nodejs): install it first"
    standin_debian "$STANDIN_NODE" ca-certificates,libstdc++6,passwd "" \
      --customize-hook='tar -C / -cf - usr/bin/node usr/bin/npm usr/bin/npx usr/lib/node_modules/npm | tar -C "$1" -xf -' \
      --customize-hook='chroot "$1" groupadd --gid 1000 node' \
      --customize-hook='chroot "$1" useradd --uid 1000 --gid node --create-home node' \
      --customize-hook='chroot "$1" node --version'
  fi
  if [ $force = 1 ] || ! podman image exists "$STANDIN_REDIS"; then
    # Debian's package makes the `redis` user the Dockerfile runs as.
    standin_debian "$STANDIN_REDIS" redis-server,redis-tools,passwd "" \
      --customize-hook='chroot "$1" redis-server --version'
  fi
  if [ $force = 1 ] || ! podman image exists "$STANDIN_MONGO"; then
    say "stand-in $STANDIN_MONGO: SecantusDB $SECANTUSDB_VERSION on $STANDIN_PYTHON"
    build_source_args
    buildah bud --isolation chroot --format docker --force-rm --layers --quiet -f "$STANDIN_DIR/mongo.Containerfile" \
      -t "$STANDIN_MONGO" --build-arg "PYTHON_IMAGE=$STANDIN_PYTHON" \
      --build-arg "SECANTUSDB_VERSION=$SECANTUSDB_VERSION" --build-arg "PYMONGO_VERSION=$PYMONGO_VERSION" \
      ${BUILD_SOURCE_ARGS[@]+"${BUILD_SOURCE_ARGS[@]}"} "$STANDIN_DIR" >/dev/null
  fi
}

cmd_sizes() {
  local name
  for name in "$SEGUE_API_IMAGE" "$SEGUE_WORKER_IMAGE" "$SEGUE_REDIS_IMAGE" "$SEGUE_SIDECAR_IMAGE"; do
    if have_docker; then
      docker image inspect -f "{{.Size}}" "$name" 2>/dev/null | awk -v n="$name" '{printf "%-32s %7.0f MB\n", n, $1/1e6}'
    else
      podman image inspect -f "{{.Size}}" "$name" 2>/dev/null | awk -v n="$name" '{printf "%-32s %7.0f MB\n", n, $1/1e6}'
    fi
  done
}

cmd_lock() {
  [ -x .venv/bin/python ] || bash scripts/bootstrap.sh
  local name extra report
  for name in api:server worker:server,worker; do
    extra="${name#*:}"; name="${name%%:*}"
    report="$(mktemp)"
    .venv/bin/python -m pip install --dry-run --ignore-installed --quiet --report "$report" ".[$extra]" \
      2>&1 | grep -v '^WARNING: Location' >&2 || true
    .venv/bin/python - "$report" "$extra" > "deploy/requirements/$name.txt" <<'PY'
import json, sys
report, extra = json.load(open(sys.argv[1])), sys.argv[2]
print(f"# Exact versions pip resolves for '.[{extra}]' (Linux x86_64, Python 3.11): the image installs these.")
print("# Generated by `scripts/images.sh lock` from pyproject.toml; do not edit by hand.")
for item in sorted(report["install"], key=lambda i: i["metadata"]["name"].lower()):
    name, version = item["metadata"]["name"].lower(), item["metadata"]["version"]
    if name == "segue":
        continue
    # torch's build (CUDA or CPU) is the TORCH_SPEC build argument's choice: pin the release only.
    print(f"{name}=={version.split('+')[0]}")
PY
    rm -f "$report"
    say "wrote deploy/requirements/$name.txt"
  done
}

cmd_names() {
  local var
  for var in SEGUE_API_IMAGE SEGUE_WORKER_IMAGE SEGUE_REDIS_IMAGE SEGUE_SIDECAR_IMAGE PUBLIC_PYTHON PUBLIC_NODE \
             PUBLIC_REDIS PUBLIC_MONGO STANDIN_PYTHON STANDIN_NODE STANDIN_REDIS STANDIN_MONGO; do
    echo "$var=${!var}"
  done
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
  build) cmd_build "$@" ;;
  standins) cmd_standins "$@" ;;
  tools) cmd_tools ;;
  podman) exec podman "$@" ;;
  env) echo "export CONTAINERS_CONF=$CONTAINERS_CONF" ;;
  names) cmd_names ;;
  sizes) cmd_sizes ;;
  lock) cmd_lock ;;
  *) sed -n '2,25p' "$0" >&2; exit 2 ;;
esac
