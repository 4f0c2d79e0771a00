#!/usr/bin/env bash
# Server CPU per request with no core shared: the server pinned to CPU 0
# with one serving thread, wrk pinned to CPU 1 (-t1 -c16), the reference
# server pinned and sized the same way. Rounds of one binary agree within
# ~0.4 us here, where the unpinned -t2 -c32 rounds spread by 2-4 us on a
# 2-vCPU VM: use it to compare binaries (alternate them).
# usage: scripts/profile/pinned.sh ROUNDS BINARY...   (D=seconds per run, 4)
set -euo pipefail
cd "$(dirname "$0")/../.."
D_SECONDS=${D:-4}
. scripts/profile/common.sh
REF_OUT="$PROF/pinned-ref.out"
TOKIO_WORKER_THREADS=1 taskset -c 0 target/release/elements-bench reference-server > "$REF_OUT" 2>&1 &
REFPID=$!
trap 'kill $REFPID 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q http "$REF_OUT" 2>/dev/null && break; sleep 0.1; done
REF=$(grep -o 'http://[0-9.:]*' "$REF_OUT")
run() { # PID URL [wrk args]
  local pid=$1 url=$2; shift 2
  local t0 t1 n rps
  t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  taskset -c 1 wrk -t1 -c16 -d"${D_SECONDS}s" "$url" "$@" > "$PROF/pinned.wrk"
  t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  n=$(grep "requests in" "$PROF/pinned.wrk" | awk '{print $1}')
  rps=$(grep Requests/sec "$PROF/pinned.wrk" | awk '{print $2}')
  if grep -q Non-2xx "$PROF/pinned.wrk"; then echo "non-2xx answers: $url" >&2; exit 1; fi
  python3 -c "print(f'{float($rps):7.0f}/s {($t1-$t0)*10000/$n:5.2f} us', end='')"
}
for _ in $(seq "$1"); do
  for b in "${@:2}"; do
    TOKIO_WORKER_THREADS=1 taskset -c 0 scripts/profile/start.sh "$b" > /dev/null 2>&1
    sleep 0.5
    . "$PROF/vars.sh"
    P=$(cat "$PROF/pid")
    echo -n "$(basename "$b")  reference "; run "$REFPID" "$REF/elements/api-v2/instances/1/credentials"
    echo -n " | credentials "; run "$P" "http://127.0.0.1:18080/elements/api-v2/instances/$ID/credentials" -H "Authorization: Element $TOK"
    echo -n " | oauth/url "; run "$P" "http://127.0.0.1:18080/elements/api-v2/elements/hubspot/oauth/url?$Q"
    echo
  done
done
kill "$(cat "$PROF/pid")" 2>/dev/null || true
