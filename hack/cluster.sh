#!/usr/bin/env bash
# Local Kubernetes control plane for InfluenceTrace tests and demos.
#
# Builds (once, cached by version outside the work tree) kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, etcd, kwok, kwokctl and
# helm from Go modules, then runs a real control plane through kwokctl's
# binary runtime, with kwok standing in for kubelets on fake GPU nodes.
#
# Usage: hack/cluster.sh <command>
#   build       build the pinned binaries into the cache (no-op when present)
#   up          build if needed, start or reuse the cluster, create GPU nodes, wait until ready
#               (--with-kueue: also build and start Kueue, its CRDs, flavors h100/h200 and a ClusterQueue)
#   build-kueue build the pinned Kueue controller into the cache (no-op when present)
#   kueue-down  stop Kueue and strip its finalizers from Kueue objects (the cluster keeps running)
#   down        stop the cluster and remove its state
#   status      exit 0 when the cluster answers, 1 otherwise
#   kubeconfig  print the kubeconfig path
#   bin         print the directory holding kubectl, helm, kwokctl (and the other binaries)
#   logs DIR    write the logs of every component to DIR
#   env         print shell exports (PATH, KUBECONFIG) for `eval "$(hack/cluster.sh env)"`
#   plan        print what `up` would run (kwokctl --dry-run): local binaries only
#   nodes       print the Node manifests `up` applies
#
# Environment:
#   INFLUENCETRACE_CACHE   cache root (default: $HOME/.cache/influencetrace)
#   CLUSTER_NAME           kwokctl cluster name (default: influencetrace)
#   GPU_NODES_PER_POOL     fake nodes per GPU pool (default: 2)
#   CPU_NODES              untainted CPU nodes (default: 1)
#   BUILD_PARALLELISM      go build -p value (default: 2)
#   KUEUE_CLUSTER_QUEUE    name of the ClusterQueue `up --with-kueue` creates (default: influencetrace)
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${HACK_DIR}/.." && pwd)"
# shellcheck source=versions.env
source "${HACK_DIR}/versions.env"

CACHE_ROOT="${INFLUENCETRACE_CACHE:-${HOME}/.cache/influencetrace}"
CLUSTER_NAME="${CLUSTER_NAME:-influencetrace}"
GPU_NODES_PER_POOL="${GPU_NODES_PER_POOL:-2}"
BUILD_PARALLELISM="${BUILD_PARALLELISM:-2}"

K8S_DIR="${CACHE_ROOT}/k8s-${KUBE_VERSION}"
ETCD_DIR="${CACHE_ROOT}/etcd-${ETCD_VERSION}"
KWOK_DIR="${CACHE_ROOT}/kwok-${KWOK_VERSION}"
HELM_DIR="${CACHE_ROOT}/helm-${HELM_VERSION}"
KUEUE_DIR="${CACHE_ROOT}/kueue-${KUEUE_VERSION}"
BIN_DIR="${CACHE_ROOT}/bin/k8s-${KUBE_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
SRC_DIR="${CACHE_ROOT}/src"
LOG_DIR="${CACHE_ROOT}/build-logs"

# kwokctl keeps clusters under $KWOK_WORKDIR (default ~/.kwok); keep it inside the cache too.
export KWOK_WORKDIR="${KWOK_WORKDIR:-${CACHE_ROOT}/kwok-workdir}"
CLUSTER_DIR="${KWOK_WORKDIR}/clusters/${CLUSTER_NAME}"
KUBECONFIG_PATH="${CLUSTER_DIR}/kubeconfig.yaml"

K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

