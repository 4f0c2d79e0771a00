#!/usr/bin/env bash
# wrk on GET /credentials (or $URL) for SECONDS and the server's CPU per
# request from /proc/PID/stat (utime+stime); with PERF=1 also a call-graph
# profile of the server in $PROF_DIR/NAME.data.
# usage: scripts/profile/load.sh NAME [SECONDS]   (PID, URL, C=32 overridable)
set -euo pipefail
D=${PROF_DIR:-/tmp/elements-prof}
. "$D/vars.sh"
S=${2:-6}
PID=${PID:-$(cat "$D/pid")}
URL=${URL:-http://127.0.0.1:18080/elements/api-v2/instances/$ID/credentials}
t0=$(awk '{print $14+$15}' "/proc/$PID/stat")
if [ "${PERF:-0}" = 1 ]; then
  wrk -t2 -c"${C:-32}" -d"${S}s" "$URL" -H "Authorization: Element $TOK" > "$D/$1.wrk" &
  sleep 1
  perf record -e cpu-clock -F 2000 --call-graph dwarf,16384 -p "$PID" -o "$D/$1.data" -- sleep $((S - 2)) > /dev/null 2>&1
  wait
else
  wrk -t2 -c"${C:-32}" -d"${S}s" "$URL" -H "Authorization: Element $TOK" > "$D/$1.wrk"
fi
t1=$(awk '{print $14+$15}' "/proc/$PID/stat")
reqs=$(grep "requests in" "$D/$1.wrk" | awk '{print $1}')
grep -E "Requests/sec|Latency" "$D/$1.wrk"
python3 -c "print('server CPU/req us:', ($t1-$t0)*10000/$reqs)"
