#!/usr/bin/env bash
# Successive unpinned wrk runs (-t2 -c32, new connections each time) of
# `oauth/url` against one server process: requests/s, and how each wrk
# thread's connections are split over the server's serving threads (one
# figure per serving thread: connections from wrk thread A / from B).
# Shows what BENCHMARKS.md's eleventh session measured: rounds where each
# wrk thread talks to one serving thread run at the bare handler's rate.
# Needs strace (to see which wrk thread opened which connection) and ss.
# usage: scripts/profile/split.sh ROUNDS [BINARY]   (D=seconds per run, 5)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-10}
BIN=${2:-target/release/elements}
D_SECONDS=${D:-5}
. scripts/profile/common.sh
scripts/profile/start.sh "$BIN" > /dev/null 2>&1
sleep 0.5
P=$(cat "$PROF/pid")
trap 'kill $P 2>/dev/null || true' EXIT
for _ in $(seq "$ROUNDS"); do
  rm -f "$PROF/split.connect"
  strace -f --seccomp-bpf -e trace=connect -o "$PROF/split.connect" \
    wrk -t2 -c32 -d"${D_SECONDS}s" "http://127.0.0.1:18080/elements/api-v2/elements/hubspot/oauth/url?$Q" > "$PROF/split.wrk" &
  W=$!
  sleep $((D_SECONDS / 2))
  # Both ends of every connection, with the owning process's fd.
  ss -tnpH state established '( sport = :18080 or dport = :18080 )' > "$PROF/split.ss"
  # The fds each epoll instance of the server watches: one per runtime.
  for f in /proc/"$P"/fd/*; do
    if [ "$(readlink "$f")" = "anon_inode:[eventpoll]" ]; then
      echo "EPOLL $(basename "$f")"
      grep -o 'tfd: *[0-9]*' "/proc/$P/fdinfo/$(basename "$f")" || true
    fi
  done > "$PROF/split.epoll"
  wait "$W"
  python3 - "$PROF" <<'PY'
import collections, re, sys
prof = sys.argv[1]
rps = float(re.search(r'Requests/sec:\s*([\d.]+)', open(f'{prof}/split.wrk').read()).group(1))
thread_of_fd = {}
for line in open(f'{prof}/split.connect'):
    m = re.match(r'(\d+)\s+connect\((\d+),.*htons\(18080\)', line)
    if m:
        thread_of_fd[int(m.group(2))] = int(m.group(1))
wrk_thread_of_port, server_port_of_fd = {}, {}
for line in open(f'{prof}/split.ss'):
    parts = line.split()
    local, peer = parts[2], parts[3]
    m = re.search(r'\("([^"]+)",pid=\d+,fd=(\d+)\)', line)
    if not m:
        continue
    name, fd = m.group(1), int(m.group(2))
    if name == 'wrk' and peer.endswith(':18080'):
        wrk_thread_of_port[int(local.rsplit(':', 1)[1])] = thread_of_fd.get(fd)
    elif local.endswith(':18080'):
        server_port_of_fd[fd] = int(peer.rsplit(':', 1)[1])
groups, seen = [], set()
for line in open(f'{prof}/split.epoll'):
    if line.startswith('EPOLL'):
        groups.append([])
    else:
        groups[-1].append(int(line.split(':')[1]))
threads = sorted({t for t in wrk_thread_of_port.values() if t})
split = []
for fds in groups:
    ports = tuple(sorted(server_port_of_fd[f] for f in fds if f in server_port_of_fd))
    if not ports or ports in seen:  # a runtime may show one instance twice
        continue
    seen.add(ports)
    count = collections.Counter(wrk_thread_of_port.get(p) for p in ports)
    split.append('/'.join(str(count.get(t, 0)) for t in threads))
print(f"{rps:9.0f} req/s   per serving thread, connections from wrk thread A/B: {'  '.join(split)}")
PY
done