log() { printf '[cluster.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------

go_env() {
  export CGO_ENABLED=0
  export GOFLAGS="-trimpath -mod=mod -buildvcs=false"
  export GOTOOLCHAIN=local
  # sum.golang.org is not reachable from every machine this runs on; the
  # module proxy still serves the modules. Only switch checksum-DB checks off
  # when it cannot be reached (never set GOPRIVATE: it bypasses the proxy too).
  if [[ -z "${GOSUMDB:-}" && -z "${GONOSUMDB:-}" ]]; then
    if ! timeout 5 bash -c 'exec 3<>/dev/tcp/sum.golang.org/443' 2>/dev/null; then
      export GOSUMDB=off
      log "sum.golang.org unreachable: building with GOSUMDB=off"
    fi
  fi
}

minor_of() { local v="${1#v}"; v="${v#*.}"; echo "${v%%.*}"; }
major_of() { local v="${1#v}"; echo "${v%%.*}"; }

have_all() {
  local dir="$1"; shift
  local b
  for b in "$@"; do [[ -x "${dir}/${b}" ]] || return 1; done
}

# Origin hash of a module version as the proxy reports it (empty if unknown).
module_commit() {
  go mod download -json "$1" 2>/dev/null | sed -n 's/.*"Hash": "\([0-9a-f]\{40\}\)".*/\1/p' | head -n1 || true
}

build_k8s() {
  have_all "${K8S_DIR}" "${K8S_BINARIES[@]}" && return 0
  local src="${SRC_DIR}/k8s-${KUBE_VERSION}" staging_minor="${KUBE_VERSION#v1.}"
  local staging_version="v0.${staging_minor}"
  mkdir -p "${src}"
  log "k8s ${KUBE_VERSION}: preparing wrapper module (staging modules pinned to ${staging_version})"
  local gomod_json kube_mod_dir
  gomod_json="$(cd "${src}" && go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}")"
  kube_mod_dir="$(sed -n 's/.*"Dir": "\(.*\)".*/\1/p' <<<"${gomod_json}" | head -n1)"
  [[ -d "${kube_mod_dir}" ]] || die "could not download k8s.io/kubernetes@${KUBE_VERSION}"
  # Staging modules: those k8s.io/kubernetes replaces with ./staging/... AND requires.
  local staging required
  staging="$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "${kube_mod_dir}/go.mod" | sort -u)"
  required="$(awk '/^require/ {inreq=1; next} inreq && /^\)/ {inreq=0} inreq {print $1}' "${kube_mod_dir}/go.mod" | sort -u)"
  {
    echo "module influencetrace.local/k8s-build"
    echo
    echo "go $(awk '$1 == "go" {print $2; exit}' "${kube_mod_dir}/go.mod")"
    echo
    echo "require k8s.io/kubernetes ${KUBE_VERSION}"
    echo
    echo "replace ("
    comm -12 <(echo "${staging}") <(echo "${required}") | while read -r m; do
      echo "	${m} => ${m} ${staging_version}"
    done
    echo ")"
  } >"${src}/go.mod"
  cat >"${src}/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
  local commit build_date ldflags pkg
  commit="$(cd "${src}" && module_commit "k8s.io/kubernetes@${KUBE_VERSION}")"
  build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION}"
    ldflags+=" -X ${pkg}.gitMajor=$(major_of "${KUBE_VERSION}")"
    ldflags+=" -X ${pkg}.gitMinor=$(minor_of "${KUBE_VERSION}")"
    ldflags+=" -X ${pkg}.gitTreeState=clean"
    ldflags+=" -X ${pkg}.buildDate=${build_date}"
    [[ -n "${commit}" ]] && ldflags+=" -X ${pkg}.gitCommit=${commit}"
  done
  local out="${K8S_DIR}.tmp.$$"
  rm -rf "${out}" && mkdir -p "${out}"
  log "k8s ${KUBE_VERSION}: resolving modules"
  (cd "${src}" && go mod tidy -e >/dev/null 2>&1 || true)
  (cd "${src}" && go mod download)
  log "k8s ${KUBE_VERSION}: compiling ${K8S_BINARIES[*]} (-p ${BUILD_PARALLELISM})"
  (cd "${src}" && go build -p "${BUILD_PARALLELISM}" -ldflags "${ldflags}" -o "${out}/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl)
  rm -rf "${K8S_DIR}" && mv "${out}" "${K8S_DIR}"
  log "k8s ${KUBE_VERSION}: done"
}

build_etcd() {
  have_all "${ETCD_DIR}" etcd && return 0
  local src="${SRC_DIR}/etcd-${ETCD_VERSION}"
  mkdir -p "${src}"
  log "etcd ${ETCD_VERSION}: preparing wrapper module"
  cat >"${src}/go.mod" <<EOF
module influencetrace.local/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}
EOF
  cat >"${src}/main.go" <<'EOF'
// Command etcd runs the etcd server from go.etcd.io/etcd/server/v3.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  local commit ldflags out="${ETCD_DIR}.tmp.$$"
  commit="$(cd "${src}" && module_commit "go.etcd.io/etcd/server/v3@${ETCD_VERSION}")"
  ldflags="-s -w"
  [[ -n "${commit}" ]] && ldflags+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=${commit:0:8}"
  rm -rf "${out}" && mkdir -p "${out}"
  (cd "${src}" && go mod tidy && go build -p "${BUILD_PARALLELISM}" -ldflags "${ldflags}" -o "${out}/etcd" .)
  rm -rf "${ETCD_DIR}" && mv "${out}" "${ETCD_DIR}"
  log "etcd ${ETCD_VERSION}: done"
}

