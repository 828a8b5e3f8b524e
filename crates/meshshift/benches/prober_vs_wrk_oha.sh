#!/usr/bin/env bash
# The prober's maximum sustainable rate against a fast local server, side by side in one run with wrk
# (Debian's package) and oha (crates.io) at equal connections. docs/benchmarks.md, "Prober vs wrk and oha",
# has the results and how to read them.
#
#     crates/meshshift/benches/prober_vs_wrk_oha.sh
#
# Works on a fresh machine as root: installs wrk (apt-get) and oha (cargo install --locked into
# ~/.cache/meshshift/oha, about 10 minutes on 2 cores, once) when they are missing, builds `meshshift` and the
# `bench_server` example in release mode (python3 and taskset are on the machine), then for every connection
# count C and repetition:
#   - wrk -t1 -cC                     closed loop: requests/s, p50/p99, errors;
#   - oha -cC -w                      closed loop, the same;
#   - meshshift probe --rate R        open loop: the highest R (bisection) at which every request succeeded
#                                     and completions kept up with the schedule (>= 99% of R);
#   - oha -q R --latency-correction   oha's open-loop mode (wrk2 style) at the prober's highest R.
# The server is pinned to one CPU and every load generator to another (PIN=0 turns pinning off and gives the
# generators as many threads as CPUs), so each tool gets one core and the server the same one each time. The
# machine may be shared: before each run the script waits for a quiet second, and a run during which other
# processes used FOREIGN_MAX of a core or more is repeated. Prints a markdown table (medians over the
# repetitions) and keeps every raw result in $OUT.
#
# Environment (defaults): CONNECTIONS ("16 64"), DURATION (10 seconds), REPEATS (3), PIN (1), SERVER_CPU (0),
# GEN_CPU (1), FOREIGN_MAX (0.1), ATTEMPTS (4: runs in all for one measurement; the last counts, marked as
# disturbed), QUIET_WAIT (120 seconds at most to wait for a quiet second), RESOLUTION (0.02: the bisection
# stops when its bracket is below this fraction of wrk's rate), OHA_VERSION (1.16.0), OHA_ROOT, OUT
# (target/bench/prober_vs_wrk_oha), MESHSHIFT (a meshshift binary to measure instead of building one).
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD

CONNECTIONS=${CONNECTIONS:-"16 64"}
DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
PIN=${PIN:-1}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
FOREIGN_MAX=${FOREIGN_MAX:-0.1}
ATTEMPTS=${ATTEMPTS:-4}
QUIET_WAIT=${QUIET_WAIT:-120}
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

load1() { cut -d' ' -f1 /proc/loadavg; }

# --- the server --------------------------------------------------------------------------------------------
"${ON_SERVER[@]}" "$SERVER" 0 1 >"$OUT/server.txt" &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true' EXIT
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
TICK = os.sysconf("SC_CLK_TCK")

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
    return (int(fields[11]) + int(fields[12])) / TICK

def others_cpu(exclude):
    """CPU-seconds used by every other process (threads and reaped children included, kernel threads too).
    A process that started before and ended during a run is counted whole through its parent: if anything,
    this overstates the disturbance. (The machine's /proc/stat totals would not do: with tick-based
    accounting, the loopback traffic's softirq time is charged to these processes or to no one, at random.)"""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])
    return total / TICK

def children_cpu():
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime

def wait_quiet(exclude):
    """Waits (up to QUIET_WAIT seconds) until the other processes used under FOREIGN_MAX of a core over one
    second."""
    deadline = time.monotonic() + float(os.environ["QUIET_WAIT"])
    while True:
        o0 = others_cpu(exclude)
        time.sleep(1)
        if others_cpu(exclude) - o0 < float(os.environ["FOREIGN_MAX"]) or time.monotonic() > deadline:
            return

