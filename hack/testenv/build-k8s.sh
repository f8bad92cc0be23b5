#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and kube-scheduler from the
# published k8s.io/kubernetes module. Its go.mod replaces every staging module
# with a local path, so `go install` is refused; a scratch module that pins each
# staging module to its published v0.x twin builds fine (kubernetes#79384).
source "$(dirname "$0")/lib.sh"
out="$MPAAS_CACHE/kubernetes-$K8S_VERSION"
if [[ -x $out/kube-apiserver && -x $out/kube-controller-manager && -x $out/kube-scheduler && -x $out/kubectl ]]; then
  log "kubernetes $K8S_VERSION cached in $out"; exit 0
fi
minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
cd "$work"
go mod init scratch/k8s >/dev/null 2>&1
gomod="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
{
  echo "require k8s.io/kubernetes v$K8S_VERSION"
  grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0\s*$' "$gomod" | awk -v v="v0.$minor.${K8S_VERSION##*.}" '{print "replace " $1 " => " $1 " " v}'
} >> go.mod
cat > tools.go <<'GO'
//go:build tools
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
log "resolving modules for kubernetes $K8S_VERSION"
go mod tidy -e >/dev/null 2>&1 || true
go get "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" "k8s.io/kubernetes/cmd/kube-controller-manager@v$K8S_VERSION" "k8s.io/kubernetes/cmd/kube-scheduler@v$K8S_VERSION" "k8s.io/kubernetes/cmd/kubectl@v$K8S_VERSION"
ld="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
mkdir -p "$out.tmp"
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  log "building $cmd (cold builds take several minutes)"
  go build -trimpath -ldflags "$ld" -o "$out.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd"
done
rm -rf "$out"; mv "$out.tmp" "$out"
log "kubernetes $K8S_VERSION built into $out"