build_kwok() {
  have_all "${KWOK_DIR}" kwok kwokctl && return 0
  local out="${KWOK_DIR}.tmp.$$" ldflags
  ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
  ldflags+=" -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${KUBE_VERSION#v}"
  rm -rf "${out}" && mkdir -p "${out}"
  log "kwok ${KWOK_VERSION}: compiling kwok, kwokctl"
  (cd "${SRC_DIR}" && GOFLAGS="-trimpath -buildvcs=false" GOBIN="${out}" go install -p "${BUILD_PARALLELISM}" -ldflags "${ldflags}" \
    "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}" "sigs.k8s.io/kwok/cmd/kwokctl@${KWOK_VERSION}")
  rm -rf "${KWOK_DIR}" && mv "${out}" "${KWOK_DIR}"
  log "kwok ${KWOK_VERSION}: done"
}

build_helm() {
  have_all "${HELM_DIR}" helm && return 0
  local out="${HELM_DIR}.tmp.$$" ldflags commit
  commit="$(cd "${SRC_DIR}" && module_commit "helm.sh/helm/v3@${HELM_VERSION}")"
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  [[ -n "${commit}" ]] && ldflags+=" -X helm.sh/helm/v3/internal/version.gitCommit=${commit}"
  # Kubernetes version helm assumes for `helm template` / lint when no cluster is asked.
  local pkg
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X ${pkg}.k8sVersionMajor=$(major_of "${KUBE_VERSION}")"
    ldflags+=" -X ${pkg}.k8sVersionMinor=$(minor_of "${KUBE_VERSION}")"
  done
  rm -rf "${out}" && mkdir -p "${out}"
  log "helm ${HELM_VERSION}: compiling"
  (cd "${SRC_DIR}" && GOFLAGS="-trimpath -buildvcs=false" GOBIN="${out}" go install -p "${BUILD_PARALLELISM}" -ldflags "${ldflags}" \
    "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}")
  rm -rf "${HELM_DIR}" && mv "${out}" "${HELM_DIR}"
  log "helm ${HELM_VERSION}: done"
}

