#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for the tests: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler built from the upstream Go modules (no kubelet, so pods
# are scheduled, that is bound to a node, but never run).
#
#   scripts/kube.sh install  build the four binaries once (Go module proxy only), cached outside the checkout
#   scripts/kube.sh start    install if needed, create certificates, start, wait until usable
#   scripts/kube.sh stop     stop the four processes this script started (state and cache stay)
#   scripts/kube.sh status   say what runs, where
#   scripts/kube.sh env      print the exports the tests read: eval "$(scripts/kube.sh env)"
#                            (KUBECONFIG: the admin kubeconfig, O=system:masters; ONBOARD_KUBE_SERVER:
#                            https://127.0.0.1:PORT; ONBOARD_KUBE_CA: the cluster CA certificate;
#                            ONBOARD_KUBE_ADMIN_CERT/_KEY: the admin's client certificate, with
#                            which the ARM simulator registers node pools' Nodes, as AKS would)
#   scripts/kube.sh reset    stop, then delete the state directory (certificates, etcd data, logs)
#
# Versions: k8s.io/kubernetes v1.34.12 (with its staging modules at v0.34.12) and etcd v3.6.5, the
# etcd release Kubernetes 1.34.12 declares; the wrapper modules are scripts/kube/go.mod and
# scripts/kube/etcd/go.mod. Debian's etcd-server (3.4.23 on bookworm) is not used: Kubernetes >= 1.31
# needs etcd >= 3.4.29 / 3.5.11.
#
# Binaries: ${KUBE_CACHE_DIR:-~/.cache/tenant-onboarding-worker/kube/v1.34.12}/bin, with a stamp, so a
# second install returns at once. State (certificates, kubeconfigs, etcd data, logs, pid files):
# ${KUBE_STATE_DIR:-~/.cache/tenant-onboarding-worker/kube-state}. etcd data survives stop/start;
# `reset` starts from an empty cluster.
#
# Ports: everything binds 127.0.0.1 only. The apiserver takes KUBE_APISERVER_PORT (which must be
# free), else 6443 if free, else the port it had last time, else a free one; etcd likewise
# (2379/2380), the controller manager and the scheduler (10257/10259, health only). `env` prints
# the apiserver's address. KUBE_START_TIMEOUT (seconds, default 180) bounds start.
#
# Fake nodes: the nodelifecycle controller does not run and the TaintNodesByCondition admission
# plugin is disabled, so a Node object created through the API (status.allocatable with cpu,
# memory and pods, a Ready condition) stays schedulable: nothing adds node.kubernetes.io/not-ready
# (the admission plugin would add it on create, and only nodelifecycle would take it away) and
# nothing marks the node unreachable for want of kubelet heartbeats. Pods bound to a fake node
# never finish terminating, as no kubelet confirms it: deleting their namespace waits until they
# are deleted with gracePeriodSeconds=0 or their node is deleted (podgc then force-deletes them,
# after about 40 s).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
me="kube.sh"

version="v1.34.12"      # k8s.io/kubernetes; the staging modules are at v0.34.12 (scripts/kube/go.mod)
etcd_version="v3.6.5"   # go.etcd.io/etcd/server/v3 (scripts/kube/etcd/go.mod)
min_go_minor=25         # k8s.io/kubernetes v1.34 declares go 1.25.0

cache_dir="${KUBE_CACHE_DIR:-$HOME/.cache/tenant-onboarding-worker/kube/$version}"
bin="$cache_dir/bin"
stamp="$cache_dir/stamp"
state="${KUBE_STATE_DIR:-$HOME/.cache/tenant-onboarding-worker/kube-state}"
pki="$state/pki"
logs="$state/logs"
ports_file="$state/ports.env"
host="127.0.0.1"
timeout="${KUBE_START_TIMEOUT:-180}"

components=(etcd kube-apiserver kube-controller-manager kube-scheduler)

# Controllers: what a Deployment needs to get Pods (deployment, replicaset), what namespaces and
# service accounts need (namespace, garbagecollector, serviceaccount, serviceaccount-token,
# root-ca-cert-publisher for the kube-root-ca.crt ConfigMap), what RBAC and quotas need
# (clusterrole-aggregation fills admin/edit/view, resourcequota computes quota usage, without which
# creating a pod in a namespace with a ResourceQuota fails), and the other workload controllers.
# Deliberately absent: nodelifecycle and taint-eviction-controller (no kubelet: they would taint
# and evict every fake node), nodeipam, persistent volumes, CSR signing, horizontalpodautoscaling.
controllers="namespace,garbagecollector,serviceaccount,serviceaccount-token,root-ca-cert-publisher"
controllers+=",clusterrole-aggregation,resourcequota,deployment,replicaset,statefulset,daemonset"
controllers+=",job,cronjob,ttl-after-finished,disruption,endpoint,endpointslice,endpointslicemirroring,podgc"

