#!/usr/bin/env bash
# Development services for Hangar, each with its own data under var/ at the repository root:
#
#   PostgreSQL 15  127.0.0.1:54329  data var/pg,    role/password hangar/hangar, db hangar
#   Redis          127.0.0.1:63790  no persistence, pid var/redis.pid
#   dockerd        /var/run/docker.sock (only started if no daemon answers; log var/dockerd.log)
#
# Usage: deploy/dev/services.sh {start|stop|status|env} [postgres] [redis] [docker]
#   start   start whatever is not already reachable, wait until each one answers
#   stop    stop only what this script started (pid files under var/run/)
#   naming services limits start/stop to them (default: all three)
#   status  say what answers
#   env     print `export ...` lines; use with: eval "$(deploy/dev/services.sh env)"
#
# Host packages come from deploy/dev/install-deps.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VAR="$ROOT/var"
RUN="$VAR/run"            # our pid files / "we started it" markers

PG_VERSION=15
PG_BIN="/usr/lib/postgresql/$PG_VERSION/bin"
PG_HOST=127.0.0.1
PG_PORT=54329
PG_DATA="$VAR/pg"
PG_SOCKDIR="$VAR/pg-run"
PG_LOG="$VAR/pg.log"
DB_NAME=hangar
DB_USER=hangar
DB_PASSWORD=hangar

REDIS_HOST=127.0.0.1
REDIS_PORT=63790
# 16 per parallel test worker (tests/support/workers.py): each has its own app and broker databases.
REDIS_DATABASES=64
REDIS_DIR="$VAR/redis"

DOCKERD_LOG="$VAR/dockerd.log"

READY_TIMEOUT=${HANGAR_SERVICES_TIMEOUT:-60}   # seconds per service

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Debian's docker.io CLI matches its 20.10 daemon; a newer CLI elsewhere on PATH may refuse it.
docker_cli() {
    if [[ -x /usr/bin/docker ]]; then
        /usr/bin/docker "$@"
    else
        docker "$@"
    fi
}