# Kueue is optional (only `up --with-kueue` needs it), so it is built on its own,
# under its own lock, and never as part of `build`: CI without Kueue tests pays nothing.
build_kueue() {
  have_all "${KUEUE_DIR}" kueue && [[ -d "${KUEUE_DIR}/crds" ]] && return 0
  local out="${KUEUE_DIR}.tmp.$$" mod_dir
  rm -rf "${out}" && mkdir -p "${out}/crds"
  log "kueue ${KUEUE_VERSION}: compiling (-p ${BUILD_PARALLELISM})"
  (cd "${SRC_DIR}" && GOFLAGS="-trimpath -buildvcs=false" GOBIN="${out}" go install -p "${BUILD_PARALLELISM}" \
    -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=${KUEUE_VERSION}" \
    "sigs.k8s.io/kueue/cmd/kueue@${KUEUE_VERSION}")
  mod_dir="$(cd "${SRC_DIR}" && go mod download -json "sigs.k8s.io/kueue@${KUEUE_VERSION}" |
    sed -n 's/.*"Dir": "\(.*\)".*/\1/p' | head -n1)"
  [[ -d "${mod_dir}/config/components/crd/bases" ]] || die "kueue CRDs not found in ${mod_dir}"
  cp "${mod_dir}"/config/components/crd/bases/*.yaml "${out}/crds/"
  rm -rf "${KUEUE_DIR}" && mv "${out}" "${KUEUE_DIR}"
  log "kueue ${KUEUE_VERSION}: done"
}

cmd_build_kueue() {
  mkdir -p "${CACHE_ROOT}" "${SRC_DIR}" "${LOG_DIR}"
  have_all "${KUEUE_DIR}" kueue && [[ -d "${KUEUE_DIR}/crds" ]] && return 0
  exec 7>"${CACHE_ROOT}/build-kueue.lock"
  flock 7
  command -v go >/dev/null || die "go not found on PATH (Go >= 1.26 is needed to build Kueue)"
  go_env
  local start=${SECONDS}
  rm -rf "${KUEUE_DIR}".tmp.*
  build_kueue 2>&1 | tee "${LOG_DIR}/kueue.log" >&2
  have_all "${KUEUE_DIR}" kueue || die "kueue build failed (see ${LOG_DIR}/kueue.log)"
  exec 7>&-
  log "kueue build finished in $((SECONDS - start)) s"
}

link_bin_dir() {
  mkdir -p "${BIN_DIR}"
  local b
  for b in "${K8S_BINARIES[@]}"; do ln -sfn "${K8S_DIR}/${b}" "${BIN_DIR}/${b}"; done
  ln -sfn "${ETCD_DIR}/etcd" "${BIN_DIR}/etcd"
  ln -sfn "${KWOK_DIR}/kwok" "${BIN_DIR}/kwok"
  ln -sfn "${KWOK_DIR}/kwokctl" "${BIN_DIR}/kwokctl"
  ln -sfn "${HELM_DIR}/helm" "${BIN_DIR}/helm"
}

all_built() {
  have_all "${K8S_DIR}" "${K8S_BINARIES[@]}" && have_all "${ETCD_DIR}" etcd &&
    have_all "${KWOK_DIR}" kwok kwokctl && have_all "${HELM_DIR}" helm
}

cmd_build() {
  mkdir -p "${CACHE_ROOT}" "${SRC_DIR}" "${LOG_DIR}"
  if all_built; then link_bin_dir; return 0; fi
  # One build at a time per cache (tests and a human may both call `up`).
  exec 9>"${CACHE_ROOT}/build.lock"
  log "waiting for build lock ${CACHE_ROOT}/build.lock"
  flock 9
  if all_built; then link_bin_dir; exec 9>&-; return 0; fi
  rm -rf "${CACHE_ROOT}"/*.tmp.* # leftovers of an interrupted build (we hold the lock)
  command -v go >/dev/null || die "go not found on PATH (Go >= 1.26 is needed to build the control plane)"
  go_env
  local start=${SECONDS}
  log "building into ${CACHE_ROOT} (logs: ${LOG_DIR})"
  # The small tools build next to the big Kubernetes build; each go build is
  # limited to -p ${BUILD_PARALLELISM} so 2 cores are not swamped.
  local pids=() names=() t rc=0
  for t in etcd kwok helm; do
    ( "build_${t}" ) >"${LOG_DIR}/${t}.log" 2>&1 &
    pids+=("$!"); names+=("${t}")
  done
  build_k8s 2>&1 | tee "${LOG_DIR}/k8s.log" >&2 || rc=1
  local i
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      log "build of ${names[$i]} failed; tail of ${LOG_DIR}/${names[$i]}.log:"
      tail -n 30 "${LOG_DIR}/${names[$i]}.log" >&2
      rc=1
    fi
  done
  [[ ${rc} -eq 0 ]] || die "build failed"
  all_built || die "build finished but binaries are missing"
  link_bin_dir
  exec 9>&- # release the lock (and keep the fd out of the cluster's processes)
  log "build finished in $((SECONDS - start)) s"
}


# ---------------------------------------------------------------------------
# Cluster
# ---------------------------------------------------------------------------

STAGES_FILE="${HACK_DIR}/kwok-stages.yaml"
MANAGED_LABEL="influencetrace.dev/managed-by=hack-cluster-sh"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok-controller)

kctl() { "${BIN_DIR}/kubectl" --kubeconfig "${KUBECONFIG_PATH}" "$@"; }

# kwokctl adds a context for the cluster to $KUBECONFIG (default ~/.kube/config); keep that out of
# the user's own kubeconfig. Use `hack/cluster.sh kubeconfig` / `env` instead.
# The lock fds (8, 9) are closed for kwokctl so the daemons it starts cannot inherit a held lock.
kwokctl() { KUBECONFIG="${CACHE_ROOT}/kwokctl-contexts.yaml" "${BIN_DIR}/kwokctl" "$@" 8>&- 9>&-; }

# Serialise up/down of one cluster between concurrent callers (two test sessions, a human).
with_cluster_lock() {
  mkdir -p "${CACHE_ROOT}"
  exec 8>"${CACHE_ROOT}/cluster-${CLUSTER_NAME}.lock"
  flock 8
  "$@"
  exec 8>&-
}

use_bin_path() {
  # kwokctl checks the cluster with the kubectl it finds on PATH: make it ours.
  export PATH="${BIN_DIR}:${PATH}"
  export KWOK_KUBECTL_BINARY="${BIN_DIR}/kubectl"
  export KWOK_KUBE_VERSION="${KUBE_VERSION}"
}

kwokctl_create_args() {
  local args=(
    create cluster
    --name "${CLUSTER_NAME}"
    --runtime binary
    --config "${STAGES_FILE}"
    --enable-crds Logs
    --etcd-binary "${BIN_DIR}/etcd"
    --kube-apiserver-binary "${BIN_DIR}/kube-apiserver"
    --kube-controller-manager-binary "${BIN_DIR}/kube-controller-manager"
    --kube-scheduler-binary "${BIN_DIR}/kube-scheduler"
    --kwok-controller-binary "${BIN_DIR}/kwok"
    --secure-port=true
    --kube-authorization=true
    --kube-admission=true
    --quiet-pull
    --wait 120s
  )
  printf '%s\n' "${args[@]}"
}

# A fingerprint of everything that shapes a running cluster; a cluster started
# from another fingerprint is recreated by `up`.
cluster_fingerprint() {
  {
    cat "${HACK_DIR}/versions.env" "${STAGES_FILE}"
    echo "${CLUSTER_NAME}"
    kwokctl_create_args
  } | sha256sum | cut -d' ' -f1
}
fingerprint_file() { echo "${CLUSTER_DIR}/influencetrace.fingerprint"; }

api_ready() {
  [[ -f "${KUBECONFIG_PATH}" && -x "${BIN_DIR}/kubectl" ]] || return 1
  kctl get --raw /readyz --request-timeout=5s >/dev/null 2>&1
}

# Nodes: pools of fake GPU nodes (tainted) plus untainted CPU nodes for
# ordinary pods (e.g. a Deployment of the operator installed with helm).
#          pool product                   GPU-MiB(GFD) GPUs cpu memory
GPU_POOLS=("h100 NVIDIA-H100-80GB-HBM3    81559        8    224 2Ti"
           "h200 NVIDIA-H200              143771       8    224 2Ti")
CPU_NODES="${CPU_NODES:-1}"

node_manifest() {
  local name="$1" pool="$2" product="$3" mib="$4" gpus="$5" cpu="$6" mem="$7"
  local bytes=$((mib * 1024 * 1024))
  cat <<NODE
---
apiVersion: v1
kind: Node
metadata:
  name: ${name}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    influencetrace.dev/managed-by: hack-cluster-sh
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: ${name}
    influencetrace.dev/pool: ${pool}
NODE
  if [[ "${gpus}" -gt 0 ]]; then
    cat <<NODE
    nvidia.com/gpu.present: "true"
    nvidia.com/gpu.product: ${product}
    nvidia.com/gpu.count: "${gpus}"
    nvidia.com/gpu.memory: "${mib}"
    influencetrace.dev/gpu-memory-bytes: "${bytes}"
spec:
  taints:
  - key: nvidia.com/gpu
    value: present
    effect: NoSchedule
status:
  allocatable:
    cpu: "${cpu}"
    memory: ${mem}
    pods: "256"
    ephemeral-storage: 30Ti
    nvidia.com/gpu: "${gpus}"
  capacity:
    cpu: "${cpu}"
    memory: ${mem}
    pods: "256"
    ephemeral-storage: 30Ti
    nvidia.com/gpu: "${gpus}"
NODE
  else
    cat <<NODE
spec: {}
status:
  allocatable:
    cpu: "${cpu}"
    memory: ${mem}
    pods: "256"
    ephemeral-storage: 1Ti
  capacity:
    cpu: "${cpu}"
    memory: ${mem}
    pods: "256"
    ephemeral-storage: 1Ti
NODE
  fi
}

nodes_manifest() {
  local spec pool product mib gpus cpu mem i
  for spec in "${GPU_POOLS[@]}"; do
    read -r pool product mib gpus cpu mem <<<"${spec}"
    for ((i = 0; i < GPU_NODES_PER_POOL; i++)); do
      node_manifest "gpu-${pool}-${i}" "${pool}" "${product}" "${mib}" "${gpus}" "${cpu}" "${mem}"
    done
  done
  for ((i = 0; i < CPU_NODES; i++)); do
    node_manifest "cpu-${i}" cpu "" 0 0 32 128Gi
  done
}

ensure_nodes() {
  local manifest wanted have n
  manifest="$(nodes_manifest)"
  # Creates missing nodes (their status is taken on create; kwok keeps it) and
  # updates labels/taints of existing ones.
  kctl apply --server-side --force-conflicts --field-manager=hack-cluster-sh -f - <<<"${manifest}" >/dev/null
  wanted="$(awk '/^  name: /{print $2}' <<<"${manifest}" | sort)"
  have="$(kctl get nodes -l "${MANAGED_LABEL}" -o name | sed 's|^node/||' | sort)"
  # Remove nodes left by an earlier, larger GPU_NODES_PER_POOL / CPU_NODES.
  local surplus=()
  mapfile -t surplus < <(comm -13 <(echo "${wanted}") <(echo "${have}") | sed '/^$/d')
  if [[ ${#surplus[@]} -gt 0 ]]; then
    log "deleting ${#surplus[@]} surplus nodes"
    kctl delete node "${surplus[@]}" --wait=false >/dev/null
  fi
  local names=()
  mapfile -t names < <(sed 's|^|node/|' <<<"${wanted}")
  log "waiting for ${#names[@]} nodes to be Ready"
  kctl wait --for=condition=Ready "${names[@]}" --timeout=120s >/dev/null
}

wait_cluster_ready() {
  local deadline=$((SECONDS + 120))
  until api_ready; do
    [[ ${SECONDS} -lt ${deadline} ]] || die "kube-apiserver not ready after 120 s (see: $0 logs DIR)"
    sleep 1
  done
  # Pods can only be created once the ServiceAccount controller made "default".
  until kctl get serviceaccount default -n default >/dev/null 2>&1; do
    [[ ${SECONDS} -lt ${deadline} ]] || die "default ServiceAccount never appeared (kube-controller-manager down?)"
    sleep 1
  done
}

cmd_up() {
  local start=${SECONDS} with_kueue=0
  case "${1:-}" in
    --with-kueue) with_kueue=1 ;;
    "") ;;
    *) die "up: unknown option $1 (known: --with-kueue)" ;;
  esac
  cmd_build
  use_bin_path
  local want have=""
  want="$(cluster_fingerprint)"
  [[ -f "$(fingerprint_file)" ]] && have="$(cat "$(fingerprint_file)")"
  if [[ -d "${CLUSTER_DIR}" && "${have}" != "${want}" ]]; then
    log "cluster ${CLUSTER_NAME} was created from other settings: recreating it"
    cmd_down
  fi
  if api_ready; then
    log "cluster ${CLUSTER_NAME} is running: reusing it"
  elif [[ -d "${CLUSTER_DIR}" ]]; then
    log "cluster ${CLUSTER_NAME} exists but does not answer: starting it"
    if ! kwokctl start cluster --name "${CLUSTER_NAME}" --wait 120s >&2 || ! api_ready; then
      log "start failed: recreating the cluster"
      cmd_down
    fi
  fi
  if ! api_ready; then
    log "creating cluster ${CLUSTER_NAME} (kwokctl binary runtime, local binaries only)"
    local args=()
    mapfile -t args < <(kwokctl_create_args)
    kwokctl "${args[@]}" >&2
    echo "${want}" >"$(fingerprint_file)"
  fi
  wait_cluster_ready
  ensure_nodes
  [[ ${with_kueue} -eq 0 ]] || ensure_kueue
  log "cluster ${CLUSTER_NAME} ready in $((SECONDS - start)) s; KUBECONFIG=${KUBECONFIG_PATH}"
}

# ---------------------------------------------------------------------------
# Kueue (optional): the real controller as a local process next to the control plane
# ---------------------------------------------------------------------------

KUEUE_RUN_DIR="${CLUSTER_DIR}/kueue"
KUEUE_CLUSTER_QUEUE="${KUEUE_CLUSTER_QUEUE:-influencetrace}"
# Kueue hard-codes its metrics certificate path when internal cert management is off.
KUEUE_METRICS_CERT_DIR="/etc/kueue/metrics/certs"
KUEUE_KINDS=(workloads localqueues clusterqueues resourceflavors workloadpriorityclasses cohorts
  admissionchecks topologies)

kueue_pid() { cat "${KUEUE_RUN_DIR}/kueue.pid" 2>/dev/null || true; }

kueue_alive() {
  local pid
  pid="$(kueue_pid)"
  [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null
}

kueue_ready() {
  kueue_alive || return 1
  local port
  port="$(cat "${KUEUE_RUN_DIR}/health.port" 2>/dev/null)" || return 1
  timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/${port} && printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3 && grep -q ' 200 ' <&3" 2>/dev/null
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

established() { # CRD...: wait until each is Established. kubectl wait --for=condition fails at once
  # (".status.conditions accessor error") on a CRD whose conditions are not written yet, so retry it.
  local deadline=$((SECONDS + 60))
  until kctl wait --for=condition=Established "$@" --timeout=10s >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "CRDs not Established after 60 s: $*"
    sleep 1
  done
}

self_signed() { # DIR: tls.crt + tls.key for localhost (Kueue's webhook and metrics servers want one)
  mkdir -p "$1"
  [[ -s "$1/tls.crt" && -s "$1/tls.key" ]] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$1/tls.key" -out "$1/tls.crt" >/dev/null 2>&1 || die "openssl could not make a certificate in $1"
}

kueue_config() {
  cat <<CONFIG
apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
namespace: kueue-system
manageJobsWithoutQueueName: false
leaderElection:
  leaderElect: false
internalCertManagement:
  enable: false
health:
  healthProbeBindAddress: 127.0.0.1:$1
metrics:
  bindAddress: 127.0.0.1:$2
webhook:
  port: $3
  host: 127.0.0.1
  certDir: ${KUEUE_RUN_DIR}/webhook-certs
integrations:
  frameworks: [batch/job]
CONFIG
}

start_kueue() {
  if kueue_ready; then log "kueue is running (pid $(kueue_pid)): reusing it"; return 0; fi
  if kueue_alive; then kill "$(kueue_pid)" 2>/dev/null || true; fi
  mkdir -p "${KUEUE_RUN_DIR}"
  [[ -w /etc || -d "${KUEUE_METRICS_CERT_DIR}" ]] ||
    die "Kueue needs ${KUEUE_METRICS_CERT_DIR}/tls.{crt,key} (a path it hard-codes): run as root or create it"
  self_signed "${KUEUE_METRICS_CERT_DIR}"
  self_signed "${KUEUE_RUN_DIR}/webhook-certs"
  local health metrics webhook crds=()
  health="$(free_port)" metrics="$(free_port)" webhook="$(free_port)"
  kueue_config "${health}" "${metrics}" "${webhook}" >"${KUEUE_RUN_DIR}/config.yaml"
  echo "${health}" >"${KUEUE_RUN_DIR}/health.port"
  log "kueue ${KUEUE_VERSION}: installing CRDs"
  kctl apply --server-side --force-conflicts -f "${KUEUE_DIR}/crds/" >/dev/null
  mapfile -t crds < <(cd "${KUEUE_DIR}/crds" && ls | sed 's|^kueue.x-k8s.io_\(.*\)\.yaml$|crd/\1.kueue.x-k8s.io|')
  established "${crds[@]}"
  kctl create namespace kueue-system --dry-run=client -o yaml | kctl apply -f - >/dev/null
  log "kueue ${KUEUE_VERSION}: starting (log: ${KUEUE_RUN_DIR}/kueue.log)"
  KUBECONFIG="${KUBECONFIG_PATH}" setsid nohup "${KUEUE_DIR}/kueue" \
    --config="${KUEUE_RUN_DIR}/config.yaml" --feature-gates=VisibilityOnDemand=false \
    >"${KUEUE_RUN_DIR}/kueue.log" 2>&1 </dev/null 7>&- 8>&- 9>&- &
  echo $! >"${KUEUE_RUN_DIR}/kueue.pid"
  local deadline=$((SECONDS + 120))
  until kueue_ready; do
    kueue_alive || { tail -n 30 "${KUEUE_RUN_DIR}/kueue.log" >&2; die "kueue exited"; }
    [[ ${SECONDS} -lt ${deadline} ]] || die "kueue not ready after 120 s (see ${KUEUE_RUN_DIR}/kueue.log)"
    sleep 1
  done
}

# One flavor per GPU pool (nodeLabels = the pool's node label, so a Job's node selector picks its
# flavor) and a ClusterQueue holding every fake node's capacity, preempting lower priorities.
kueue_objects() {
  local spec pool product mib gpus cpu mem n=${GPU_NODES_PER_POOL} flavors=""
  for spec in "${GPU_POOLS[@]}"; do
    read -r pool product mib gpus cpu mem <<<"${spec}"
    cat <<FLAVOR
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata:
  name: ${pool}
  labels: {influencetrace.dev/managed-by: hack-cluster-sh}
spec:
  nodeLabels:
    influencetrace.dev/pool: ${pool}
FLAVOR
    flavors+="
    - name: ${pool}
      resources:
      - {name: cpu, nominalQuota: \"$((cpu * n))\"}
      - {name: memory, nominalQuota: \"$((${mem%Ti} * n))Ti\"}
      - {name: nvidia.com/gpu, nominalQuota: \"$((gpus * n))\"}
      - {name: ephemeral-storage, nominalQuota: \"$((30 * n))Ti\"}"
  done
  cat <<QUEUE
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: ClusterQueue
metadata:
  name: ${KUEUE_CLUSTER_QUEUE}
  labels: {influencetrace.dev/managed-by: hack-cluster-sh}
spec:
  namespaceSelector: {}
  preemption:
    withinClusterQueue: LowerPriority
  resourceGroups:
  # ephemeral-storage too: worker pods request their /tmp scratch (chart scratch.tmpSizeLimit), and Kueue
  # admits no pod that requests a resource its ClusterQueue does not cover.
  - coveredResources: [cpu, memory, nvidia.com/gpu, ephemeral-storage]
    flavors:${flavors}
QUEUE
}

ensure_kueue() {
  cmd_build_kueue
  start_kueue
  kctl apply --server-side --force-conflicts --field-manager=hack-cluster-sh -f - <<<"$(kueue_objects)" >/dev/null
  log "kueue ready: ClusterQueue ${KUEUE_CLUSTER_QUEUE}, flavors $(kctl get resourceflavors -o name | sed 's|.*/||' | paste -sd,)"
}