say() { echo "$me: $*" >&2; }
die() { echo "$me: error: $*" >&2; exit 1; }

# --- install -----------------------------------------------------------------------------------

go_cmd() {
  if command -v go >/dev/null; then command -v go
  elif [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go
  else return 1
  fi
}

ldflags() {
  local v="$version" minor
  minor=$(echo "$v" | cut -d. -f2)
  local flags="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit= -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

# What the binaries depend on: the wrapper modules (without their comments) and the build flags.
# A change rebuilds.
stamp_key() {
  {
    echo "kubernetes=$version etcd=$etcd_version"
    echo "ldflags=$(ldflags)"
    grep -hv '^//' "$root/scripts/kube/go.mod" "$root/scripts/kube/etcd/go.mod"
    cat "$root/scripts/kube/go.sum" "$root/scripts/kube/etcd/go.sum"
  } | sha256sum | cut -d' ' -f1
}

installed() {
  [ -f "$stamp" ] && [ "$(head -n1 "$stamp")" = "$(stamp_key)" ] || return 1
  local c
  for c in "${components[@]}"; do [ -x "$bin/$c" ] || return 1; done
}

fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# run_step LABEL LOG CMD...: run CMD with its output in LOG, print elapsed time while it runs,
# and on failure name the step, show the end of LOG and exit.
run_step() {
  local label="$1" log="$2"
  shift 2
  local t0 pid rc now
  t0=$(date +%s)
  say "$label ..."
  "$@" >"$log" 2>&1 &
  pid=$!
  local next=$((t0 + 30))
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    now=$(date +%s)
    if [ "$now" -ge "$next" ] && kill -0 "$pid" 2>/dev/null; then
      say "  $label: $(fmt_secs $((now - t0))) elapsed"
      next=$((now + 30))
    fi
  done
  rc=0
  wait "$pid" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "$me: error: step failed: $label (exit $rc, after $(fmt_secs $(($(date +%s) - t0)))); last lines of $log:" >&2
    tail -n 30 "$log" >&2 || true
    exit 1
  fi
  say "  $label: done in $(fmt_secs $(($(date +%s) - t0)))"
}

install() {
  if installed; then
    say "$version (etcd $etcd_version) already installed in $bin"
    return
  fi
  mkdir -p "$cache_dir"
  exec 9>"$cache_dir/.install.lock"
  if ! flock -n 9; then
    say "another install is building into $cache_dir; waiting for it"
    flock 9
  fi
  if installed; then
    say "$version (etcd $etcd_version) installed by another process in $bin"
    return
  fi

  local go goversion minor
  go=$(go_cmd) || die "Go is required (>= 1.$min_go_minor; not on PATH nor /usr/local/go/bin/go)"
  goversion=$("$go" env GOVERSION) || die "cannot run $go"
  minor=$(echo "$goversion" | sed -E 's/^go1\.([0-9]+).*/\1/')
  case "$minor" in ''|*[!0-9]*) die "cannot parse the Go version '$goversion'";; esac
  [ "$minor" -ge "$min_go_minor" ] || die "Go >= 1.$min_go_minor is required to build Kubernetes $version; $go is $goversion"

  local t0 src buildlog
  t0=$(date +%s)
  say "building Kubernetes $version and etcd $etcd_version with $goversion into $bin (once; later installs reuse it)"
  # Build from a copy of the wrapper modules so that nothing in the checkout changes.
  src="$cache_dir/src"
  buildlog="$cache_dir/logs"
  rm -rf "$src" "$bin.tmp"
  mkdir -p "$src/etcd" "$buildlog" "$bin.tmp"
  cp "$root/scripts/kube/go.mod" "$root/scripts/kube/go.sum" "$src/"
  cp "$root/scripts/kube/etcd/go.mod" "$root/scripts/kube/etcd/go.sum" "$src/etcd/"

  export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local
  local flags
  flags=$(ldflags)
  run_step "[1/6] download Go modules (k8s.io/kubernetes $version)" "$buildlog/download-kubernetes.log" \
    bash -c 'cd "$1" && "$2" mod download -x' _ "$src" "$go"
  run_step "[2/6] download Go modules (etcd $etcd_version)" "$buildlog/download-etcd.log" \
    bash -c 'cd "$1" && "$2" mod download -x' _ "$src/etcd" "$go"
  local step=3 c
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    run_step "[$step/6] build $c" "$buildlog/build-$c.log" \
      bash -c 'cd "$1" && "$2" build -trimpath -ldflags "$3" -o "$4" "$5"' _ \
      "$src" "$go" "$flags" "$bin.tmp/$c" "k8s.io/kubernetes/cmd/$c"
    step=$((step + 1))
  done
  run_step "[6/6] build etcd" "$buildlog/build-etcd.log" \
    bash -c 'cd "$1" && "$2" build -trimpath -ldflags "-s -w" -o "$3" go.etcd.io/etcd/server/v3' _ \
    "$src/etcd" "$go" "$bin.tmp/etcd"

  rm -rf "$bin"
  mv "$bin.tmp" "$bin"
  { stamp_key; echo "kubernetes $version, etcd $etcd_version, built with $goversion on $(date -u +%FT%TZ)"; } >"$stamp"
  say "installed in $bin in $(fmt_secs $(($(date +%s) - t0))): $("$bin/kube-apiserver" --version), etcd $("$bin/etcd" --version | sed -n 's/^etcd Version: //p')"
}

# --- certificates and kubeconfigs --------------------------------------------------------------

ensure_openssl() {
  command -v openssl >/dev/null && return
  say "openssl is missing; installing it with apt-get"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq openssl >&2 \
    || die "could not install openssl (apt-get install openssl); install it and retry"
}

# new_key FILE: an ECDSA P-256 key.
new_key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
  chmod 600 "$1"
}

