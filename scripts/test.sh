#!/usr/bin/env bash
# meshshift's test command: installs what the tests need (idempotent), then runs every test of the workspace:
# unit tests of the pure core, integration tests against a real Kubernetes control plane, and tests that read
# Istio's real manifests from ../shared/fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "installing test dependencies (etcd, Kubernetes 1.20.2 control plane; cached after the first run)"
./scripts/install-deps.sh >/dev/null

if [ ! -f ../shared/fixtures/README.md ] && [ -z "${MESHSHIFT_FIXTURES:-}" ]; then
  echo "error: ../shared/fixtures not found; the fixture tests need it (or set MESHSHIFT_FIXTURES)" >&2
  exit 1
fi

step "building the workspace and its tests"
cargo build --workspace --all-targets

if cargo clippy --version >/dev/null 2>&1; then
  step "clippy (warnings are errors)"
  cargo clippy --workspace --all-targets -- -D warnings
fi
if cargo fmt --version >/dev/null 2>&1; then
  step "rustfmt check"
  cargo fmt --all --check
fi

step "running the tests"
cargo test --workspace "$@"