# Stop Kueue, then remove the finalizers it leaves on its objects, so namespaces and the objects
# themselves can still be deleted without it.
stop_kueue() {
  if kueue_alive; then
    local pid
    pid="$(kueue_pid)"
    log "stopping kueue (pid ${pid})"
    kill "${pid}" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.5; done
    kill -9 "${pid}" 2>/dev/null || true
  fi
  rm -f "${KUEUE_RUN_DIR}/kueue.pid"
  api_ready || return 0
  kctl get crd workloads.kueue.x-k8s.io >/dev/null 2>&1 || return 0
  local kind ns name
  for kind in "${KUEUE_KINDS[@]}"; do
    while read -r ns name; do
      [[ -n "${name}" ]] || continue
      if [[ "${ns}" == "<none>" ]]; then
        kctl patch "${kind}.kueue.x-k8s.io/${name}" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
      else
        kctl patch -n "${ns}" "${kind}.kueue.x-k8s.io/${name}" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
      fi
    done < <(kctl get "${kind}.kueue.x-k8s.io" -A --no-headers \
      -o custom-columns='NS:.metadata.namespace,NAME:.metadata.name,F:.metadata.finalizers' 2>/dev/null |
      awk '$3 != "<none>" {print $1, $2}')
  done
}

cmd_kueue_down() {
  use_bin_path
  stop_kueue
}