# issue NAME SUBJECT EXTENSIONS [CA]: NAME.key and NAME.crt signed by CA (default: ca).
issue() {
  local name="$1" subject="$2" ext="$3" ca="${4:-ca}"
  new_key "$pki/$name.key"
  openssl req -new -key "$pki/$name.key" -subj "$subject" -config "$pki/openssl.cnf" -out "$pki/$name.csr"
  printf '%s\n' "$ext" >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 -extfile "$pki/$name.ext" \
    -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

# new_ca NAME CN: a self-signed CA, NAME.key and NAME.crt.
new_ca() {
  new_key "$pki/$1.key"
  openssl req -x509 -new -key "$pki/$1.key" -subj "/CN=$2" -config "$pki/openssl.cnf" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -addext "subjectKeyIdentifier=hash" -out "$pki/$1.crt"
}

# Creates what is missing, so a state directory from an older version of this script gains new
# files without losing its CA (and the kubeconfigs handed out with it).
ensure_pki() {
  mkdir -p "$pki"
  chmod 700 "$pki"
  printf '[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n' >"$pki/openssl.cnf"
  local server="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth"
  local client="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
  local made=()
  if [ ! -f "$pki/ca.crt" ] || [ ! -f "$pki/ca.key" ]; then
    rm -f "$pki"/*.crt "$pki"/*.key "$pki"/sa.pub
    new_ca ca "tenant-onboarding-worker test cluster CA"
    made+=(ca)
  fi
  # The CA the apiserver trusts for authenticating proxy headers (kubeadm's front-proxy CA): the
  # controller manager and the scheduler read it from the extension-apiserver-authentication
  # ConfigMap and log an error every few seconds while it is missing.
  if [ ! -f "$pki/front-proxy-ca.crt" ] || [ ! -f "$pki/front-proxy-ca.key" ]; then
    rm -f "$pki/front-proxy-client.crt"
    new_ca front-proxy-ca "tenant-onboarding-worker test cluster front-proxy CA"
    made+=(front-proxy-ca)
  fi
  leaf() {
    local name="$1"
    shift
    if [ ! -f "$pki/$name.crt" ] || [ ! -f "$pki/$name.key" ]; then
      issue "$name" "$@"
      made+=("$name")
    fi
  }
  leaf apiserver "/CN=kube-apiserver" "$server
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  leaf etcd-server "/CN=etcd" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
  leaf apiserver-etcd-client "/CN=kube-apiserver-etcd-client" "$client"
  leaf admin "/O=system:masters/CN=kubernetes-admin" "$client"
  leaf kube-controller-manager "/CN=system:kube-controller-manager" "$client"
  leaf kube-scheduler "/CN=system:kube-scheduler" "$client"
  leaf front-proxy-client "/CN=front-proxy-client" "$client" front-proxy-ca
  if [ ! -f "$pki/sa.key" ] || [ ! -f "$pki/sa.pub" ]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
    chmod 600 "$pki/sa.key"
    openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
    made+=(service-account-keys)
  fi
  [ ${#made[@]} -eq 0 ] || say "created in $pki: ${made[*]}"
}

b64() { base64 -w0 <"$1"; }

# write_kubeconfig NAME USER: $state/NAME.kubeconfig with the certificates embedded.
write_kubeconfig() {
  local name="$1" user="$2"
  (umask 077 && cat >"$state/$name.kubeconfig") <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kube-test
  cluster:
    server: https://$host:$APISERVER_PORT
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(b64 "$pki/$name.crt")
    client-key-data: $(b64 "$pki/$name.key")
contexts:
- name: $user@kube-test
  context:
    cluster: kube-test
    user: $user
current-context: $user@kube-test
EOF
}

# --- processes ---------------------------------------------------------------------------------

pidfile() { echo "$state/$1.pid"; }

running() {
  local f pid
  f=$(pidfile "$1")
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: the process must be that binary.
  local argv0
  argv0=$(head -z -n1 "/proc/$pid/cmdline" 2>/dev/null | tr -d '\0') || return 1
  [ "${argv0##*/}" = "$1" ]
}

