#!/usr/bin/env bash
# Stops every process up.sh started, by pid, and removes the runtime state.
source "$(dirname "$0")/lib.sh"
for pidfile in "$MPAAS_RUN"/*.pid; do
  [[ -f $pidfile ]] || continue
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    log "stopped $(basename "$pidfile" .pid) (pid $pid)"
  fi
  rm -f "$pidfile"
done
[[ ${KEEP_STATE:-0} == 1 ]] || rm -rf "$MPAAS_RUN"
