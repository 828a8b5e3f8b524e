#!/usr/bin/env bash
# The prober's maximum sustainable rate against a fast local server, side by side in one run with wrk
# (Debian's package) and oha (crates.io) at equal connections. docs/benchmarks.md, "Prober vs wrk and oha",
# has the results and how to read them.
#
#     crates/meshshift/benches/prober_vs_wrk_oha.sh
#
# Works on a fresh machine as root: installs wrk (apt-get) and oha (cargo install --locked, into
# ~/.cache/meshshift/oha) when they are missing, builds `meshshift` and the `bench_server` example in release
# mode, then for every connection count and repetition:
#   - wrk  -t1 -cC -dD            closed loop: requests/s, p50/p99, errors;
#   - oha  -cC -zD -w             closed loop, the same;
#   - meshshift probe --rate R    open loop: the highest R (found by bisection) at which every request
#                                 succeeded and completions kept up with the schedule (>= 99% of R);
#   - oha  -q R --latency-correction  open loop (wrk2-style) at the prober's maximum, for comparison.
# The server is pinned to one CPU and every load generator to another (PIN=0 turns pinning off), so each
# tool gets exactly one core and the server the same one each time. Prints a markdown table (medians over the
# repetitions) and keeps every raw result in $OUT.
#
# Environment: CONNECTIONS ("16 64"), DURATION (seconds, 10), REPEATS (3), PIN (1), SERVER_CPU (0),
# GEN_CPU (1), MAX_LOAD (wait, up to IDLE_WAIT seconds, for the 1-minute load average to drop below it:
# 1.0; the machine may be shared), IDLE_WAIT (600), RESOLUTION (bisection stops when the bracket is below
# this fraction of wrk's rate: 0.02), OHA_VERSION (1.16.0), OUT (target/bench/prober_vs_wrk_oha), MESHSHIFT
# (a meshshift binary to measure instead of building one).
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD

CONNECTIONS=${CONNECTIONS:-"16 64"}
DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
PIN=${PIN:-1}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
MAX_LOAD=${MAX_LOAD:-1.0}
IDLE_WAIT=${IDLE_WAIT:-600}
RESOLUTION=${RESOLUTION:-0.02}
OHA_VERSION=${OHA_VERSION:-1.16.0}
OHA_ROOT=${OHA_ROOT:-$HOME/.cache/meshshift/oha}
OUT=${OUT:-$ROOT/target/bench/prober_vs_wrk_oha}

step() { printf '==> %s\n' "$*" >&2; }

# --- tools -------------------------------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
  step "installing wrk (apt-get)"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2
fi
OHA=$OHA_ROOT/bin/oha
if ! [ -x "$OHA" ] || ! "$OHA" --version 2>/dev/null | grep -qF " $OHA_VERSION"; then
  step "installing oha $OHA_VERSION (cargo install --locked into $OHA_ROOT; a few minutes, once)"
  cargo install oha --version "$OHA_VERSION" --locked --root "$OHA_ROOT" >&2
fi
if [ -z "${MESHSHIFT:-}" ]; then
  step "building meshshift and the bench server (release)"
  cargo build --release -p meshshift >&2
  MESHSHIFT=$ROOT/target/release/meshshift
fi
cargo build --release -p meshshift-probe --example bench_server >&2
SERVER=$ROOT/target/release/examples/bench_server

if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  ON_SERVER=(taskset -c "$SERVER_CPU")
  ON_GEN=(taskset -c "$GEN_CPU")
  THREADS=1
  PINNING="server on CPU $SERVER_CPU, load generators on CPU $GEN_CPU"
else
  ON_SERVER=()
  ON_GEN=()
  THREADS=$(nproc)
  PINNING="not pinned"
fi

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.txt "$OUT"/results.jsonl

# --- a quiet machine ---------------------------------------------------------------------------------------
load1() { cut -d' ' -f1 /proc/loadavg; }
waited=0
while awk -v l="$(load1)" -v m="$MAX_LOAD" 'BEGIN { exit !(l >= m) }' && [ "$waited" -lt "$IDLE_WAIT" ]; do
  [ "$waited" = 0 ] && step "waiting up to ${IDLE_WAIT}s for the load average ($(load1)) to drop below $MAX_LOAD"
  sleep 10
  waited=$((waited + 10))
done
if awk -v l="$(load1)" -v m="$MAX_LOAD" 'BEGIN { exit !(l >= m) }'; then
  step "warning: load average still $(load1): results will be noisy"
fi

