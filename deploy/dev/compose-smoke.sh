#!/usr/bin/env bash
# Full-stack smoke test of deploy/compose.yaml on this Docker host: bring up PostgreSQL, Redis,
# migrate, web, worker and beat from the locally built images, register the tiny model and a
# docker target, deploy it (the worker's docker driver starts a hangar-runtime replica), then
# send a chat completion through the gateway with an API key. Prints timings; tears everything
# down (compose project, volumes, the replicas it started) unless --keep.
#
# Usage: deploy/dev/compose-smoke.sh [--keep] [--no-build]
# Needs: root or docker access, deploy/dev/services.sh start, `docker compose` or
# docker-compose (Debian: apt-get install docker-compose).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK="$ROOT/var/compose-smoke"
PROJECT=hangar-smoke
TIMEOUT=${HANGAR_SMOKE_TIMEOUT:-180}

log() { printf '[smoke %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

keep=0
build=1
for arg in "$@"; do
    case $arg in
        --keep) keep=1 ;;
        --no-build) build=0 ;;
        *) die "unknown argument: $arg" ;;
    esac
done

docker_bin=/usr/bin/docker
[[ -x $docker_bin ]] || docker_bin=$(command -v docker) || die "no docker CLI"
if "$docker_bin" compose version >/dev/null 2>&1; then
    compose=("$docker_bin" compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    die "neither \`docker compose\` nor docker-compose found (Debian: apt-get install docker-compose)"
fi
compose+=(-p "$PROJECT" -f "$ROOT/deploy/compose.yaml")

secret() { python3 -c 'import secrets, sys; print(secrets.token_urlsafe(int(sys.argv[1])))' "$1"; }
export POSTGRES_PASSWORD HANGAR_SECRET_KEY HANGAR_KEY_PEPPER HANGAR_ENCRYPTION_KEYS
HANGAR_ENCRYPTION_KEYS=$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')
POSTGRES_PASSWORD=$(secret 24)
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

cleanup() {
    local rc=$?
    if [[ $keep -eq 1 ]]; then
        log "--keep: left running at $base_url (stop: ${compose[*]} down -v)"
        return
    fi
    if [[ $rc -ne 0 ]]; then
        "${compose[@]}" logs --tail 40 >&2 2>&1 || true
    fi
    "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    # Replicas belong to the worker, not to compose: remove the ones this instance started.
    local ids
    mapfile -t ids < <("$docker_bin" ps -aq --filter "label=hangar.instance=$HANGAR_INSTANCE")
    [[ ${#ids[@]} -eq 0 ]] || "$docker_bin" rm -f "${ids[@]}" >/dev/null
    log "cleaned up"
}
trap cleanup EXIT

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

started=$SECONDS
if [[ $build -eq 1 ]]; then
    "$ROOT/deploy/images/build" all >/dev/null
    log "images ready in $((SECONDS - started)) s"
fi

mkdir -p "$HANGAR_MODELS_DIR"
python3 -c 'import torch, transformers' 2>/dev/null || [[ -x $ROOT/.venv/bin/python ]] ||
    die "need a Python with torch/transformers to build the tiny model (make venv)"
py=python3
[[ -x $ROOT/.venv/bin/python ]] && py=$ROOT/.venv/bin/python
# Published in the model root's shared folder, which every tenant may register from.
(cd "$ROOT" && "$py" -m workers.runtime.tinymodel "$HANGAR_MODELS_DIR/_shared/tiny-llama" >/dev/null)
chmod -R a+rX "$HANGAR_MODELS_DIR" # replicas and the control plane run as uid 10001

t0=$SECONDS
"${compose[@]}" up -d >/dev/null 2>&1 || die "compose up failed"
poll "$TIMEOUT" "web answering" curl -sf -o /dev/null "$base_url/login/"
log "control plane up in $((SECONDS - t0)) s ($base_url)"

t1=$SECONDS
token=$("${compose[@]}" exec -T -e MODEL_DIR="$HANGAR_MODELS_DIR/_shared/tiny-llama" worker hangar manage shell <<'PY' | awk '/^TOKEN /{print $2}'
import os

from django.contrib.auth import get_user_model
from django.db import transaction

from controlplane.catalog.services import model_register
from controlplane.core.context import Actor
from controlplane.deployments.services import deployment_create, target_create
from controlplane.keys.services import api_key_create
from controlplane.tenancy.choices import Role
from controlplane.tenancy.models import Membership
from controlplane.tenancy.services import tenant_create

user = get_user_model().objects.create_superuser(username="smoke", email="", password=os.urandom(16).hex())
actor = Actor(user=user, via="system")
tenant = tenant_create(actor=actor, name="Smoke", slug="smoke")
Membership.objects.get_or_create(user=user, tenant=tenant, defaults={"role": Role.OWNER})
target = target_create(actor=actor, tenant=tenant, data={"name": "docker", "kind": "docker"})
model = model_register(actor=actor, tenant=tenant, name="tiny-llama", source=os.environ["MODEL_DIR"])
with transaction.atomic():
    deployment_create(actor=actor, tenant=tenant, model=model, target=target, data={"name": "tiny", "replicas": 1})
_, token = api_key_create(actor=actor, tenant=tenant, data={"name": "smoke"})
print("TOKEN", token)
PY
)
[[ -n $token ]] || die "provisioning through manage shell failed"

chat() {
    curl -sf "$base_url/v1/chat/completions" -H "Authorization: Bearer $token" \
        -H 'Content-Type: application/json' \
        -d '{"model": "tiny-llama", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}'
}
poll "$TIMEOUT" "chat completion through the gateway" chat
log "deployed and answering through the gateway $((SECONDS - t1)) s after provisioning"
answer=$(chat)
printf '%s\n' "$answer"
python3 -c '
import json, sys
c = json.loads(sys.argv[1])
u = c["usage"]
assert c["object"] == "chat.completion" and c["choices"][0]["message"]["role"] == "assistant", c
assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] and 1 <= u["completion_tokens"] <= 8, u
' "$answer" || die "unexpected answer shape"
"$docker_bin" ps --filter "label=hangar.instance=$HANGAR_INSTANCE" --format '{{.Names}}  {{.Image}}  {{.Status}}  {{.Ports}}' >&2
log "OK in $((SECONDS - started)) s"
