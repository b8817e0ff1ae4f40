#!/usr/bin/env bash
# Full-stack smoke test of deploy/compose.yaml on this Docker host: bring up PostgreSQL, Redis,
# migrate, web, worker and beat from the locally built images, then, as a platform admin through
# the REST API, create a tenant, a docker target granted to it, the tiny model, a deployment and
# an API key (the worker's docker driver starts a hangar-runtime replica), and send a chat
# completion through the gateway with that key. Tears everything down (compose project,
# volumes, the replicas it started) unless --keep, also when a step fails.
#
# Progress and timings go to stderr; stdout is one JSON object for tests (tests/e2e/
# test_compose_stack.py runs this script):
#   {"answer": <chat completion>, "seconds": {"images", "compose_up_to_ready",
#    "provision", "deploy_to_answer", "compose_up_to_answer", "total"}, ...}
#
# Usage: deploy/dev/compose-smoke.sh [--keep] [--no-build]
# Environment (all optional): HANGAR_SMOKE_PROJECT (compose project and replica label,
#   default hangar-smoke), HANGAR_PORT / HANGAR_PG_PORT / HANGAR_REDIS_PORT (loopback ports of
#   web, PostgreSQL, Redis: 18000 / 15432 / 16379), HANGAR_SMOKE_TIMEOUT (seconds per wait, 180).
# Needs: root or docker access, the Docker daemon (deploy/dev/services.sh start), `docker
# compose` or docker-compose 1.29+ (deploy/dev/install-deps.sh), and a Python with torch and
# transformers to build the tiny model (make venv).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROJECT=${HANGAR_SMOKE_PROJECT:-hangar-smoke}
WORK="$ROOT/var/compose-smoke/$PROJECT"
TIMEOUT=${HANGAR_SMOKE_TIMEOUT:-180}

log() { printf '[smoke %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { printf '%s' "$EPOCHREALTIME"; }
since() { python3 -c 'import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))' "$1" "$(now)"; }

keep=0
build=1
for arg in "$@"; do
    case $arg in
        --keep) keep=1 ;;
        --no-build) build=0 ;;
        *) die "unknown argument: $arg" ;;
    esac
done

