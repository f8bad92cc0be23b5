#!/usr/bin/env bash
# Builds etcd, kwok and helm from their Go modules into the version-keyed cache.
source "$(dirname "$0")/lib.sh"

build_etcd() {
  local out="$MPAAS_CACHE/etcd-$ETCD_VERSION"
  [[ -x $out/etcd ]] && { log "etcd $ETCD_VERSION cached"; return; }
  # etcd's server module has local replace lines too: build it from a scratch module.
  local work; work="$(mktemp -d)"
  ( cd "$work" && go mod init scratch/etcd >/dev/null 2>&1 \
    && go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" \
    && mkdir -p "$out.tmp" \
    && go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3 )
  rm -rf "$work" "$out"; mv "$out.tmp" "$out"; log "etcd built"
}

build_kwok() {
  local out="$MPAAS_CACHE/kwok-$KWOK_VERSION"
  [[ -x $out/kwok && -f $out/stages.yaml ]] && { log "kwok $KWOK_VERSION cached"; return; }
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
  # The standalone binary needs stage objects; the module ships them.
  local src; src="$(go env GOMODCACHE)/sigs.k8s.io/kwok@v$KWOK_VERSION/kustomize/stage"
  # Only the stages a fake cluster needs: nodes come up and heartbeat, pods run,
  # finish and go away when deleted (without pod-delete they hang in Terminating).
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    cat "$src/$f"; echo "---"
  done > "$out.tmp/stages.yaml"
  chmod -R u+w "$out.tmp"
  rm -rf "$out"; mv "$out.tmp" "$out"; log "kwok built"
}

build_helm() {
  local out="$MPAAS_CACHE/helm-$HELM_VERSION"
  [[ -x $out/helm ]] && { log "helm $HELM_VERSION cached"; return; }
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
  rm -rf "$out"; mv "$out.tmp" "$out"; log "helm built"
}

for t in "${@:-etcd kwok helm}"; do
  for x in $t; do "build_$x"; done
done