port_in_use() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }

# pick_port PREFERRED...: the first preferred port that is free and not yet taken by this start,
# else a free one in 20000-31999 (below the kernel's ephemeral range).
taken=""
pick_port() {
  local p
  for p in "$@"; do
    [ -n "$p" ] || continue
    case " $taken " in *" $p "*) continue;; esac
    if ! port_in_use "$p"; then taken+=" $p"; echo "$p"; return; fi
  done
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 12000))
    case " $taken " in *" $p "*) continue;; esac
    if ! port_in_use "$p"; then taken+=" $p"; echo "$p"; return; fi
  done
  die "no free port found on $host"
}

launch() {
  local name="$1"
  shift
  local log="$logs/$name.log"
  [ -f "$log" ] && mv -f "$log" "$log.prev"
  # 8>&- 9>&-: the processes must not inherit (and so hold) this script's lock files.
  nohup "$bin/$name" "$@" </dev/null >"$log" 2>&1 8>&- 9>&- &
  echo $! >"$(pidfile "$name")"
}

fail_start() {
  local name="$1" why="$2"
  echo "$me: error: $name $why; last lines of its log $logs/$name.log:" >&2
  tail -n 25 "$logs/$name.log" >&2 || true
  say "stopping what this start launched (logs stay in $logs)"
  stop_all >/dev/null 2>&1 || true
  exit 1
}

deadline=0
# wait_for NAME WHAT CMD...: retry CMD until it succeeds; fail if NAME exits or the deadline passes.
wait_for() {
  local name="$1" what="$2"
  shift 2
  until "$@" >/dev/null 2>&1; do
    running "$name" || fail_start "$name" "exited while waiting for $what"
    [ "$(date +%s)" -lt "$deadline" ] || fail_start "$name" "did not get to '$what' within ${timeout}s (KUBE_START_TIMEOUT)"
    sleep 0.5
  done
}

admin_curl() {
  curl -sSf --max-time 5 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://$host:$APISERVER_PORT$1"
}

etcd_health() {
  curl -sSf --max-time 5 --cacert "$pki/ca.crt" --cert "$pki/apiserver-etcd-client.crt" \
    --key "$pki/apiserver-etcd-client.key" "https://$host:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'
}

# Health endpoints of the controller manager and the scheduler: self-signed serving certificates,
# /healthz open to anyone.
component_healthz() { curl -sSfk --max-time 5 "https://$host:$1/healthz" | grep -qx ok; }

load_ports() {
  ETCD_CLIENT_PORT="" ETCD_PEER_PORT="" APISERVER_PORT="" KCM_PORT="" SCHEDULER_PORT=""
  # shellcheck disable=SC1090
  [ -f "$ports_file" ] && . "$ports_file"
  return 0
}

# One start or stop at a time per state directory (parallel test runs may all call start).
lock_state() {
  exec 8>"$state/.lock"
  flock -w $((timeout + 60)) 8 || die "another scripts/kube.sh start/stop holds $state/.lock"
}

