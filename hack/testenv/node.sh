# The real node of the test cluster: containerd (runc), the kubelet and kube-proxy (iptables mode) on
# this machine, next to kwok's fake node. Sourced by up.sh (up_node) and down.sh (down_node).
#
# Isolation: the real node registers with the taint mpaas.io/real-node=true:NoSchedule, so nothing
# of the kwok tiers lands on it (operator-built Deployments there carry no toleration; the fake node
# stays untainted and unchanged). A pods-tier namespace opts in with two annotations the apiserver's
# PodTolerationRestriction and PodNodeSelector admission plugins apply to every pod created in it:
# the toleration, and a nodeSelector for this node. So the operator's own Deployments run real pods
# there, unmodified, and never on the fake node.
#
# Addresses: the node's own address on an empty bridge (mpaas-node0; the kubelet refuses loopback and
# the kernel has no dummy device), pods on the bridge mpaas-cni0, no masquerading: no traffic leaves
# the machine. Everything the kubelet and containerd write outside $MPAAS_RUN/node, every sysctl they
# change, is recorded here and put back by down_node, which also works from the files alone after a
# killed run.

NODE_NAME="${NODE_NAME:-mpaas-node}"
NODE_IP="${NODE_IP:-10.243.0.1}"
POD_CIDR="${POD_CIDR:-10.244.0.0/24}"
NODE_BRIDGE=mpaas-node0
POD_BRIDGE=mpaas-cni0
CNI_NETWORK=mpaas-pods
KUBELET_PORT="${KUBELET_PORT:-10250}"
KUBELET_HEALTHZ_PORT="${KUBELET_HEALTHZ_PORT:-10248}"
KUBE_PROXY_METRICS_PORT="${KUBE_PROXY_METRICS_PORT:-10249}"
KUBE_PROXY_HEALTHZ_PORT="${KUBE_PROXY_HEALTHZ_PORT:-10256}"
NODE_TAINT=mpaas.io/real-node
NODE_IMAGE="${MPAAS_IMAGE:-localhost/mpaas:dev}"
NODE="$MPAAS_RUN/node"
NODE_K8S="$MPAAS_CACHE/kubernetes-node-$K8S_VERSION"
CTRD_SOCK="$NODE/containerd/containerd.sock"
# What the kubelet (vm.*, kernel.*), the bridge plugin (ip_forward) and kube-proxy may change.
NODE_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes net.ipv4.ip_forward net.ipv4.conf.all.route_localnet
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)
# Paths the kubelet and containerd write whatever their configuration says.
NODE_HOST_PATHS=(/var/lib/kubelet /var/log/pods /var/log/containers /run/containerd /var/lib/cni
  /usr/libexec/kubernetes /run/netns)

ctr_() { ctr --address "$CTRD_SOCK" -n k8s.io "$@"; }

