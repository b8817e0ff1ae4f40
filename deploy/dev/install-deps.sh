#!/usr/bin/env bash
# Install the host packages that Hangar's development services and image builds need, from
# Debian's own archive only: PostgreSQL 15, Redis, Docker engine, docker-compose (the compose
# stack test), Chromium (browser tests) and debootstrap (offline base image). Idempotent:
# packages already installed are left alone and `apt-get update` is skipped when nothing is
# missing, so re-running it costs a second.
#
# Usage (as root on Debian bookworm):  deploy/dev/install-deps.sh
set -euo pipefail

# Package -> why. Only names from Debian bookworm main; no third-party repositories.
PACKAGES=(
    postgresql            # PostgreSQL 15 server + initdb/pg_ctl (source of truth)
    postgresql-client     # psql, used by services.sh to create the role and database
    redis-server          # Celery broker, Channels layer, rate limits
    redis-tools           # redis-cli, used for readiness checks
    docker.io             # dockerd 20.10 + CLI: docker driver and runtime image builds
    containerd            # docker.io depends on it; listed so a partial install is repaired
    docker-compose        # 1.29: runs deploy/compose.yaml (compose v2 is not in bookworm)
    iptables              # dockerd needs it for published ports
    chromium              # Playwright drives Debian's Chromium (no browser download)
    debootstrap           # builds the Debian base image without any registry
    ca-certificates       # debootstrap/apt over https mirrors
    curl                  # readiness probes in scripts and tests
    tar
    procps                # pgrep/ps used by services.sh
)

log() { printf 'install-deps: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ ${EUID:-$(id -u)} -eq 0 ]] || die "must run as root (it installs Debian packages)"
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian only"
command -v dpkg-query >/dev/null || die "dpkg-query not found"

if [[ -r /etc/os-release ]]; then
    # shellcheck disable=SC1091
    . /etc/os-release
    if [[ ${VERSION_CODENAME:-} != bookworm ]]; then
        log "warning: tested on Debian bookworm, this is '${PRETTY_NAME:-unknown}'"
    fi
fi

is_installed() {
    # "install ok installed" is the only state in which the package is fully configured.
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    log "all ${#PACKAGES[@]} packages already installed; nothing to do"
    exit 0
fi

log "missing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# needrestart (if present) would otherwise prompt or scan processes after every install.
export NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=a
# Don't let package postinst scripts start services (we run our own instances with our own
# data directories via deploy/dev/services.sh); policy-rc.d is the Debian-sanctioned switch.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    created_policy=1
fi
cleanup() { if [[ $created_policy -eq 1 ]]; then rm -f "$policy"; fi; }
trap cleanup EXIT

apt-get update -q
apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}"

still_missing=()
for pkg in "${missing[@]}"; do
    is_installed "$pkg" || still_missing+=("$pkg")
done
[[ ${#still_missing[@]} -eq 0 ]] || die "not installed after apt-get: ${still_missing[*]}"
log "installed: ${missing[*]}"
