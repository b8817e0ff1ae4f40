#!/bin/sh
# Redis for Hangar with an ACL user: REDIS_PASSWORD is required, the `hangar` user (REDIS_USER)
# may do everything, and the unauthenticated default user may only PING (health checks). The
# password goes into a config file readable by this user only, never onto the command line.
# Clients connect with REDIS_URL=redis://hangar:<password>@host:6379/0. No persistence:
# everything Hangar keeps in Redis can be lost and rebuilt (DESIGN.md).
set -eu
if [ -z "${REDIS_PASSWORD:-}" ]; then
  echo "hangar-redis: set REDIS_PASSWORD (the ACL password of user ${REDIS_USER:-hangar}); refusing to start without one" >&2
  exit 64
fi
case "$REDIS_PASSWORD" in
  *[!A-Za-z0-9_-]*) echo "hangar-redis: REDIS_PASSWORD must be URL-safe (letters, digits, - and _)" >&2; exit 64 ;;
esac
if [ "${#REDIS_PASSWORD}" -lt 16 ]; then
  echo "hangar-redis: REDIS_PASSWORD must be at least 16 characters" >&2
  exit 64
fi
umask 077
conf=$(mktemp "${TMPDIR:-/tmp}/hangar-redis.XXXXXX")
cat >"$conf" <<CONF
bind ${REDIS_BIND:-0.0.0.0}
protected-mode no
port ${REDIS_PORT:-6379}
save ""
appendonly no
dir ${TMPDIR:-/tmp}
user default on nopass resetchannels -@all +ping
user ${REDIS_USER:-hangar} on >${REDIS_PASSWORD} ~* &* +@all
CONF
exec redis-server "$conf"