start() {
  mkdir -p "$state"
  lock_state

  local up=() down=() c
  for c in "${components[@]}"; do
    if running "$c"; then up+=("$c"); else down+=("$c"); fi
  done
  if [ ${#down[@]} -eq 0 ]; then
    load_ports
    say "already running: apiserver https://$host:$APISERVER_PORT (logs in $logs)"
    echo "$state/admin.kubeconfig"
    return
  fi
  if [ ${#up[@]} -gt 0 ]; then
    say "partly running (${up[*]} up, ${down[*]} down); restarting all"
    stop_all
  fi

  install
  ensure_openssl
  command -v curl >/dev/null || die "curl is required (apt-get install curl)"
  ensure_pki
  mkdir -p "$logs" "$state/etcd"
  chmod 700 "$state/etcd"

  local t0
  t0=$(date +%s)
  deadline=$((t0 + timeout))
  load_ports
  taken=""
  ETCD_CLIENT_PORT=$(pick_port 2379 "$ETCD_CLIENT_PORT")
  ETCD_PEER_PORT=$(pick_port 2380 "$ETCD_PEER_PORT")
  APISERVER_PORT=$(pick_port "${KUBE_APISERVER_PORT:-6443}" "$APISERVER_PORT")
  KCM_PORT=$(pick_port 10257 "$KCM_PORT")
  SCHEDULER_PORT=$(pick_port 10259 "$SCHEDULER_PORT")
  if [ -n "${KUBE_APISERVER_PORT:-}" ] && [ "$APISERVER_PORT" != "$KUBE_APISERVER_PORT" ]; then
    die "KUBE_APISERVER_PORT=$KUBE_APISERVER_PORT is in use"
  fi
  cat >"$ports_file" <<EOF
ETCD_CLIENT_PORT=$ETCD_CLIENT_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
KCM_PORT=$KCM_PORT
SCHEDULER_PORT=$SCHEDULER_PORT
EOF
  write_kubeconfig admin kubernetes-admin
  write_kubeconfig kube-controller-manager system:kube-controller-manager
  write_kubeconfig kube-scheduler system:kube-scheduler

  say "starting etcd on $host:$ETCD_CLIENT_PORT"
  launch etcd \
    --name=kube-test --data-dir="$state/etcd" \
    --listen-client-urls="https://$host:$ETCD_CLIENT_PORT" --advertise-client-urls="https://$host:$ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://$host:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://$host:$ETCD_PEER_PORT" \
    --initial-cluster="kube-test=http://$host:$ETCD_PEER_PORT" \
    --cert-file="$pki/etcd-server.crt" --key-file="$pki/etcd-server.key" \
    --trusted-ca-file="$pki/ca.crt" --client-cert-auth=true
  wait_for etcd "/health" etcd_health

  say "starting kube-apiserver on https://$host:$APISERVER_PORT"
  # --endpoint-reconciler-type=none: the endpoints of the `kubernetes` Service would be
  # 127.0.0.1, which Endpoints validation rejects (loopback), every 10 s in the log. With it the
  # apiserver logs one misleading "Found stale data, removed previous endpoints" error per start
  # (the none reconciler's RemoveEndpoints always succeeds); harmless.
  launch kube-apiserver \
    --bind-address="$host" --advertise-address="$host" --secure-port="$APISERVER_PORT" \
    --etcd-servers="https://$host:$ETCD_CLIENT_PORT" --etcd-cafile="$pki/ca.crt" \
    --etcd-certfile="$pki/apiserver-etcd-client.crt" --etcd-keyfile="$pki/apiserver-etcd-client.key" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --requestheader-client-ca-file="$pki/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-uid-headers=X-Remote-Uid \
    --requestheader-group-headers=X-Remote-Group --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy-client.key" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction,PodSecurity \
    --disable-admission-plugins=TaintNodesByCondition \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --endpoint-reconciler-type=none \
    --allow-privileged=true \
    --cert-dir="$state/apiserver-certs" \
    --profiling=false
  wait_for kube-apiserver "/readyz" admin_curl /readyz

  say "starting kube-controller-manager and kube-scheduler"
  local kcm="$state/kube-controller-manager.kubeconfig" sched="$state/kube-scheduler.kubeconfig"
  launch kube-controller-manager \
    --kubeconfig="$kcm" --authentication-kubeconfig="$kcm" --authorization-kubeconfig="$kcm" \
    --bind-address="$host" --secure-port="$KCM_PORT" --cert-dir="$state/kcm-certs" \
    --leader-elect=false \
    --controllers="$controllers" \
    --use-service-account-credentials=true \
    --root-ca-file="$pki/ca.crt" --service-account-private-key-file="$pki/sa.key" \
    --profiling=false
  launch kube-scheduler \
    --kubeconfig="$sched" --authentication-kubeconfig="$sched" --authorization-kubeconfig="$sched" \
    --bind-address="$host" --secure-port="$SCHEDULER_PORT" --cert-dir="$state/scheduler-certs" \
    --leader-elect=false \
    --profiling=false
  wait_for kube-controller-manager "/healthz" component_healthz "$KCM_PORT"
  wait_for kube-scheduler "/healthz" component_healthz "$SCHEDULER_PORT"
  wait_for kube-apiserver "the default namespace" admin_curl /api/v1/namespaces/default
  wait_for kube-controller-manager "the default service account" admin_curl /api/v1/namespaces/default/serviceaccounts/default

  say "control plane $version up in $(fmt_secs $(($(date +%s) - t0))): apiserver https://$host:$APISERVER_PORT, etcd $host:$ETCD_CLIENT_PORT, logs in $logs"
  say "admin kubeconfig (eval \"\$(scripts/kube.sh env)\" for the exports):"
  echo "$state/admin.kubeconfig"
}

# stop_group NAME...: SIGTERM the named components together, wait up to 10 s, then SIGKILL.
stop_group() {
  local name pids=() names=() pid i
  for name in "$@"; do
    if running "$name"; then
      pid=$(cat "$(pidfile "$name")")
      kill "$pid" 2>/dev/null || true
      pids+=("$pid")
      names+=("$name")
    fi
    rm -f "$(pidfile "$name")"
  done
  for _ in $(seq 1 100); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      say "${names[$i]} (pid ${pids[$i]}) ignored SIGTERM for 10 s; killing it"
      kill -9 "${pids[$i]}" 2>/dev/null || true
    fi
    say "stopped ${names[$i]} (pid ${pids[$i]})"
  done
}

# The clients first, then the apiserver, then its storage.
stop_all() {
  stop_group kube-scheduler kube-controller-manager
  stop_group kube-apiserver
  stop_group etcd
}

stop() {
  [ -d "$state" ] || { say "not running"; return; }
  lock_state
  local c any=0
  for c in "${components[@]}"; do running "$c" && any=1; done
  if [ "$any" = 0 ]; then
    rm -f "$state"/*.pid
    say "not running"
    return
  fi
  stop_all
}

status() {
  load_ports
  local c all=0 port
  for c in "${components[@]}"; do
    case "$c" in
      etcd) port="$ETCD_CLIENT_PORT" ;;
      kube-apiserver) port="$APISERVER_PORT" ;;
      kube-controller-manager) port="$KCM_PORT" ;;
      kube-scheduler) port="$SCHEDULER_PORT" ;;
    esac
    if running "$c"; then
      echo "$c: running (pid $(cat "$(pidfile "$c")")) on $host:$port"
    else
      echo "$c: not running"
      all=1
    fi
  done
  if installed; then echo "binaries: $bin ($version, etcd $etcd_version)"; else echo "binaries: not installed (scripts/kube.sh install)"; fi
  [ "$all" = 0 ] && echo "admin kubeconfig: $state/admin.kubeconfig"
  return "$all"
}

print_env() {
  load_ports
  [ -n "$APISERVER_PORT" ] && [ -f "$state/admin.kubeconfig" ] \
    || die "no control plane state in $state; run scripts/kube.sh start first"
  running kube-apiserver || say "warning: kube-apiserver is not running (scripts/kube.sh start)"
  printf 'export KUBECONFIG=%q\n' "$state/admin.kubeconfig"
  printf 'export ONBOARD_KUBE_SERVER=%q\n' "https://$host:$APISERVER_PORT"
  printf 'export ONBOARD_KUBE_CA=%q\n' "$pki/ca.crt"
  printf 'export ONBOARD_KUBE_ADMIN_CERT=%q\n' "$pki/admin.crt"
  printf 'export ONBOARD_KUBE_ADMIN_KEY=%q\n' "$pki/admin.key"
}

reset() {
  stop
  if [ -d "$state" ]; then
    rm -rf "$state"
    say "deleted $state"
  fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) print_env ;;
  reset) reset ;;
  *) echo "usage: $0 install|start|stop|status|env|reset" >&2; exit 2 ;;
esac
