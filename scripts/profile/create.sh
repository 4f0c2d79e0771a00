#!/usr/bin/env bash
# wrk POSTing the seed's instance body to /instances for SECONDS (64
# connections, after a 3 s warm-up) and the server's CPU per instance.
# Start the server with the cap lifted first:
#   echo 'max_instances_per_organization = 100000000' > /tmp/create.toml
#   CONFIG=/tmp/create.toml scripts/profile/start.sh [BINARY]
# usage: scripts/profile/create.sh NAME [SECONDS]   (C=64 overridable)
set -euo pipefail
D=${PROF_DIR:-/tmp/elements-prof}
. "$D/vars.sh"
S=${2:-6}
PID=${PID:-$(cat "$D/pid")}
URL=http://127.0.0.1:18080/elements/api-v2/instances
export AUTHZ="User $USER, Organization $ORG"
LUA="$(dirname "$0")/post.lua"
wrk -t2 -c"${C:-64}" -d3s -s "$LUA" "$URL" > /dev/null
t0=$(awk '{print $14+$15}' "/proc/$PID/stat")
wrk -t2 -c"${C:-64}" -d"${S}s" -s "$LUA" "$URL" > "$D/$1.wrk"
t1=$(awk '{print $14+$15}' "/proc/$PID/stat")
reqs=$(grep "requests in" "$D/$1.wrk" | awk '{print $1}')
grep -E "Requests/sec|Latency|Non-2xx" "$D/$1.wrk"
python3 -c "print('server CPU/instance us:', ($t1-$t0)*10000/$reqs)"
