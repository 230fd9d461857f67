#!/usr/bin/env bash
# Build, inspect and scan the Dockerfile's two images on a machine without a container engine.
#
# buildah (chroot isolation; overlay storage, or vfs where overlay cannot mount) builds the
# Dockerfile's targets as root, FROM a Debian bookworm base that mmdebstrap makes from Debian's
# packages (no image registry is needed: the base is cached by suite and package list). pip inside the build installs constraints.txt from the package
# index this machine's pip is configured for: that configuration (and its certificate) is handed to the
# build as secrets, mounted read-only for the install step and never stored in an image.
#
# Usage: hack/images.sh <command> [TARGET...]        TARGET: operator | worker (default: both)
#   tools          install buildah and mmdebstrap with apt-get when missing
#   base           make the base image (mmdebstrap, cached) and import it into the image storage
#   build [T...]   build the targets; write OCI archives, digests, an SBOM and a record per image
#   sbom [T...]    CycloneDX SBOM (JSON) of a built image's Python packages (cyclonedx-bom)
#   audit [T...]   pip-audit of constraints.txt (and of each built image's SBOM) against the index's
#                  advisory data
#   lint-workflow  actionlint (built from its Go module on first use, cached) on
#                  .github/workflows/images.yml, which builds and publishes the images with Docker
#   image T        print the local name of target T's image
#   out            print the directory holding the archives, digests, SBOMs and records
#   buildah ARGS   buildah with this script's storage, e.g. `hack/images.sh buildah images`
#   clean          remove the image storage (keeps the base tarballs, the pip cache and the tools)
#
# Environment:
#   INFLUENCETRACE_CACHE  cache root (default: $HOME/.cache/influencetrace); this script uses images/
#   IMAGE_PREFIX          prefix of the image names (default: localhost/, buildah's own)
#   IMAGES_STORAGE_DRIVER buildah's storage driver: auto (default: overlay where it mounts, else vfs),
#                         overlay or vfs
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${HACK_DIR}/.." && pwd)"
CACHE_ROOT="${INFLUENCETRACE_CACHE:-${HOME}/.cache/influencetrace}"
IMAGES_DIR="${CACHE_ROOT}/images"
OUT_DIR="${IMAGES_DIR}/out"
IMAGE_PREFIX="${IMAGE_PREFIX:-localhost/}"

# Pinned: the Debian suite and packages of the base, the builder's Debian package series, the tools.
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates
BUILDAH_APT_VERSION='1.28.*'
MMDEBSTRAP_APT_VERSION='1.3.*'
ACTIONLINT_VERSION=v1.7.12
CYCLONEDX_BOM_VERSION=7.5.0
PIP_AUDIT_VERSION=2.10.1

VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "${REPO_ROOT}/pyproject.toml")"
# overlay where the kernel mounts it here (every layer of vfs is a full copy: about 3x slower for the
# operator, and the worker's 6 GB copied once per instruction); vfs elsewhere.
DRIVER="${IMAGES_STORAGE_DRIVER:-auto}"
if [[ "${DRIVER}" == auto ]]; then
  DRIVER=vfs
  if command -v buildah >/dev/null && [[ "$(id -u)" == 0 ]] && probe="$(mktemp -d)" &&
    buildah --root "${probe}/root" --runroot "${probe}/run" --storage-driver overlay info >/dev/null 2>&1 &&
    ctr="$(buildah --root "${probe}/root" --runroot "${probe}/run" --storage-driver overlay from scratch 2>/dev/null)" &&
    buildah --root "${probe}/root" --runroot "${probe}/run" --storage-driver overlay mount "${ctr}" >/dev/null 2>&1; then
    DRIVER=overlay
  fi
  if [[ -n "${probe:-}" ]]; then
    buildah --root "${probe}/root" --runroot "${probe}/run" --storage-driver overlay rm --all >/dev/null 2>&1 || true
    rm -rf "${probe}"
  fi
fi
STORAGE=(--root "${IMAGES_DIR}/storage-${DRIVER}" --runroot "${IMAGES_DIR}/runroot-${DRIVER}" --storage-driver "${DRIVER}")
# buildah keeps RUN --mount=type=cache directories (pip's cache) and its scratch files under TMPDIR.
export TMPDIR="${IMAGES_DIR}/tmp"

