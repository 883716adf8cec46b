#!/bin/sh
# Entry point of the continuum image: one image, three services. The first argument (or
# CONTINUUM_SERVICE when there is none) picks what runs:
#   scheduling | session-record | messaging [--flag=value ...]   a service (exec'd: it is PID 1
#                                                   and receives SIGTERM itself)
#   probe ADDRESS health [SERVICE]                  continuum-probe (health checks)
#   token --secret-file=F --subject=ID --role=R ... continuum-token (development JWTs)
#   init-secret FILE                                write a random HS256 secret to FILE unless it
#                                                   exists (docker compose's first start)
#   anything else                                   exec'd as a command (e.g. sh)
# Configuration is by CONTINUUM_* environment variables or --flags (see `<service> --help`).
# For a service this script only fills in container defaults that are unset: listen on all
# interfaces on the service's port, metrics likewise, SQLite under /var/lib/continuum.
set -eu

usage() {
  cat <<'USAGE'
usage: continuum-entrypoint scheduling|session-record|messaging [--option=value ...]
       continuum-entrypoint probe ADDRESS health [SERVICE]
       continuum-entrypoint token --secret-file=F --subject=ID --role=ROLE --clinics=C
       continuum-entrypoint init-secret FILE
Options of a service: continuum-entrypoint <service> --help
USAGE
}

cmd="${1:-${CONTINUUM_SERVICE:-}}"
[ "$#" -gt 0 ] && shift

case "$cmd" in
  scheduling)     port=7001; metrics=9101; db=scheduling ;;
  session-record) port=7002; metrics=9102; db=session_record ;;
  messaging)      port=7003; metrics=9103; db=messaging ;;
  probe|token)    exec "/usr/local/bin/continuum-$cmd" "$@" ;;
  init-secret)
    file="${1:?init-secret needs a FILE}"
    if [ ! -s "$file" ]; then
      umask 077
      od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$file.tmp"
      mv "$file.tmp" "$file"
      echo "init-secret: wrote a new HS256 secret to $file"
    else
      echo "init-secret: keeping the existing $file"
    fi
    exit 0 ;;
  help|-h|--help) usage; exit 0 ;;
  "")             usage >&2; exit 2 ;;
  *)              exec "$cmd" "$@" ;;
esac

# "${X=default}" (no colon): an explicitly empty value is kept (empty metrics address = off).
export CONTINUUM_LISTEN_ADDRESS="${CONTINUUM_LISTEN_ADDRESS=0.0.0.0:$port}"
export CONTINUUM_METRICS_ADDRESS="${CONTINUUM_METRICS_ADDRESS=0.0.0.0:$metrics}"
export CONTINUUM_DATABASE_URL="${CONTINUUM_DATABASE_URL=sqlite:/var/lib/continuum/$db.db}"
exec "/usr/local/bin/continuum-$cmd" "$@"