# wait_for <description> <command...>: poll every 0.2 s until the command succeeds.
wait_for() {
    local what=$1
    shift
    local deadline=$((SECONDS + READY_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.2
    done
    log "$what is ready"
}

need() {
    command -v "$1" >/dev/null 2>&1 || [[ -x $1 ]] ||
        die "$1 not found; run deploy/dev/install-deps.sh first"
}

# Run a command as the postgres OS user when we are root (initdb refuses to run as root).
as_pg() {
    if [[ ${EUID:-$(id -u)} -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_ready() { "$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT"; }
redis_ready() { [[ $(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }
docker_ready() { docker_cli info; }

pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# --- PostgreSQL ---------------------------------------------------------------------------

pg_start() {
    need "$PG_BIN/initdb"
    need "$PG_BIN/pg_ctl"
    if pg_ready; then
        log "postgres already answers on $PG_HOST:$PG_PORT"
    else
        mkdir -p "$PG_SOCKDIR"
        if [[ ${EUID:-$(id -u)} -eq 0 ]]; then
            id postgres >/dev/null 2>&1 || die "no 'postgres' OS user; is the postgresql package installed?"
            # postgres must be able to reach var/ through the checkout.
            chmod o+x "$VAR"
            chown postgres:postgres "$PG_SOCKDIR"
            touch "$PG_LOG" && chown postgres:postgres "$PG_LOG"
        fi
        if [[ ! -s $PG_DATA/PG_VERSION ]]; then
            log "initdb into $PG_DATA"
            mkdir -p "$PG_DATA"
            [[ ${EUID:-$(id -u)} -ne 0 ]] || chown postgres:postgres "$PG_DATA"
            chmod 0700 "$PG_DATA"
            # Unix socket: trust (only this user can reach var/pg-run); TCP loopback: password.
            as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
                --auth-local=trust --auth-host=scram-sha-256 >>"$PG_LOG" 2>&1 ||
                die "initdb failed, see $PG_LOG"
        fi
        log "starting postgres on $PG_HOST:$PG_PORT"
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$READY_TIMEOUT" start \
            -o "-c listen_addresses=$PG_HOST -c port=$PG_PORT -c unix_socket_directories=$PG_SOCKDIR -c fsync=off" \
            >/dev/null || die "postgres did not start, see $PG_LOG"
        wait_for postgres pg_ready || die "postgres not answering on $PG_HOST:$PG_PORT, see $PG_LOG"
        : >"$RUN/postgres.started"
    fi
    pg_bootstrap
}

# Create the role and database if missing. Needs superuser access over our own socket, which
# exists only when this script initialised the cluster.
pg_bootstrap() {
    if [[ ! -S $PG_SOCKDIR/.s.PGSQL.$PG_PORT ]]; then
        log "postgres on $PG_PORT was not started by this script; assuming role '$DB_USER' exists"
        return 0
    fi
    local psql=(as_pg "$PG_BIN/psql" -h "$PG_SOCKDIR" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt)
    "${psql[@]}" <<SQL || die "creating role/database failed"
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
        CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD';
    ELSE
        ALTER ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD';
    END IF;
END
\$\$;
SQL
    if [[ -z $("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'") ]]; then
        "${psql[@]}" -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" || die "CREATE DATABASE failed"
        log "created database $DB_NAME"
    fi
}

pg_stop() {
    if [[ ! -e $RUN/postgres.started ]]; then
        log "postgres: not started by this script, leaving it"
        return 0
    fi
    if [[ -s $PG_DATA/postmaster.pid ]]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t "$READY_TIMEOUT" stop >/dev/null ||
            die "pg_ctl stop failed"
        log "postgres stopped"
    fi
    rm -f "$RUN/postgres.started"
}

# --- Redis --------------------------------------------------------------------------------

redis_start() {
    need redis-server
    need redis-cli
    if redis_ready; then
        log "redis already answers on $REDIS_HOST:$REDIS_PORT"
        local dbs
        dbs=$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" config get databases 2>/dev/null | tail -n 1)
        if [[ -n $dbs && $dbs -lt $REDIS_DATABASES ]]; then
            log "warning: it has $dbs databases; the parallel test workers need $REDIS_DATABASES (restart it: $0 stop redis; $0 start redis)"
        fi
        return 0
    fi
    mkdir -p "$REDIS_DIR"
    log "starting redis on $REDIS_HOST:$REDIS_PORT"
    # Everything in Redis is rebuildable (DESIGN.md), so no RDB/AOF.
    redis-server --bind "$REDIS_HOST" --port "$REDIS_PORT" --save '' --appendonly no --databases "$REDIS_DATABASES" \
        --dir "$REDIS_DIR" --daemonize yes --pidfile "$RUN/redis.pid" \
        --logfile "$VAR/redis.log" || die "redis-server failed, see $VAR/redis.log"
    wait_for redis redis_ready || die "redis not answering on $REDIS_HOST:$REDIS_PORT, see $VAR/redis.log"
}

redis_stop() {
    if ! pid_alive "$RUN/redis.pid"; then
        log "redis: not started by this script, leaving it"
        rm -f "$RUN/redis.pid"
        return 0
    fi
    kill "$(cat "$RUN/redis.pid")"
    wait_gone "$RUN/redis.pid" redis
}

# --- dockerd ------------------------------------------------------------------------------

dockerd_start() {
    if docker_ready >/dev/null 2>&1; then
        log "docker daemon already answers"
        return 0
    fi
    need dockerd
    [[ ${EUID:-$(id -u)} -eq 0 ]] || die "no docker daemon answers and starting dockerd needs root"
    log "starting dockerd (log $DOCKERD_LOG)"
    # setsid: keep the daemon alive after this shell (and its job-control group) exits.
    setsid dockerd --pidfile "$RUN/dockerd.pid" >>"$DOCKERD_LOG" 2>&1 </dev/null &
    local pid=$!
    local deadline=$((SECONDS + READY_TIMEOUT))
    until docker_ready >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || die "dockerd exited; last log lines:
$(tail -n 20 "$DOCKERD_LOG")"
        ((SECONDS < deadline)) || die "dockerd did not answer within ${READY_TIMEOUT}s, see $DOCKERD_LOG"
        sleep 0.2
    done
    log "dockerd is ready (pid $pid)"
}

dockerd_stop() {
    if ! pid_alive "$RUN/dockerd.pid"; then
        log "dockerd: not started by this script, leaving it"
        return 0
    fi
    kill "$(cat "$RUN/dockerd.pid")"
    wait_gone "$RUN/dockerd.pid" dockerd
}

wait_gone() {
    local pidfile=$1 what=$2 pid
    pid=$(cat "$pidfile")
    local deadline=$((SECONDS + READY_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || die "$what (pid $pid) still running after ${READY_TIMEOUT}s"
        sleep 0.2
    done
    rm -f "$pidfile"
    log "$what stopped"
}

# --- commands -----------------------------------------------------------------------------

cmd_env() {
    printf 'export DATABASE_URL=postgres://%s:%s@%s:%s/%s\n' \
        "$DB_USER" "$DB_PASSWORD" "$PG_HOST" "$PG_PORT" "$DB_NAME"
    printf 'export REDIS_URL=redis://%s:%s/0\n' "$REDIS_HOST" "$REDIS_PORT"
}

cmd_status() {
    local rc=0
    if pg_ready; then log "postgres: up ($PG_HOST:$PG_PORT)"; else log "postgres: down"; rc=1; fi
    if redis_ready; then log "redis: up ($REDIS_HOST:$REDIS_PORT)"; else log "redis: down"; rc=1; fi
    if docker_ready >/dev/null 2>&1; then log "docker: up"; else log "docker: down"; rc=1; fi
    return $rc
}

# selected <name>: true when no services were named on the command line, or <name> was.
selected() {
    [[ ${#SERVICES[@]} -eq 0 ]] && return 0
    local s
    for s in "${SERVICES[@]}"; do [[ $s == "$1" ]] && return 0; done
    return 1
}

main() {
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    SERVICES=("$@")
    local s
    for s in "${SERVICES[@]}"; do
        [[ $s == postgres || $s == redis || $s == docker ]] || die "unknown service '$s' (postgres, redis, docker)"
    done
    case $cmd in
        start)
            mkdir -p "$VAR" "$RUN"
            if selected postgres; then pg_start; fi
            if selected redis; then redis_start; fi
            if selected docker; then dockerd_start; fi
            log "services ready; eval \"\$($0 env)\" to use them"
            ;;
        stop)
            mkdir -p "$RUN"
            if selected redis; then redis_stop; fi
            if selected postgres; then pg_stop; fi
            if selected docker; then dockerd_stop; fi
            ;;
        status) cmd_status ;;
        env) cmd_env ;;
        # How many databases the Redis on our port has (0 when none answers): make test runs one
        # pytest-xdist worker per 16 of them.
        redis-databases) redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" config get databases 2>/dev/null | tail -n 1 | grep -E '^[0-9]+$' || echo 0 ;;
        *)
            printf 'usage: %s {start|stop|status|env|redis-databases} [postgres] [redis] [docker]\n' "$0" >&2
            exit 2
            ;;
    esac
}

main "$@"
