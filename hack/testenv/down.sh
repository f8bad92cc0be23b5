#!/usr/bin/env bash
# Stops every process up.sh started, by pid, and removes the runtime state. The real node goes first
# (node.sh: its pods are deleted through the apiserver while the kubelet lives), then the rest.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/node.sh"
[[ -d $MPAAS_RUN/node ]] && down_node
for pidfile in "$MPAAS_RUN"/*.pid; do
  [[ -f $pidfile ]] || continue
  stop_pidfile "$pidfile"
done
[[ ${KEEP_STATE:-0} == 1 ]] || rm -rf "$MPAAS_RUN"
