#!/usr/bin/env bash
# Successive unpinned wrk runs (-t2 -c32, new connections each time) against
# one server process, with per-thread scheduler counters around each run:
# requests/s, server CPU per request, and the serving threads' voluntary and
# involuntary context switches per second. Shows the fast and slow rounds of
# BENCHMARKS.md ("the fast rounds, measured").
# usage: scripts/profile/rounds.sh ROUNDS [BINARY]   (D=seconds per run, 5;
#        REFERENCE=1 runs the bare axum reference instead of BINARY)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-10}
BIN=${2:-target/release/elements}
D_SECONDS=${D:-5}
. scripts/profile/common.sh
if [ "${REFERENCE:-0}" = 1 ]; then
  target/release/elements-bench reference-server > "$PROF/rounds-ref.out" 2>&1 &
  P=$!
  for _ in $(seq 50); do grep -q http "$PROF/rounds-ref.out" 2>/dev/null && break; sleep 0.1; done
  BASE=$(grep -o 'http://[0-9.:]*' "$PROF/rounds-ref.out")
  THREADS='tokio-rt-worke*'
else
  scripts/profile/start.sh "$BIN" > /dev/null 2>&1
  sleep 0.5
  P=$(cat "$PROF/pid")
  BASE=http://127.0.0.1:18080
  THREADS='elements-http*'
fi
trap 'kill $P 2>/dev/null || true' EXIT
serving=()
for t in /proc/$P/task/*; do
  # shellcheck disable=SC2254
  case $(cat "$t/comm") in $THREADS) serving+=("$t") ;; esac
done
switches() {
  for t in "${serving[@]}"; do
    awk '/^voluntary/{v=$2} /^nonvoluntary/{n=$2} END{printf "%d %d ", v, n}' "$t/status"
  done
}
cpu() { awk '{print $14+$15}' "/proc/$P/stat"; }
for r in $(seq "$ROUNDS"); do
  s0=$(switches); c0=$(cpu)
  wrk -t2 -c32 -d"${D_SECONDS}s" "$BASE/elements/api-v2/elements/hubspot/oauth/url?$Q" > "$PROF/rounds.wrk"
  c1=$(cpu); s1=$(switches)
  rps=$(awk '/Requests\/sec/{print $2}' "$PROF/rounds.wrk")
  n=$(awk '/requests in/{print $1}' "$PROF/rounds.wrk")
  python3 - "$r" "$rps" "$n" "$c0" "$c1" "$D_SECONDS" "$s0" "$s1" <<'PY'
import sys
r, rps, n, c0, c1, secs = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
s0, s1 = [int(x) for x in sys.argv[7].split()], [int(x) for x in sys.argv[8].split()]
per = [(b - a) / secs for a, b in zip(s0, s1)]
threads = " ".join(f"thread {i}: {per[2*i]:.0f} vol/s {per[2*i+1]:.0f} invol/s" for i in range(len(per) // 2))
print(f"round {r}: {rps:9.0f} req/s {(c1 - c0) * 10000 / n:6.2f} us/req | {threads}")
PY
done