def run(tool, c, rep, rate, path, cmd):
    """Runs the generator until a run is clean: the other processes used under FOREIGN_MAX of a core during
    it; after ATTEMPTS tries the last run counts, marked as disturbed."""
    pid = os.environ["SERVER_PID"]
    exclude = {int(pid), os.getpid()}
    attempts = int(os.environ["ATTEMPTS"])
    for attempt in range(1, attempts + 1):
        wait_quiet(exclude)
        load = os.getloadavg()[0]
        cpu0, others0, gen0, t0 = server_cpu(pid), others_cpu(exclude), children_cpu(), time.monotonic()
        with open(path, "wb") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.DEVNULL).returncode
        wall = time.monotonic() - t0
        server = server_cpu(pid) - cpu0
        gen = children_cpu() - gen0
        foreign = (others_cpu(exclude) - others0) / wall
        clean = foreign < float(os.environ["FOREIGN_MAX"])
        if clean or attempt == attempts:
            break
        print(f"    (run disturbed: other processes used {foreign:.2f} of a core; again)", file=sys.stderr)
    try:
        n, rps, p50, p99, errors = parse(tool, open(path).read())
    except (ValueError, KeyError):
        n, rps, p50, p99, errors = 0, 0.0, 0.0, 0.0, -1
    rate = float(rate)
    # The prober's bar: every request succeeded and completions kept up with the schedule.
    ok = errors == 0 and (rate == 0 or rps >= 0.99 * rate)
    row = dict(tool=tool, c=int(c), rep=int(rep), rate=rate, rc=rc, requests=n, rps=rps, p50_ms=p50,
               p99_ms=p99, errors=errors, passed=ok, gen_cpu_s=gen, server_cpu_share=server / wall,
               foreign_cpu_share=foreign, clean=clean, attempts=attempt, load1=load, wall_s=wall)
    with open(results, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{rps:.0f} {p50:.2f} {p99:.2f} {errors} {int(ok)} {foreign:.2f}")

NAMES = {
    "wrk": "wrk 4.1, closed loop",
    "oha": "oha 1.16, closed loop",
    "probe": "**meshshift probe**, open loop: highest rate kept",
    "oha-q": "oha 1.16 `-q <that rate> --latency-correction`, open loop",
}

def table():
    rows = [json.loads(l) for l in open(results)]
    med = statistics.median
    print("| generator | conns | req/s (median) | vs wrk | runs | p50 | p99 | errors | gen. CPU/req "
          "| server CPU | others' CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for c in sorted({r["c"] for r in rows}):
        wrk = [r["rps"] for r in rows if r["tool"] == "wrk" and r["c"] == c]
        for tool in NAMES:
            every = [r for r in rows if r["tool"] == tool and r["c"] == c]
            sel = every
            if tool == "probe":
                # Per repetition, the highest rate that passed (the bisection's result).
                sel = []
                for rep in sorted({r["rep"] for r in every}):
                    passed = [r for r in every if r["rep"] == rep and r["passed"]]
                    if passed:
                        sel.append(max(passed, key=lambda r: r["rate"]))
            if not sel:
                continue
            rps = [r["rate"] if tool == "probe" else r["rps"] for r in sel]
            ratio = f"{med(rps) / med(wrk):.2f}x" if wrk and med(wrk) > 0 else "-"
            cpu = med([r["gen_cpu_s"] / r["requests"] * 1e6 for r in sel if r["requests"]])
            # Every run that decided the row (for the prober, the whole bisection): the most the rest of the
            # machine used during one of them, and how many were disturbed even after the retries.
            unclean = sum(not r["clean"] for r in every)
            others = f"{max(r['foreign_cpu_share'] for r in every):.2f}" + (f" ({unclean} disturbed)" if unclean else "")
            print(f"| {NAMES[tool]} | {c} | {med(rps):.0f} | {ratio} | {', '.join(f'{x:.0f}' for x in rps)} "
                  f"| {med([r['p50_ms'] for r in sel]):.2f} ms | {med([r['p99_ms'] for r in sel]):.2f} ms "
                  f"| {sum(r['errors'] for r in sel)} | {cpu:.1f} µs "
                  f"| {med([r['server_cpu_share'] for r in sel]) * 100:.0f}% | ≤ {others} |")

if sys.argv[1] == "run":
    run(*sys.argv[2:7], sys.argv[7:])
else:
    table()
PY
export RESULTS=$OUT/results.jsonl SERVER_PID FOREIGN_MAX ATTEMPTS QUIET_WAIT
helper() { python3 "$HELPER" "$@"; }

step "server $URL ($PINNING); ${DURATION}s per run, connections: $CONNECTIONS, $REPEATS repetitions"
# Warm-up: connections, caches, CPU frequency.
"${ON_GEN[@]}" wrk -t1 -c16 -d2s "$URL" >/dev/null

# Whether the prober kept up at `rate` (see helper: no failure, completions >= 99% of the rate).
probe_at() {
  local c=$1 rep=$2 rate=$3 rps p50 p99 errors ok foreign
  read -r rps p50 p99 errors ok foreign < <(helper run probe "$c" "$rep" "$rate" "$OUT/probe-c$c-r$rep-$rate.json" \
    "${ON_GEN[@]}" "$MESHSHIFT" probe "$URL" --rate "$rate" --duration "${DURATION}s" --connections "$c" \
    --drain 2s -o json)
  step "    probe --rate $rate: completions $rps/s, p50 $p50 ms, p99 $p99 ms, failed $errors -> $([ "$ok" = 1 ] && echo kept up || echo no) (others: $foreign core)"
  [ "$ok" = 1 ]
}

for rep in $(seq "$REPEATS"); do
  for c in $CONNECTIONS; do
    step "repetition $rep, $c connections (load average $(load1))"
    read -r wrk_rps p50 p99 errors _ foreign < <(helper run wrk "$c" "$rep" 0 "$OUT/wrk-c$c-r$rep.txt" \
      "${ON_GEN[@]}" wrk -t"$THREADS" -c"$c" -d"${DURATION}s" -s "$WRK_LUA" "$URL")
    step "  wrk: $wrk_rps/s, p50 $p50 ms, p99 $p99 ms, errors $errors (others: $foreign core)"
    read -r rps p50 p99 errors _ foreign < <(helper run oha "$c" "$rep" 0 "$OUT/oha-c$c-r$rep.json" \
      "${ON_GEN[@]}" "$OHA" --no-tui --worker-threads "$THREADS" -c "$c" -z "${DURATION}s" -w \
      --output-format json "$URL")
    step "  oha: $rps/s, p50 $p50 ms, p99 $p99 ms, errors $errors (others: $foreign core)"

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
      read -r rps p50 p99 errors _ foreign < <(helper run oha-q "$c" "$rep" "$lo" "$OUT/ohaq-c$c-r$rep.json" \
        "${ON_GEN[@]}" "$OHA" --no-tui --worker-threads "$THREADS" -c "$c" -z "${DURATION}s" -w -q "$lo" \
        --latency-correction --output-format json "$URL")
      step "  oha -q $lo --latency-correction: $rps/s, p50 $p50 ms, p99 $p99 ms, errors $errors (others: $foreign core)"
    fi
  done
done

# --- the table ---------------------------------------------------------------------------------------------
echo
echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $PINNING;" \
  "${DURATION}s per run; medians of $REPEATS repetitions; load average at the end $(load1)."
echo
helper table
