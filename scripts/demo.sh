#!/usr/bin/env bash
# meshshift's main job (until `meshshift lab demo` lands): a lab on this machine, Istio 1.9.7 with a gateway
# behind a user-owned LoadBalancer, bookinfo with 2 replicas per service, real traffic through the ingress,
# and `meshshift status` of the result. The lab is removed at the end unless KEEP_LAB=1.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "installing dependencies (etcd, Kubernetes 1.20.2 control plane; cached after the first run)"
./scripts/install-deps.sh >/dev/null

step "building meshshift"
cargo build --release -p meshshift
M=target/release/meshshift
DIR=${MESHSHIFT_LAB_DIR:-$(mktemp -d)/lab}

step "starting the lab in $DIR"
"$M" lab up --dir "$DIR" --nodes 3
if [ "${KEEP_LAB:-0}" != 1 ]; then trap '"$M" lab down --dir "$DIR"' EXIT; fi
eval "$("$M" lab env --dir "$DIR")"

step "installing Istio 1.9.7 (revision 1-9-7), its gateway and the user-owned LoadBalancer"
"$M" lab install-istio --dir "$DIR" --version 1.9.7 \
  --gateway istio-ingress/istio-ingressgateway-1-9-7 --load-balancer istio-ingress/ingress
step "installing bookinfo (namespace bookinfo, revision 1-9-7, 2 replicas)"
"$M" lab install-bookinfo --dir "$DIR" --namespace bookinfo --revision 1-9-7 --replicas 2
eval "$("$M" lab env --dir "$DIR")"

step "sending 500 requests to $MESHSHIFT_INGRESS/productpage"
python3 - "$MESHSHIFT_INGRESS" <<'PY'
import collections, sys, time, urllib.request, urllib.error
base = sys.argv[1]
seen = collections.Counter()
deadline = time.time() + 60
while True:  # wait until the ingress serves
    try:
        urllib.request.urlopen(base + "/productpage", timeout=5).read(); break
    except Exception:
        if time.time() > deadline: sys.exit("the ingress never served /productpage")
        time.sleep(0.2)
for _ in range(500):
    try:
        with urllib.request.urlopen(base + "/productpage", timeout=5) as r:
            r.read(); seen[(r.status, r.headers.get("x-meshshift-revision"))] += 1
    except urllib.error.HTTPError as e:
        seen[(e.code, e.headers.get("x-meshshift-revision"))] += 1
    except Exception as e:
        seen[("error", type(e).__name__)] += 1
failed = sum(n for (s, _), n in seen.items() if s != 200)
for (status, rev), n in sorted(seen.items(), key=str):
    print(f"  {n:4d} x {status} (gateway revision {rev})")
print(f"{sum(seen.values())} requests, {failed} failed")
sys.exit(1 if failed else 0)
PY

step "meshshift status"
"$M" status
