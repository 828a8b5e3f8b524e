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

if [ $# -gt 0 ]; then
  step "running the tests matching: $*"
  exec cargo test --workspace "$@"
fi

step "running the libraries' tests (unit, property, integration against a real control plane, the lab's)"
cargo test --workspace --exclude meshshift

# meshshift's own tests are end-to-end lab runs that mostly wait (soak windows, rollouts, 30 s pod
# shutdowns), so two shards run side by side; each test binary still runs as cargo would run it.
step "running meshshift's tests (CLI and end to end in the lab) in two parallel shards"
cargo test -p meshshift --no-run
EXES=$(cargo test -p meshshift --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"], m["executable"])
')
SHARD_A="upgrade_e2e hardening_e2e bad_input_e2e upgrade_installers_e2e upgrade_gates_e2e lab_shared_fixtures lab_e2e lab_lifecycle status_shared_fixtures status_errors plan_cli probe_cli report_cli render_matches_shared_fixtures"
run_shard() {
  local name=$1; shift
  local failed=0
  while read -r target exe; do
    local mine=0
    for t in $SHARD_A; do [ "$t" = "$target" ] && mine=1; done
    if { [ "$name" = A ] && [ $mine = 1 ]; } || { [ "$name" = B ] && [ $mine = 0 ]; }; then
      echo "--- shard $name: $target ($(date +%H:%M:%S))"
      ( cd crates/meshshift && "$exe" ) || { echo "--- FAILED: $target"; failed=1; }
    fi
  done <<< "$EXES"
  return $failed
}
LOGS=$(mktemp -d)
run_shard A > "$LOGS/a.log" 2>&1 & PID_A=$!
run_shard B > "$LOGS/b.log" 2>&1 & PID_B=$!
# Progress while the shards run: which test each is on.
while kill -0 $PID_A 2>/dev/null || kill -0 $PID_B 2>/dev/null; do
  sleep 60
  printf '[test.sh %s] shard A: %s | shard B: %s\n' "$(date +%H:%M:%S)" \
    "$(grep -- '^--- shard' "$LOGS/a.log" | tail -n1 | cut -d' ' -f4)" "$(grep -- '^--- shard' "$LOGS/b.log" | tail -n1 | cut -d' ' -f4)" >&2
done
STATUS=0
wait $PID_A || STATUS=1
wait $PID_B || STATUS=1
cat "$LOGS/a.log" "$LOGS/b.log"
grep -h -- '^--- FAILED' "$LOGS/a.log" "$LOGS/b.log" >&2 || true
exit $STATUS
