#!/usr/bin/env bash
# Starts a release server with a fresh data directory on 127.0.0.1:18080,
# provisions one HubSpot instance and writes its id and token (and the
# account's secrets) to $PROF_DIR/vars.sh.
# usage: scripts/profile/start.sh [BINARY]   (LOG=info|warn, PROF_DIR=/tmp/elements-prof,
#        CONFIG=a configuration file for --config)
set -euo pipefail
BIN=${1:-target/release/elements}
D=${PROF_DIR:-/tmp/elements-prof}
mkdir -p "$D"
kill "$(cat "$D/pid" 2>/dev/null)" 2>/dev/null || true
sleep 0.3
rm -rf "$D/data"; mkdir -p "$D/data"
ELEMENTS_VERIFY_ON_CREATE=false ELEMENTS_LOG=${LOG:-info} "$BIN" serve ${CONFIG:+--config "$CONFIG"} --data-dir "$D/data" --listen 127.0.0.1:18080 > "$D/out.log" 2> "$D/err.log" &
echo $! > "$D/pid"
for _ in $(seq 50); do grep -q firstAccount "$D/out.log" 2>/dev/null && break; sleep 0.2; done
line=$(grep firstAccount "$D/out.log" | head -1)
org=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["firstAccount"]["organization"]["secret"])')
user=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["firstAccount"]["user"]["secret"])')
resp=$(curl -s -X POST http://127.0.0.1:18080/elements/api-v2/instances -H "Authorization: User $user, Organization $org" -H 'content-type: application/json' -d '{"element":{"key":"hubspot"},"providerData":{"access_token":"bench-access-token","refresh_token":"bench-refresh-token","expires_in":"31536000"},"configuration":{"oauth.api.key":"test-client","oauth.api.secret":"123456","oauth.callback.url":"www.samplecallbackurl.com","oauth.scope":"contacts-rw+offline"},"name":"Bench"}')
id=$(echo "$resp" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
tok=$(echo "$resp" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
echo "ID=$id TOK=$tok USER=$user ORG=$org" > "$D/vars.sh"