# --- the server --------------------------------------------------------------------------------------------
"${ON_SERVER[@]}" "$SERVER" 0 1 >"$OUT/server.txt" &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q listening "$OUT/server.txt" 2>/dev/null && break; sleep 0.1; done
ADDR=$(awk '/listening on/ { print $3 }' "$OUT/server.txt")
[ -n "$ADDR" ] || { echo "error: the bench server did not start" >&2; exit 1; }
URL="http://$ADDR/"

# wrk prints its numbers as JSON through this script.
WRK_LUA=$OUT/report.lua
cat >"$WRK_LUA" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "errors": %d, "non_2xx": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
LUA

# `helper run TOOL C REP RATE FILE CMD...` runs a load generator with its stdout in FILE, appends one JSON line
# to results.jsonl (rate, p50/p99, errors, the generator's CPU time, the server's CPU share, the load
# average) and prints `RPS P50_MS P99_MS ERRORS PASS`; `helper table` prints the markdown table.
HELPER=$OUT/helper.py
cat >"$HELPER" <<'PY'
import json, os, resource, statistics, subprocess, sys, time

results = os.environ["RESULTS"]

def parse(tool, text):
    """(completed requests, req/s, p50 ms, p99 ms, errors)"""
    if tool == "wrk":
        d = json.loads(text[text.index("{"):])
        return d["requests"], d["requests"] / (d["duration_us"] / 1e6), d["p50_us"] / 1e3, d["p99_us"] / 1e3, \
            d["errors"] + d["non_2xx"]
    if tool in ("oha", "oha-q"):
        d = json.loads(text)
        statuses = d.get("statusCodeDistribution", {})
        total = sum(statuses.values())
        errors = sum(d.get("errorDistribution", {}).values()) + total - statuses.get("200", 0)
        p = d["latencyPercentiles"]
        return total, d["summary"]["requestsPerSec"], (p["p50"] or 0) * 1e3, (p["p99"] or 0) * 1e3, errors
    # meshshift probe -o json: completions per second, latency from the scheduled time, failed requests.
    s = json.loads(text)["summary"]
    return s["total"], s["throughput"], s["latency"]["p50_us"] / 1e3, s["latency"]["p99_us"] / 1e3, s["failed"]

