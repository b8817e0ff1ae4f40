#!/usr/bin/env bash
# Entry point of the hangar-console image: the first argument picks the process.
#   web       ASGI server (dashboard, REST API, gateway, websockets) on $HANGAR_PORT (8000)
#   worker    Celery worker (reconcile, drivers, metrics scraping)
#   beat      Celery beat (periodic resync, rollups, reaping, autoscaler ticks); a second one
#             stands by until the first one's lease in Redis expires (console/beat.py)
#   migrate   apply database migrations, then exit (a compose one-off / Kubernetes Job)
#   worker-alive [MAX_AGE_S]
#             liveness of a worker in this container: exit 0 when its event loop touched
#             $HANGAR_WORKER_HEARTBEAT_FILE less than MAX_AGE_S (60) seconds ago
#   manage    any manage.py command: `manage createsuperuser`
#   anything else is executed as is
set -euo pipefail

cmd=${1:-web}
[[ $# -gt 0 ]] && shift

# JSON logs (the production default): no Celery banner either, every line is one JSON object.
celery_quiet=""
[[ ${HANGAR_LOG_FORMAT:-json} == json ]] && celery_quiet=--quiet

case $cmd in
    web)
        # No permessage-deflate: compressing each small live-update frame once per websocket
        # cost more server CPU than the rest of the fan-out (bench/ws_fanout.py).
        exec uvicorn console.asgi:application \
            --host "${HANGAR_HOST:-0.0.0.0}" --port "${HANGAR_PORT:-8000}" \
            --workers "${HANGAR_WEB_WORKERS:-1}" \
            --proxy-headers --forwarded-allow-ips "${HANGAR_FORWARDED_ALLOW_IPS:-127.0.0.1}" \
            --no-server-header --ws-per-message-deflate false "$@"
        ;;
    worker)
        if [[ ${HANGAR_WORKER_METRICS_PORT:-0} != 0 ]]; then
            # The pool's processes share their metrics through files here (workers/telemetry.py).
            export PROMETHEUS_MULTIPROC_DIR=${PROMETHEUS_MULTIPROC_DIR:-/tmp/hangar-worker-metrics}
            mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
        fi
        exec celery -A console ${celery_quiet:+"$celery_quiet"} worker --loglevel "${HANGAR_LOG_LEVEL:-INFO}" \
            --concurrency "${HANGAR_WORKER_CONCURRENCY:-2}" "$@"
        ;;
    beat)
        # The schedule file is scratch state (the schedule itself is code); keep it writable.
        exec celery -A console ${celery_quiet:+"$celery_quiet"} beat --loglevel "${HANGAR_LOG_LEVEL:-INFO}" \
            --scheduler console.beat:LeaderScheduler \
            --schedule "${HANGAR_DATA_DIR:-/var/lib/hangar}/celerybeat-schedule" "$@"
        ;;
    worker-alive)
        # A stat, not `celery inspect ping`: no interpreter to start and no broker round trip
        # (console/worker_liveness.py says why).
        heartbeat=${HANGAR_WORKER_HEARTBEAT_FILE:?set HANGAR_WORKER_HEARTBEAT_FILE for the worker and its probe}
        touched=$(stat -c %Y "$heartbeat")
        age=$(( $(date +%s) - touched ))
        if (( age >= ${1:-60} )); then
            echo "worker heartbeat $heartbeat is ${age}s old" >&2
            exit 1
        fi
        ;;
    migrate)
        exec python /app/manage.py migrate --noinput "$@"
        ;;
    manage)
        exec python /app/manage.py "$@"
        ;;
    *)
        exec "$cmd" "$@"
        ;;
esac
