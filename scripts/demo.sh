#!/usr/bin/env bash
# meshshift's main job: `meshshift lab demo`. A lab on this machine (a real Kubernetes control plane with
# emulated nodes), Istio 1.9.7 with its gateway behind a user-owned LoadBalancer, bookinfo with 2 replicas
# each, 200 requests/s through the LoadBalancer while meshshift upgrades the mesh to 1.10.6 blue/green, and
# the upgrade's report. Prints "N requests, M failed" and the report's path; fails if any request failed.
# Extra arguments go to `meshshift lab demo` (e.g. --rate 500 --keep).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "installing dependencies (etcd, Kubernetes 1.20.2 control plane, helm, prometheus, chromium; cached after the first run)"
./scripts/install-deps.sh >/dev/null

step "building meshshift (release)"
cargo build --release -p meshshift

step "meshshift lab demo $*"
exec target/release/meshshift lab demo "$@"