def server_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def run(tool, c, rep, rate, path, cmd):
    pid = os.environ["SERVER_PID"]
    load = os.getloadavg()[0]
    cpu0, t0 = server_cpu(pid), time.monotonic()
    with open(path, "wb") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.DEVNULL).returncode
    wall = time.monotonic() - t0
    server_share = (server_cpu(pid) - cpu0) / wall
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        n, rps, p50, p99, errors = parse(tool, open(path).read())
    except (ValueError, KeyError):
        n, rps, p50, p99, errors = 0, 0.0, 0.0, 0.0, -1
    rate = float(rate)
    # The prober's bar: every request succeeded and completions kept up with the schedule.
    ok = errors == 0 and (rate == 0 or rps >= 0.99 * rate)
    row = dict(tool=tool, c=int(c), rep=int(rep), rate=rate, rc=rc, requests=n, rps=rps, p50_ms=p50,
               p99_ms=p99, errors=errors, passed=ok, gen_cpu_s=usage.ru_utime + usage.ru_stime,
               server_cpu_share=server_share, load1=load, wall_s=wall)
    with open(results, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{rps:.0f} {p50:.2f} {p99:.2f} {errors} {int(ok)}")

NAMES = {
    "wrk": "wrk 4.1, closed loop",
    "oha": "oha 1.16, closed loop",
    "probe": "**meshshift probe**, open loop: highest rate kept",
    "oha-q": "oha 1.16 `-q <that rate> --latency-correction`, open loop",
}

def table():
    rows = [json.loads(l) for l in open(results)]
    med = statistics.median
    print("| generator | conns | req/s (median) | vs wrk | runs | p50 | p99 | errors | gen. CPU/req | server CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c in sorted({r["c"] for r in rows}):
        wrk = [r["rps"] for r in rows if r["tool"] == "wrk" and r["c"] == c]
        for tool in NAMES:
            sel = [r for r in rows if r["tool"] == tool and r["c"] == c]
            if tool == "probe":
                # Per repetition, the highest rate that passed (the bisection's result).
                best = []
                for rep in sorted({r["rep"] for r in sel}):
                    passed = [r for r in sel if r["rep"] == rep and r["passed"]]
                    if passed:
                        best.append(max(passed, key=lambda r: r["rate"]))
                sel = best
            if not sel:
                continue
            rps = [r["rate"] if tool == "probe" else r["rps"] for r in sel]
            ratio = f"{med(rps) / med(wrk):.2f}x" if wrk and med(wrk) > 0 else "-"
            cpu = med([r["gen_cpu_s"] / r["requests"] * 1e6 for r in sel if r["requests"]])
            print(f"| {NAMES[tool]} | {c} | {med(rps):.0f} | {ratio} | {', '.join(f'{x:.0f}' for x in rps)} "
                  f"| {med([r['p50_ms'] for r in sel]):.2f} ms | {med([r['p99_ms'] for r in sel]):.2f} ms "
                  f"| {sum(r['errors'] for r in sel)} | {cpu:.1f} µs "
                  f"| {med([r['server_cpu_share'] for r in sel]) * 100:.0f}% |")

if sys.argv[1] == "run":
    run(*sys.argv[2:7], sys.argv[7:])
else:
    table()
PY
export RESULTS=$OUT/results.jsonl SERVER_PID
helper() { python3 "$HELPER" "$@"; }

step "server $URL ($PINNING); ${DURATION}s per run, connections: $CONNECTIONS, $REPEATS repetitions"
# Warm-up: connections, caches, CPU frequency.
"${ON_GEN[@]}" wrk -t1 -c16 -d2s "$URL" >/dev/null

# Whether the prober kept up at `rate` (see helper: no failure, completions >= 99% of the rate).
probe_at() {
  local c=$1 rep=$2 rate=$3 rps p50 p99 errors ok
  read -r rps p50 p99 errors ok < <(helper run probe "$c" "$rep" "$rate" "$OUT/probe-c$c-r$rep-$rate.json" \
    "${ON_GEN[@]}" "$MESHSHIFT" probe "$URL" --rate "$rate" --duration "${DURATION}s" --connections "$c" \
    --drain 2s -o json)
  step "    probe --rate $rate: completions $rps/s, p50 $p50 ms, p99 $p99 ms, failed $errors -> $([ "$ok" = 1 ] && echo kept up || echo no)"
  [ "$ok" = 1 ]
}

for rep in $(seq "$REPEATS"); do
  for c in $CONNECTIONS; do
    step "repetition $rep, $c connections (load average $(load1))"
    read -r wrk_rps p50 p99 errors _ < <(helper run wrk "$c" "$rep" 0 "$OUT/wrk-c$c-r$rep.txt" \
      "${ON_GEN[@]}" wrk -t"$THREADS" -c"$c" -d"${DURATION}s" -s "$WRK_LUA" "$URL")
    step "  wrk: $wrk_rps/s, p50 $p50 ms, p99 $p99 ms, errors $errors"
    read -r rps p50 p99 errors _ < <(helper run oha "$c" "$rep" 0 "$OUT/oha-c$c-r$rep.json" \
      "${ON_GEN[@]}" "$OHA" --no-tui --worker-threads "$THREADS" -c "$c" -z "${DURATION}s" -w \
      --output-format json "$URL")
    step "  oha: $rps/s, p50 $p50 ms, p99 $p99 ms, errors $errors"

    # Bisection between a rate that was kept (lo) and one that was not (hi), in steps of 100/s, starting
    # from 1.25x wrk's rate; it stops when the bracket is below RESOLUTION x wrk's rate.
    step "  meshshift probe: bisecting its highest rate"
    lo=0
    hi=$(awk -v r="$wrk_rps" 'BEGIN { printf "%d", int(r * 1.25 / 100 + 1) * 100 }')
    while probe_at "$c" "$rep" "$hi"; do lo=$hi; hi=$((hi * 2)); done
    min_step=$(awk -v r="$wrk_rps" -v f="$RESOLUTION" 'BEGIN { s = int(r * f / 100) * 100; print (s < 100 ? 100 : s) }')
    while [ $((hi - lo)) -gt "$min_step" ]; do
      mid=$(((lo + hi) / 200 * 100))
      [ "$mid" -le "$lo" ] && break
      if probe_at "$c" "$rep" "$mid"; then lo=$mid; else hi=$mid; fi
    done
    step "  meshshift probe: kept up at $lo/s, not at $hi/s"

    if [ "$lo" -gt 0 ]; then
      read -r rps p50 p99 errors _ < <(helper run oha-q "$c" "$rep" "$lo" "$OUT/ohaq-c$c-r$rep.json" \
        "${ON_GEN[@]}" "$OHA" --no-tui --worker-threads "$THREADS" -c "$c" -z "${DURATION}s" -w -q "$lo" \
        --latency-correction --output-format json "$URL")
      step "  oha -q $lo --latency-correction: $rps/s, p50 $p50 ms, p99 $p99 ms, errors $errors"
    fi
  done
done

# --- the table ---------------------------------------------------------------------------------------------
echo
echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $PINNING;" \
  "${DURATION}s per run; medians of $REPEATS repetitions; load average at the end $(load1)."
echo
helper table