cmd_down() {
  if [[ -x "${BIN_DIR}/kwokctl" && -d "${CLUSTER_DIR}" ]]; then
    use_bin_path
    stop_kueue
    log "deleting cluster ${CLUSTER_NAME}"
    kwokctl delete cluster --name "${CLUSTER_NAME}" >&2 || true
  fi
  rm -rf "${CLUSTER_DIR}"
}

cmd_status() {
  if api_ready; then
    echo "cluster ${CLUSTER_NAME}: running (KUBECONFIG=${KUBECONFIG_PATH})"
    kctl get nodes -L influencetrace.dev/pool,nvidia.com/gpu.product
  else
    echo "cluster ${CLUSTER_NAME}: not running"
    return 1
  fi
}

cmd_logs() {
  local dir="${1:?usage: $0 logs DIR}"
  mkdir -p "${dir}"
  [[ -d "${CLUSTER_DIR}" && -x "${BIN_DIR}/kwokctl" ]] || { log "no cluster ${CLUSTER_NAME}: no logs"; return 0; }
  use_bin_path
  local c
  for c in "${COMPONENTS[@]}"; do
    kwokctl logs "${c}" --name "${CLUSTER_NAME}" >"${dir}/${c}.log" 2>&1 || true
  done
  if api_ready; then
    kctl get nodes -o wide >"${dir}/nodes.txt" 2>&1 || true
    kctl get pods,jobs -A -o wide >"${dir}/pods.txt" 2>&1 || true
    kctl get events -A --sort-by=.lastTimestamp >"${dir}/events.txt" 2>&1 || true
  fi
  cp "${CLUSTER_DIR}/kwok.yaml" "${dir}/kwok.yaml" 2>/dev/null || true
  cp "${KUEUE_RUN_DIR}/kueue.log" "${dir}/kueue.log" 2>/dev/null || true
  log "logs written to ${dir}"
}

