#!/usr/bin/env bash
# meshshift's main job, until the lab lands: start a real Kubernetes control plane on this machine, load a
# sample mesh from Istio's real manifests (1.9.7 and 1.10.6 revisions side by side, bookinfo mid-migration),
# and print `meshshift status` for it.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "installing dependencies (etcd, Kubernetes 1.20.2 control plane; cached after the first run)"
./scripts/install-deps.sh >/dev/null

step "building meshshift"
cargo build --workspace --all-targets

step "starting a control plane, loading the sample mesh, running meshshift status"
cargo test -p meshshift --test demo_sample_mesh -- --nocapture --test-threads=1
