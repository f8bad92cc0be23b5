#!/usr/bin/env bash
# Builds Kubernetes binaries from the published k8s.io/kubernetes module. Its go.mod replaces every
# staging module with a local path, so `go install` is refused; a scratch module that pins each
# staging module to its published v0.x twin builds fine (kubernetes#79384).
#   build-k8s.sh        kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#   build-k8s.sh node   kubelet and kube-proxy (the real node of `up.sh node`; reuses the Go build cache)
source "$(dirname "$0")/lib.sh"
if [[ ${1:-} == node ]]; then
  out="$MPAAS_CACHE/kubernetes-node-$K8S_VERSION"
  cmds=(kubelet kube-proxy)
else
  out="$MPAAS_CACHE/kubernetes-$K8S_VERSION"
  cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
fi
have=1
for cmd in "${cmds[@]}"; do [[ -x $out/$cmd ]] || have=0; done
if (( have )); then
  log "${cmds[*]} $K8S_VERSION cached in $out"; exit 0
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
{
  printf '//go:build tools\npackage tools\n\nimport (\n'
  for cmd in "${cmds[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$cmd"; done
  printf ')\n'
} > tools.go
log "resolving modules for kubernetes $K8S_VERSION"
go mod tidy -e >/dev/null 2>&1 || true
go get $(for cmd in "${cmds[@]}"; do echo "k8s.io/kubernetes/cmd/$cmd@v$K8S_VERSION"; done)
ld="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
mkdir -p "$out.tmp"
for cmd in "${cmds[@]}"; do
  log "building $cmd (cold builds take several minutes)"
  go build -trimpath -ldflags "$ld" -o "$out.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd"
done
rm -rf "$out"; mv "$out.tmp" "$out"
log "${cmds[*]} $K8S_VERSION built into $out"