up_node() {
  [[ $(id -u) -eq 0 ]] || die "the real node needs root (containerd, kubelet, iptables)"
  local need=()
  for b in runc containerd ctr conntrack socat iptables; do command -v "$b" >/dev/null || need+=("$b"); done
  (( ${#need[@]} )) && install_apt runc containerd conntrack socat iptables
  bash "$HACK_DIR/testenv/build-k8s.sh" node
  bash "$ROOT_DIR/hack/build-image" "$NODE/images"
  mkdir -p "$NODE" "$LOGS/node"

  # Before anything changes: the sysctls, and which host paths exist already.
  if [[ ! -f $NODE/sysctl.before ]]; then
    for s in "${NODE_SYSCTLS[@]}"; do
      v="$(sysctl -n "$s" 2>/dev/null)" && printf '%s=%s\n' "$s" "$v"
    done > "$NODE/sysctl.before"
    for p in "${NODE_HOST_PATHS[@]}"; do [[ -e $p ]] && echo "$p"; done > "$NODE/host-paths.before"
    # iptables-nft creates its tables on first use; they are dropped again if they were not here.
    if command -v nft >/dev/null; then nft list tables > "$NODE/nft-tables.before" 2>/dev/null || true; fi
  fi

  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 || {
    ip link add "$NODE_BRIDGE" type bridge
    ip addr add "$NODE_IP/32" dev "$NODE_BRIDGE"
    ip link set "$NODE_BRIDGE" up
  }

  mkdir -p "$NODE/containerd" "$NODE/cni/net.d" "$NODE/cni/ipam" "$NODE/kubelet/root" "$NODE/kubelet/pki"
  cat > "$NODE/containerd/config.toml" <<TOML
version = 2
root = "$NODE/containerd/root"
state = "$NODE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$NODE/containerd/ttrpc.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:$PAUSE_VERSION"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
TOML
  cat > "$NODE/cni/net.d/10-$CNI_NETWORK.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "$CNI_NETWORK", "plugins": [
  {"type": "bridge", "bridge": "$POD_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$NODE/cni/ipam", "ranges": [[{"subnet": "$POD_CIDR"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "loopback"}]}
JSON
  start node/containerd containerd --config "$NODE/containerd/config.toml"
  wait_for node/containerd 30 ctr_ version
  ctr_ images import "$NODE/images/pause.tar" >/dev/null
  ctr_ images import "$NODE/images/mpaas.tar" >/dev/null
  log "images imported: $(ctr_ images ls -q | grep -v '^sha256:' | tr '\n' ' ')"

  cat > "$NODE/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
# Anonymous and always allowed, so bound to the node's bridge address only.
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CTRD_SOCK
imageServiceEndpoint: unix://$CTRD_SOCK
volumePluginDir: $NODE/kubelet/volume-plugins
clusterDomain: cluster.local
clusterDNS: []
registerWithTaints: [{key: $NODE_TAINT, value: "true", effect: NoSchedule}]
evictionHard: {memory.available: "100Mi", nodefs.available: "2%", imagefs.available: "2%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 98
imageGCLowThresholdPercent: 97
nodeStatusUpdateFrequency: 4s
maxPods: 50
makeIPTablesUtilChains: false
serializeImagePulls: false
YAML
  start node/kubelet "$NODE_K8S/kubelet" --config "$NODE/kubelet/config.yaml" --kubeconfig "$MPAAS_RUN/kubeconfig" \
    --root-dir "$NODE/kubelet/root" --cert-dir "$NODE/kubelet/pki" --node-ip "$NODE_IP" \
    --hostname-override "$NODE_NAME" --node-labels "$NODE_TAINT=true"
  wait_for node/kubelet 60 node_ready

  cat > "$NODE/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$MPAAS_RUN/kubeconfig"}
mode: iptables
hostnameOverride: $NODE_NAME
bindAddress: 127.0.0.1
clusterCIDR: $POD_CIDR
nodePortAddresses: ["$NODE_IP/32"]
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
iptables: {minSyncPeriod: 0s, syncPeriod: 30s}
# Zeros: kube-proxy leaves the conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
  start node/kube-proxy "$NODE_K8S/kube-proxy" --config "$NODE/kube-proxy.yaml"
  wait_for node/kube-proxy 30 curl -sf "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz"
  # Pods reach the apiserver as the `kubernetes` Service, whose endpoint is the advertised node
  # address; the apiserver itself keeps to 127.0.0.1.
  start node/apiserver-proxy socat "TCP-LISTEN:$APISERVER_PORT,bind=$NODE_IP,fork,reuseaddr" \
    "TCP:127.0.0.1:$APISERVER_PORT"
  cat > "$NODE/env.sh" <<ENV
export MPAAS_TEST_NODE="$NODE_NAME"
export MPAAS_TEST_NODE_IP="$NODE_IP"
export MPAAS_TEST_NODE_TAINT="$NODE_TAINT"
export MPAAS_TEST_IMAGE="$NODE_IMAGE"
ENV
  log "real node $NODE_NAME ready at $NODE_IP"
}

node_ready() {
  kubectl_ get --raw "/api/v1/nodes/$NODE_NAME" \
    | python3 -c 'import json,sys; n=json.load(sys.stdin); sys.exit(not any(c["type"]=="Ready" and c["status"]=="True" for c in n["status"]["conditions"]))'
}

# stop_pidfile FILE: TERM the process group, KILL after 5 s; always by the recorded pid.
stop_pidfile() {
  local f=$1 pid
  [[ -f $f ]] || return 0
  pid="$(cat "$f")"
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    log "stopped $(basename "$f" .pid) (pid $pid)"
  fi
  rm -f "$f"
}

# alive PIDFILE: the process runs (a zombie nobody reaped yet does not count).
alive() {
  [[ -f $1 ]] || return 1
  local state
  state="$(awk '{print $3}' "/proc/$(cat "$1")/stat" 2>/dev/null)" || return 1
  [[ -n $state && $state != Z ]]
}

# iptables_sweep PREFIX: remove the chains named PREFIX* from every table, and the jumps to them.
iptables_sweep() {
  local prefix=$1 ipt table chain rule
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for table in filter nat mangle raw; do
      "$ipt-save" -t "$table" 2>/dev/null | grep -q -- ":$prefix" || continue
      # Jumps first (from any chain), then empty every such chain, then delete them.
      "$ipt-save" -t "$table" | grep -E -- "^-A .* -j $prefix" | sed 's/^-A /-D /' | while read -r rule; do
        eval "$ipt -w -t $table $rule" 2>/dev/null || true
      done
      for chain in $("$ipt-save" -t "$table" | sed -n "s/^:\($prefix[^ ]*\) .*/\1/p"); do
        "$ipt" -w -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$ipt-save" -t "$table" | sed -n "s/^:\($prefix[^ ]*\) .*/\1/p"); do
        "$ipt" -w -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

unmount_under() {
  local m
  for m in $(awk -v p="$1" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

# The teardown, in the order that leaves the machine clean (pods first, while the kubelet lives:
# only its CNI DEL removes a pod's veth and address). After a killed run the later steps do the
# same from the files and well-known names alone.
down_node() {
  local kubectl="$MPAAS_CACHE/kubernetes-$K8S_VERSION/kubectl" kc
  kc=("$kubectl" --kubeconfig "$MPAAS_RUN/kubeconfig" --request-timeout 10s)
  if alive "$NODE/kubelet.pid" && alive "$MPAAS_RUN/kube-apiserver.pid" && alive "$NODE/containerd.pid"; then
    # Cordoned, so controllers' replacements stay Pending instead of starting again.
    "${kc[@]}" cordon "$NODE_NAME" >/dev/null 2>&1 || true
    "${kc[@]}" delete pods -A --field-selector "spec.nodeName=$NODE_NAME" --wait=true --timeout=60s \
      >/dev/null 2>&1 || "${kc[@]}" delete pods -A --field-selector "spec.nodeName=$NODE_NAME" --force \
      --grace-period=0 >/dev/null 2>&1 || true
    for _ in $(seq 100); do [[ -z $(ctr_ tasks ls -q 2>/dev/null) ]] && break; sleep 0.3; done
    log "pods on $NODE_NAME deleted"
  fi
  stop_pidfile "$NODE/apiserver-proxy.pid"
  stop_pidfile "$NODE/kube-proxy.pid"
  [[ -f $NODE/kube-proxy.yaml && -x $NODE_K8S/kube-proxy ]] \
    && "$NODE_K8S/kube-proxy" --cleanup --config "$NODE/kube-proxy.yaml" >/dev/null 2>&1 || true
  stop_pidfile "$NODE/kubelet.pid"
  if alive "$NODE/containerd.pid"; then
    local c
    for c in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s KILL "$c" >/dev/null 2>&1 || true; done
  fi
  stop_pidfile "$NODE/containerd.pid"
  # Shims and their containers outlive containerd: stop them by the pids containerd recorded, and the
  # shims by pid too, found by the socket of this node's containerd they were started for.
  local f pid
  for f in "$NODE"/containerd/state/io.containerd.runtime.v2.task/*/*/{init,shim}.pid; do
    [[ -f $f ]] || continue
    pid="$(cat "$f")"
    [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null && log "killed $(basename "$f" .pid) pid $pid"
  done
  for f in /proc/[0-9]*/cmdline; do
    tr '\0' ' ' < "$f" 2>/dev/null | grep -q "^[^ ]*containerd-shim[^ ]* .*-address $CTRD_SOCK " || continue
    pid="${f#/proc/}"; pid="${pid%/cmdline}"
    kill -KILL "$pid" 2>/dev/null && log "killed shim pid $pid"
  done
  # Anything still in the pods' cgroups is a container process of this node.
  local procs
  procs="$(find /sys/fs/cgroup/*/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)"
  [[ -n $procs ]] && kill -KILL $procs 2>/dev/null
  sleep 0.2
  unmount_under "$NODE/"
  local ns
  for ns in /run/netns/cni-*; do [[ -e $ns ]] && { umount "$ns" 2>/dev/null; rm -f "$ns"; }; done
  for c in /sys/fs/cgroup/*/kubepods; do
    [[ -d $c ]] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  local l
  for l in $(ip -o link show master "$POD_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link del "$l" 2>/dev/null || true
  done
  ip link del "$POD_BRIDGE" 2>/dev/null || true
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
  # kube-proxy --cleanup leaves the kubelet's KUBE-FIREWALL (filter) and canary chains; the bridge
  # plugin's CNI-* chains exist only with masquerading, which this node does not use.
  iptables_sweep KUBE-
  if [[ -f $NODE/nft-tables.before ]]; then
    local table
    nft list tables 2>/dev/null | while read -r _ family table; do
      grep -qxF "table $family $table" "$NODE/nft-tables.before" && continue
      # Only an empty one: a rule in it is someone else's.
      nft list table "$family" "$table" 2>/dev/null | grep -qE '^\s+(ip|tcp|udp|meta|counter|jump|goto|mark|ct|xt|oifname|iifname|accept|drop|return)' \
        || nft delete table "$family" "$table" 2>/dev/null || true
    done
  fi
  if [[ -f $NODE/sysctl.before ]]; then
    local line
    while read -r line; do sysctl -q -w "$line" >/dev/null 2>&1 || true; done < "$NODE/sysctl.before"
    log "sysctls restored"
  fi
  if [[ -f $NODE/host-paths.before ]]; then
    local p
    for p in "${NODE_HOST_PATHS[@]}"; do
      grep -qxF "$p" "$NODE/host-paths.before" && continue
      # The network namespaces' folder only when empty: a namespace in it is someone else's.
      if [[ $p == /run/netns ]]; then rmdir "$p" 2>/dev/null || true; else rm -rf "$p"; fi
    done
  fi
  rm -rf "$NODE"
}