# What `up` would run, from kwokctl --dry-run, against a throwaway work dir: every "Download" line
# must name a local file (nothing is fetched at run time).
cmd_plan() {
  cmd_build
  use_bin_path
  local tmp args=()
  tmp="$(mktemp -d)"
  mapfile -t args < <(kwokctl_create_args)
  KWOK_WORKDIR="${tmp}" kwokctl "${args[@]}" --dry-run 2>/dev/null
  rm -rf "${tmp}"
}

cmd_env() {
  printf 'export PATH=%q:"$PATH"\n' "${BIN_DIR}"
  printf 'export KUBECONFIG=%q\n' "${KUBECONFIG_PATH}"
}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2; }

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "${cmd}" in
    build) cmd_build "$@" ;;
    build-kueue) cmd_build_kueue "$@" ;;
    up) with_cluster_lock cmd_up "$@" ;;
    down) with_cluster_lock cmd_down "$@" ;;
    kueue-down) with_cluster_lock cmd_kueue_down "$@" ;;
    status) cmd_status "$@" ;;
    logs) cmd_logs "$@" ;;
    kubeconfig) echo "${KUBECONFIG_PATH}" ;;
    bin) echo "${BIN_DIR}" ;;
    env) cmd_env ;;
    plan) cmd_plan ;;
    nodes) nodes_manifest ;;
    -h | --help | help) usage ;;
    *) usage; exit 2 ;;
  esac
}

main "$@"; exit $?  # exit on the same line: edits to this file cannot affect a running instance
