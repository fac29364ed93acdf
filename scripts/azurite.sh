#!/usr/bin/env bash
# Azurite (the Azure Storage emulator), table service only, for the Azure Table journal tests.
#
#   scripts/azurite.sh start   install into .local/azurite if needed, start, wait until it answers
#   scripts/azurite.sh stop    stop the instance this script started
#   scripts/azurite.sh status  say whether it runs
#   scripts/azurite.sh env     print the exports the tests read: eval "$(scripts/azurite.sh env)"
#
# Everything stays project-local (.local/), nothing is installed globally. Data lives in memory:
# a restart starts from empty tables. Idempotent: start when running and stop when stopped are no-ops.
# AZURITE_TABLE_PORT overrides the port (default 10002).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir="$root/.local/azurite"
pidfile="$root/.local/azurite.pid"
logfile="$root/.local/azurite.log"
# The newest Azurite whose engines.node accepts the Node 20 this machine has
# (3.36.0 wants >=21, 3.37.0 >=22; `npm view azurite@X engines`).
version="3.35.0"
host="127.0.0.1"
port="${AZURITE_TABLE_PORT:-10002}"
# Azurite's well-known development account: public constants, not secrets.
account="devstoreaccount1"
key="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

installed_version() {
  node -p "require('$dir/node_modules/azurite/package.json').version" 2>/dev/null || true
}

install() {
  if [ "$(installed_version)" = "$version" ]; then
    return
  fi
  command -v npm >/dev/null || { echo "azurite.sh: npm is required (Node >= 10) to install Azurite" >&2; exit 1; }
  mkdir -p "$dir"
  echo "azurite.sh: installing azurite@$version into $dir" >&2
  npm install --prefix "$dir" "azurite@$version" --no-audit --no-fund --no-save --loglevel=error >&2
}

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

port_answers() {
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

start() {
  if running; then
    echo "azurite.sh: already running (pid $(cat "$pidfile")) on $host:$port" >&2
    return
  fi
  rm -f "$pidfile"
  if port_answers; then
    echo "azurite.sh: $host:$port is already in use by another process; stop it or set AZURITE_TABLE_PORT" >&2
    exit 1
  fi
  install
  # In-memory data; started from .local/azurite/data so that anything Azurite still writes to its
  # working directory stays project-local (--location cannot be combined with in-memory).
  mkdir -p "$dir/data"
  cd "$dir/data"
  nohup "$dir/node_modules/.bin/azurite-table" \
    --tableHost "$host" --tablePort "$port" \
    --inMemoryPersistence \
    --skipApiVersionCheck --loose --disableTelemetry --silent \
    </dev/null >"$logfile" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    if port_answers; then
      echo "azurite.sh: table service listening on $host:$port (pid $(cat "$pidfile"), log $logfile)" >&2
      return
    fi
    if ! running; then
      echo "azurite.sh: Azurite exited during start-up; its log ($logfile):" >&2
      tail -n 20 "$logfile" >&2 || true
      rm -f "$pidfile"
      exit 1
    fi
    sleep 0.2
  done
  echo "azurite.sh: Azurite (pid $(cat "$pidfile")) did not answer on $host:$port within 20 s; see $logfile" >&2
  exit 1
}

stop() {
  if ! running; then
    rm -f "$pidfile"
    echo "azurite.sh: not running" >&2
    return
  fi
  pid=$(cat "$pidfile")
  kill "$pid"
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  echo "azurite.sh: stopped (pid $pid)" >&2
}

print_env() {
  echo "export AZURITE_TABLE_ENDPOINT=http://$host:$port/$account"
  echo "export AZURITE_ACCOUNT_NAME=$account"
  echo "export AZURITE_ACCOUNT_KEY=$key"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if running; then echo "running (pid $(cat "$pidfile")) on $host:$port"; else echo "not running"; exit 1; fi ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