docker_bin=/usr/bin/docker # Debian's CLI, matching the 20.10 daemon
[[ -x $docker_bin ]] || docker_bin=$(command -v docker) || die "no docker CLI"
if "$docker_bin" compose version >/dev/null 2>&1; then
    compose=("$docker_bin" compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    die "neither \`docker compose\` nor docker-compose found (Debian: deploy/dev/install-deps.sh)"
fi
compose+=(-p "$PROJECT" -f "$ROOT/deploy/compose.yaml")

secret() { python3 -c 'import secrets, sys; print(secrets.token_urlsafe(int(sys.argv[1])))' "$1"; }
export POSTGRES_PASSWORD REDIS_PASSWORD HANGAR_SECRET_KEY HANGAR_KEY_PEPPER HANGAR_ENCRYPTION_KEYS
HANGAR_ENCRYPTION_KEYS=$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')
POSTGRES_PASSWORD=$(secret 24)
REDIS_PASSWORD=$(secret 24)
HANGAR_SECRET_KEY=$(secret 48)
HANGAR_KEY_PEPPER=$(secret 48)
export DOCKER_GID
DOCKER_GID=$(stat -c %g /var/run/docker.sock)
export HANGAR_MODELS_DIR="$WORK/models"
export HANGAR_INSTANCE=$PROJECT
export HANGAR_PORT=${HANGAR_PORT:-18000}
export HANGAR_PG_PORT=${HANGAR_PG_PORT:-15432}
export HANGAR_REDIS_PORT=${HANGAR_REDIS_PORT:-16379}
base_url="http://127.0.0.1:$HANGAR_PORT"

exec 3>&2 # the script's stderr, for cleanup: a signal may land inside a `2>/dev/null` command
cleanup() {
    local rc=$?
    exec 2>&3
    if [[ $keep -eq 1 ]]; then
        log "--keep: left running at $base_url (stop: ${compose[*]} down -v)"
        return
    fi
    if [[ $rc -ne 0 ]]; then
        "${compose[@]}" logs --no-color --tail 40 >&2 2>&1 || true
    fi
    if [[ -n ${model_pid:-} ]] && kill "$model_pid" 2>/dev/null; then wait "$model_pid" || true; fi
    "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    # Replicas belong to the worker, not to compose: remove the ones this instance started.
    local ids
    mapfile -t ids < <("$docker_bin" ps -aq --filter "label=hangar.instance=$HANGAR_INSTANCE")
    [[ ${#ids[@]} -eq 0 ]] || "$docker_bin" rm -f "${ids[@]}" >/dev/null
    rm -rf "$WORK"
    log "cleaned up"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# poll <seconds> <description> <command...>
poll() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what: not within ${seconds}s"
        sleep 0.5
    done
}

# api <METHOD> <path> [json body] -> response body on stdout; fails loudly on an HTTP error.
api() {
    local method=$1 path=$2 body=${3:-} out status
    out=$(mktemp)
    status=$(curl -sS -o "$out" -w '%{http_code}' -X "$method" "$base_url$path" \
        -H "Authorization: Bearer $admin_token" -H 'Content-Type: application/json' \
        ${body:+--data "$body"}) || { rm -f "$out"; die "$method $path: no answer"; }
    if [[ $status != 2* ]]; then
        log "$method $path -> HTTP $status: $(head -c 2000 "$out")"
        rm -f "$out"
        return 1
    fi
    cat "$out"
    rm -f "$out"
}
# field <json> <key> -> the top-level value of key
field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

started=$(now)
images_s=0
if [[ $build -eq 1 ]]; then
    "$ROOT/deploy/images/build" all >/dev/null
    images_s=$(since "$started")
    log "images ready in $images_s s"
fi

rm -rf "$WORK"
mkdir -p "$HANGAR_MODELS_DIR"
py=python3
[[ -x $ROOT/.venv/bin/python ]] && py=$ROOT/.venv/bin/python
"$py" -c 'import torch, transformers' 2>/dev/null ||
    die "need a Python with torch/transformers to build the tiny model (make venv)"
# Published in the model root's shared folder, which every tenant may register from. Built
# while the stack starts (both take seconds); replicas and the control plane run as uid 10001.
model_dir="$HANGAR_MODELS_DIR/_shared/tiny-llama"
(cd "$ROOT" && "$py" -m workers.runtime.tinymodel "$model_dir" >/dev/null && chmod -R a+rX "$HANGAR_MODELS_DIR") &
model_pid=$!

t_up=$(now)
"${compose[@]}" up -d >/dev/null 2>&1 || die "compose up failed"
# /readyz: database and Redis reachable, migrations applied.
poll "$TIMEOUT" "web ready ($base_url/readyz)" curl -sf -o /dev/null "$base_url/readyz"
ready_s=$(since "$t_up")
log "control plane ready in $ready_s s ($base_url)"
wait "$model_pid" || die "building the tiny model failed"

# The one step outside the REST API: a platform admin and their access token (tokens are
# otherwise minted from a signed-in browser session).
t_provision=$(now)
admin_token=$("${compose[@]}" exec -T web hangar manage shell <<'PY' | awk '/^TOKEN /{print $2}'
from django.contrib.auth import get_user_model

from controlplane.core.context import Actor
from controlplane.tenancy.services import access_token_create

user = get_user_model().objects.create_superuser(username="smoke-admin", email="", password=None)
_, token = access_token_create(
    actor=Actor(user=user, via="system"), user=user, name="compose-smoke", scopes=["read", "write", "admin"]
)
print("TOKEN", token)
PY
)
[[ -n $admin_token ]] || die "creating the platform admin's token through manage shell failed"

# Everything else as a platform admin through the public API.
api POST /api/v1/platform/tenants/ '{"name": "Smoke", "slug": "smoke", "owner": "smoke-admin"}' >/dev/null
target=$(field "$(api POST /api/v1/platform/targets/ \
    '{"name": "docker", "kind": "docker", "docker_url": "unix:///var/run/docker.sock"}')" id)
api POST /api/v1/platform/grants/ "{\"target\": $target, \"tenant\": \"smoke\"}" >/dev/null
model=$(field "$(api POST /api/v1/models/ \
    "{\"tenant\": \"smoke\", \"name\": \"tiny-llama\", \"source\": \"$model_dir\"}")" id)
deployment=$(field "$(api POST /api/v1/deployments/ \
    "{\"tenant\": \"smoke\", \"name\": \"tiny\", \"model\": $model, \"target\": $target, \"replicas\": 1}")" id)
key=$(field "$(api POST /api/v1/keys/ '{"tenant": "smoke", "name": "smoke"}')" key)
provision_s=$(since "$t_provision")
log "provisioned through the REST API in $provision_s s (deployment $deployment)"

chat() {
    curl -sf "$base_url/v1/chat/completions" -H "Authorization: Bearer $key" \
        -H 'Content-Type: application/json' \
        -d '{"model": "tiny-llama", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}'
}
t_deploy=$(now)
poll "$TIMEOUT" "chat completion through the gateway" chat
deploy_s=$(since "$t_deploy")
answer_s=$(since "$t_up")
log "answering through the gateway $deploy_s s after the deployment, $answer_s s after compose up"
answer=$(chat)
python3 -c '
import json, sys
c = json.loads(sys.argv[1])
u = c["usage"]
assert c["object"] == "chat.completion" and c["choices"][0]["message"]["role"] == "assistant", c
assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] and 1 <= u["completion_tokens"] <= 8, u
' "$answer" || die "unexpected answer shape: $answer"
replicas=$("$docker_bin" ps --filter "label=hangar.instance=$HANGAR_INSTANCE" \
    --format '{{.Names}} {{.Image}} {{.Status}}')
printf '%s\n' "$replicas" >&2
[[ -n $replicas ]] || die "no replica container labelled hangar.instance=$HANGAR_INSTANCE"
total_s=$(since "$started")
python3 -c '
import json, sys
answer, replicas, *figures = sys.argv[1:]
keys = ("images", "compose_up_to_ready", "provision", "deploy_to_answer", "compose_up_to_answer", "total")
print(json.dumps({
    "answer": json.loads(answer),
    "replicas": replicas.splitlines(),
    "seconds": dict(zip(keys, map(float, figures))),
}))
' "$answer" "$replicas" "$images_s" "$ready_s" "$provision_s" "$deploy_s" "$answer_s" "$total_s"
log "OK in $total_s s"