log() { printf '[images.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
bah() { buildah "${STORAGE[@]}" "$@"; }
stamp() { local line; while IFS= read -r line; do printf '%(%H:%M:%S)T %s\n' -1 "${line}"; done; }
image_name() { echo "${IMAGE_PREFIX}influence-trace-$1:${VERSION}"; }

targets() {
  if (($# == 0)); then set -- operator worker; fi
  local t
  for t in "$@"; do
    [[ "${t}" == operator || "${t}" == worker ]] || die "unknown target '${t}' (operator or worker)"
    echo "${t}"
  done
}

lock() {
  mkdir -p "${IMAGES_DIR}" "${TMPDIR}"
  exec 9>"${IMAGES_DIR}/lock"
  flock 9 || die "could not lock ${IMAGES_DIR}/lock"
}

# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------

apt_install() {
  [[ "$(id -u)" == 0 ]] || die "installing $* needs root (apt-get)"
  command -v apt-get >/dev/null || die "no apt-get: install $* by hand"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq "$@" >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
  fi
}

cmd_tools() {
  local want=()
  command -v buildah >/dev/null || want+=("buildah=${BUILDAH_APT_VERSION}")
  command -v mmdebstrap >/dev/null || want+=("mmdebstrap=${MMDEBSTRAP_APT_VERSION}")
  if ((${#want[@]})); then
    log "installing ${want[*]}"
    apt_install "${want[@]}"
  fi
  [[ "$(id -u)" == 0 ]] || die "buildah with --isolation chroot and vfs storage runs as root here"
}

# A venv with cyclonedx-bom and pip-audit, outside the work tree; prints its directory.
tool_venv() {
  local dir="${IMAGES_DIR}/tools/cyclonedx-bom-${CYCLONEDX_BOM_VERSION}_pip-audit-${PIP_AUDIT_VERSION}"
  if [[ ! -x "${dir}/bin/cyclonedx-py" || ! -x "${dir}/bin/pip-audit" ]]; then
    log "installing cyclonedx-bom ${CYCLONEDX_BOM_VERSION} and pip-audit ${PIP_AUDIT_VERSION} into ${dir}"
    rm -rf "${dir}"
    python3 -m venv "${dir}"
    "${dir}/bin/python" -m pip install --quiet "cyclonedx-bom==${CYCLONEDX_BOM_VERSION}" \
      "pip-audit==${PIP_AUDIT_VERSION}" || die "could not install the SBOM and audit tools"
    "${dir}/bin/python" -m pip freeze >"${dir}/frozen.txt"
  fi
  echo "${dir}"
}

# ---------------------------------------------------------------------------
# The base image: Debian from Debian's packages, with a venv on PATH (as the official image has pip)
# ---------------------------------------------------------------------------

# The host's apt sources for the suite, when it has them (mmdebstrap's own default otherwise).
apt_sources() {
  local f
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [[ -f "${f}" ]] && grep -qw "${SUITE}" "${f}"; then echo "${f}"; return 0; fi
  done
}

base_key() {
  local sources
  sources="$(apt_sources)"
  { echo "${SUITE} minbase ${BASE_PACKAGES} venv=/opt/venv nodoc"; [[ -z "${sources}" ]] || grep -v '^#' "${sources}"; } |
    sha256sum | cut -c1-12
}

base_image() { echo "localhost/influence-trace-base:${SUITE}-$(base_key)"; }

make_base() {
  local key tarball image sources
  key="$(base_key)"
  image="$(base_image)"
  tarball="${IMAGES_DIR}/base/${SUITE}-${key}.tar"
  if bah inspect --type image "${image}" >/dev/null 2>&1; then return 0; fi
  if [[ ! -f "${tarball}" ]]; then
    mkdir -p "${IMAGES_DIR}/base"
    sources="$(apt_sources)"
    log "mmdebstrap: ${SUITE} minbase with ${BASE_PACKAGES} (${sources:-the default mirror of mmdebstrap})"
    local start=${SECONDS}
    # The venv gives the image `python` and `pip` on PATH, as the official Python image has.
    # Documentation is left out (copyright files stay); no package list or apt cache is kept.
    rm -rf "${tarball%.tar}".tmp*
    mmdebstrap --quiet --variant=minbase --format=tar --include="${BASE_PACKAGES}" \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --customize-hook='chroot "$1" python3 -m venv /opt/venv' \
      "${SUITE}" "${tarball%.tar}.tmp.tar" ${sources:+"${sources}"} || die "mmdebstrap failed"
    mv "${tarball%.tar}.tmp.tar" "${tarball}"
    log "base tarball ${tarball} made in $((SECONDS - start)) s"
  fi
  log "importing ${tarball} as ${image}"
  local ctr
  ctr="$(bah from scratch)"
  bah add "${ctr}" "${tarball}" / >/dev/null
  bah config --env PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env VIRTUAL_ENV=/opt/venv --env LANG=C.UTF-8 --cmd python3 \
    --label "dev.influencetrace.base=${SUITE} minbase ${BASE_PACKAGES}" "${ctr}"
  bah commit --quiet --rm "${ctr}" "${image}" >/dev/null
}

cmd_base() { cmd_tools; lock; make_base; base_image; }

# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------

# The host pip's configuration (files and PIP_* variables, as `pip config list` shows it) as one
# pip.conf for the build; its certificate becomes the second secret. Sets SECRETS (buildah's flags).
pip_secrets() {
  local dir="${IMAGES_DIR}/pip" pip_python=python3
  [[ -x "${REPO_ROOT}/.venv/bin/python" ]] && pip_python="${REPO_ROOT}/.venv/bin/python"
  mkdir -p "${dir}" && chmod 700 "${dir}"
  "${pip_python}" -m pip config list 2>/dev/null | "${pip_python}" -c '
import ast, os, sys
keep = {"index-url", "extra-index-url", "trusted-host", "cert", "timeout", "default-timeout", "retries", "proxy"}
conf = {}
for line in sys.stdin:
    name, _, value = line.rstrip("\n").partition("=")
    scope, _, key = name.rpartition(".")
    if key in keep and scope in {":env:", "global", "install", "download"}:
        conf.setdefault(key, ast.literal_eval(value))  # pip prints the value as a Python literal
cert = conf.pop("cert", None) or os.environ.get("REQUESTS_CA_BUNDLE")
with open(sys.argv[1], "w") as out:
    out.write("[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(conf.items())))
    if cert:
        out.write("cert = /etc/pip-ca.pem\n")
print(cert or "")
' "${dir}/pip.conf" >"${dir}/cert-path"
  chmod 600 "${dir}/pip.conf"
  local cert
  cert="$(cat "${dir}/cert-path")"
  SECRETS=(--secret "id=pip.conf,src=${dir}/pip.conf")
  if [[ -n "${cert}" ]]; then
    [[ -r "${cert}" ]] || die "pip's certificate ${cert} is not readable"
    SECRETS+=(--secret "id=pip-ca,src=${cert}")
  fi
}

build_one() {
  local target="$1" image archive start
  image="$(image_name "${target}")"
  archive="${OUT_DIR}/influence-trace-${target}-${VERSION}.oci.tar"
  pip_secrets
  log "building ${image} (target ${target}, FROM $(base_image))"
  start=${SECONDS}
  mkdir -p "${OUT_DIR}"
  bah bud --isolation chroot --layers --pull=never --target "${target}" \
    --build-arg "PYTHON_IMAGE=$(base_image)" "${SECRETS[@]}" \
    --label "org.opencontainers.image.version=${VERSION}" \
    --label "org.opencontainers.image.revision=$(git -C "${REPO_ROOT}" rev-parse HEAD 2>/dev/null || echo unknown)" \
    -f "${REPO_ROOT}/Dockerfile" -t "${image}" "${REPO_ROOT}" 2>&1 | stamp >"${OUT_DIR}/${target}.build.log" ||
    { tail -n 40 "${OUT_DIR}/${target}.build.log" >&2; die "buildah bud --target ${target} failed (log: ${OUT_DIR}/${target}.build.log)"; }
  local build_s=$((SECONDS - start)) id
  id="$(bah inspect --type image --format '{{.FromImageID}}' "${image}")"
  start=${SECONDS}
  if [[ ! -f "${archive}" || "$(cat "${archive%.oci.tar}.id" 2>/dev/null)" != "${id}" ]]; then
    log "writing ${archive}"
    rm -f "${archive}"
    bah push --quiet --digestfile "${archive%.oci.tar}.digest" "${image}" \
      "oci-archive:${archive}:${image#"${IMAGE_PREFIX}"}" || die "buildah push ${image} failed"
    echo "${id}" >"${archive%.oci.tar}.id"
  fi
  local push_s=$((SECONDS - start))
  start=${SECONDS}
  make_sbom "${target}"
  local sbom_s=$((SECONDS - start))
  record "${target}" "${build_s}" "${push_s}" "${sbom_s}"
}

# OUT_DIR/influence-trace-T-VERSION.json: what was built, its digest and sizes, and how long it took.
record() {
  local target="$1" image archive size
  image="$(image_name "${target}")"
  archive="${OUT_DIR}/influence-trace-${target}-${VERSION}.oci.tar"
  size="$(bah images --format '{{.Size}}' "${image}" | head -n1)"
  python3 - "${target}" "${image}" "${archive}" "${size}" "$2" "$3" "$4" "$(base_image)" <<'PY'
import json, sys, tarfile
from pathlib import Path
target, image, archive, size, build_s, push_s, sbom_s, base = sys.argv[1:]
archive = Path(archive)
with tarfile.open(archive) as tar:  # the compressed layers: what a registry stores and nodes pull
    index = json.load(tar.extractfile("index.json"))
    manifest = json.load(tar.extractfile("blobs/" + index["manifests"][0]["digest"].replace(":", "/")))
pull = sum(layer["size"] for layer in manifest["layers"]) + manifest["config"]["size"]
out = {
    "target": target, "image": image, "base": base,
    "id": archive.with_suffix("").with_suffix(".id").read_text().strip(),
    "digest": archive.with_suffix("").with_suffix(".digest").read_text().strip(),
    "archive": str(archive), "archive_bytes": archive.stat().st_size, "compressed_bytes": pull,
    "layers": len(manifest["layers"]), "unpacked_size": size,
    "seconds": {"build": int(build_s), "archive": int(push_s), "sbom": int(sbom_s)},
}
Path(str(archive).removesuffix(".oci.tar") + ".json").write_text(json.dumps(out, indent=2) + "\n")
print(json.dumps(out))
PY
}

cmd_build() {
  local list
  list="$(targets "$@")"
  cmd_tools
  lock
  make_base
  local t start
  for t in ${list}; do
    start=${SECONDS}
    build_one "${t}"
    log "${t}: done in $((SECONDS - start)) s"
  done
  # Images nothing is built on any more (earlier builds' results and their cache): each superseded
  # dependency layer of the worker is 6 GB. The layer cache of the images just built stays.
  bah rmi --prune >/dev/null 2>&1 || log "buildah rmi --prune failed (storage not pruned)"
}

# ---------------------------------------------------------------------------
# SBOM and audit
# ---------------------------------------------------------------------------

# cyclonedx-py runs inside a throwaway container of the image, from the tool venv's (pure Python)
# site-packages mounted read-only and put on sys.path by hand: the environment it describes is the
# image's own interpreter, whose sys.path does not include the tool.
make_sbom() {
  local target="$1" image tools site ctr sbom
  image="$(image_name "${target}")"
  sbom="${OUT_DIR}/influence-trace-${target}-${VERSION}.cdx.json"
  [[ -f "${sbom}" && "$(cat "${sbom}.id" 2>/dev/null)" == "$(bah inspect --type image --format '{{.FromImageID}}' "${image}")" ]] && return 0
  tools="$(tool_venv)"
  site="$(echo "${tools}"/lib/python3*/site-packages)"
  ctr="$(bah from --pull=never "${image}")"
  log "SBOM of ${image}"
  bah run --isolation chroot --user 0:0 -v "${site}:/opt/sbom-tool:ro" "${ctr}" -- sh -c \
    'exec python -c "import sys; sys.path.insert(0, \"/opt/sbom-tool\"); sys.argv[0] = \"cyclonedx-py\"; from cyclonedx_py._internal.cli import run; run()" environment --output-format JSON --output-reproducible "$(command -v python)"' \
    >"${sbom}.tmp" || { bah rm "${ctr}" >/dev/null; die "cyclonedx-py failed in ${image}"; }
  bah rm "${ctr}" >/dev/null
  mv "${sbom}.tmp" "${sbom}"
  bah inspect --type image --format '{{.FromImageID}}' "${image}" >"${sbom}.id"
}

cmd_sbom() {
  local list t
  list="$(targets "$@")"
  lock
  for t in ${list}; do make_sbom "${t}"; echo "${OUT_DIR}/influence-trace-${t}-${VERSION}.cdx.json"; done
}

# pip-audit of exact pins, without installing them (--no-deps --disable-pip): constraints.txt, and the
# name==version list of each built image's SBOM (which adds pip, setuptools and the project itself).
cmd_audit() {
  local list tools rc=0 t sbom reqs
  list="$(targets "$@")"
  tools="$(tool_venv)"
  mkdir -p "${OUT_DIR}"
  log "pip-audit constraints.txt"
  "${tools}/bin/pip-audit" --progress-spinner off --no-deps --disable-pip --vulnerability-service pypi \
    -r "${REPO_ROOT}/constraints.txt" --format json --output "${OUT_DIR}/audit-constraints.json" 2>/dev/null || rc=$?
  for t in ${list}; do
    sbom="${OUT_DIR}/influence-trace-${t}-${VERSION}.cdx.json"
    [[ -f "${sbom}" ]] || { log "no SBOM for ${t} (build it first): skipped"; continue; }
    reqs="${OUT_DIR}/audit-${t}.requirements.txt"
    python3 -c '
import json, sys
for c in json.load(open(sys.argv[1])).get("components", []):
    if c.get("purl", "").startswith("pkg:pypi/") and c["name"] != "influence-trace":
        print("%s==%s" % (c["name"], c["version"]))' "${sbom}" >"${reqs}"
    log "pip-audit ${t} image ($(wc -l <"${reqs}") packages)"
    "${tools}/bin/pip-audit" --progress-spinner off --no-deps --disable-pip --vulnerability-service pypi \
      -r "${reqs}" --format json --output "${OUT_DIR}/audit-${t}.json" 2>/dev/null || rc=$?
  done
  # pip-audit reports a package it found no advisory data for as skipped, not as clean: count those.
  python3 - "${OUT_DIR}" <<'PY' || rc=$?
import json, sys
from pathlib import Path
unaudited = 0
for f in sorted(Path(sys.argv[1]).glob("audit-*.json")):
    deps = json.loads(f.read_text())["dependencies"]
    skipped = [d for d in deps if "skip_reason" in d]
    vulns = [(d["name"], d["version"], v["id"], v.get("fix_versions")) for d in deps for v in d.get("vulns", [])]
    print(f"{f.name}: {len(deps) - len(skipped)} of {len(deps)} packages audited, {len(vulns)} known vulnerabilities")
    for name, version, vid, fixes in vulns:
        print(f"  {name}=={version} {vid} fixed in {', '.join(fixes) or 'no release'}")
    if skipped:
        print(f"  not audited: {len(skipped)}, e.g. {skipped[0]['skip_reason']}")
        unaudited += len(skipped)
if unaudited:
    print("no advisory data for some packages: the index's per-release JSON API (which pip-audit reads) or OSV"
          " cannot be reached from here", file=sys.stderr)
    sys.exit(3)
PY
  return "${rc}"
}

# ---------------------------------------------------------------------------
# The release workflow
# ---------------------------------------------------------------------------

# actionlint from its Go module, outside the work tree (as hack/cluster.sh builds the cluster's tools);
# prints the binary's path.
actionlint_bin() {
  local dir="${CACHE_ROOT}/bin/actionlint-${ACTIONLINT_VERSION}"
  if [[ ! -x "${dir}/actionlint" ]]; then
    command -v go >/dev/null || die "actionlint is built with Go, which is not installed"
    export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-trimpath
    # sum.golang.org is not reachable from every machine: without it, trust the module proxy alone.
    if [[ -z "${GOSUMDB:-}" ]] && ! timeout 5 bash -c 'exec 3<>/dev/tcp/sum.golang.org/443' 2>/dev/null; then
      export GOSUMDB=off
    fi
    log "building actionlint ${ACTIONLINT_VERSION} into ${dir}"
    mkdir -p "${dir}.tmp"
    GOBIN="${dir}.tmp" go install "github.com/rhysd/actionlint/cmd/actionlint@${ACTIONLINT_VERSION}" ||
      die "go install actionlint@${ACTIONLINT_VERSION} failed"
    rm -rf "${dir}" && mv "${dir}.tmp" "${dir}"
  fi
  echo "${dir}/actionlint"
}

# actionlint runs without its shellcheck and pyflakes integrations: the result must not depend on what else is installed.
cmd_lint_workflow() {
  local bin
  bin="$(actionlint_bin)"
  (cd "${REPO_ROOT}" && "${bin}" -shellcheck= -pyflakes= .github/workflows/images.yml)
}

# ---------------------------------------------------------------------------

cmd_clean() {
  lock
  log "removing ${IMAGES_DIR}/storage-${DRIVER} (base tarballs, pip cache and tools stay)"
  bah rm --all >/dev/null 2>&1 || true
  rm -rf "${IMAGES_DIR}/storage-${DRIVER}" "${IMAGES_DIR}/runroot-${DRIVER}"
}

main() {
  local cmd="${1:-}"
  shift || true
  case "${cmd}" in
    tools) cmd_tools ;;
    base) cmd_base ;;
    build) cmd_build "$@" ;;
    sbom) cmd_sbom "$@" ;;
    audit) cmd_audit "$@" ;;
    lint-workflow) cmd_lint_workflow ;;
    image) [[ $# == 1 ]] || die "usage: hack/images.sh image operator|worker"; targets "$1" >/dev/null; image_name "$1" ;;
    out) echo "${OUT_DIR}" ;;
    buildah) bah "$@" ;;
    clean) cmd_clean ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}

main "$@"; exit $?  # one line: an edit of this file while it runs cannot shift what bash reads next
