#!/usr/bin/env bash
# make bench: a short side-by-side run of roomcast and its two peers, the
# Socket.IO peer and Centrifugo (built once from its Go module into the user
# cache folder by the tool itself), on this machine, written into
# docs/performance.md between the markers "<!-- make bench: begin -->" and
# "<!-- make bench: end -->", and the fan-out plot into
# docs/performance-fanout.png. Every mode runs the three servers one after the
# other and prints one table with the ratios roomcast/peer; the fan-out at
# 20,000 deliveries/s runs twice, 30 s each, unpinned and pinned (-pin: the server on
# core 0 with GOMAXPROCS=1, the tool on core 1), and a third time when perf
# can see the kernel here, with -perf: each server's CPU per delivery split
# into user space, the kernel's send, the receive the loopback runs in its
# context (its clients') and other kernel. Sizes are kept small enough
# for a 2-core machine and ulimit -n 20000; BENCH_SOCKETS overrides them.
# Then, against roomcast and the Socket.IO peer (Centrifugo has neither):
# 1,000 sockets on Engine.IO long-polling, held idle and in a fan-out of
# 2,000 deliveries/s; and a fan-out of 1 KB-padded messages at 5,000
# deliveries/s, plain and with permessage-deflate, for the bytes per
# delivery and the CPU compression costs.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=bin/roomcast
sockets=${BENCH_SOCKETS:-5000}
rooms=$((sockets / 100))
# 20,000 deliveries/s: each message reaches sockets/rooms = 100 members
rate=$((20000 * rooms / sockets))
# The steady fan-out's window: longer than the servers' keepalive period
# (25 s for all three), so that each pays its pings once per socket in it,
# and long enough for a cost that grows over a run to show (Centrifugo's
# CPU per second climbed by a third over its first 20 s here; roomcast's
# stayed flat). BENCH_STEADY overrides it.
steady=${BENCH_STEADY:-30s}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# -perf's recordings, kept for perf report (tmp/ is ignored by git)
perfdir=tmp/bench-perf

# perf_ok: perf is installed and may record the kernel's frames of another
# process (root, or kernel.perf_event_paranoid at most 1); perf_why if not.
perf_ok() {
  if ! command -v perf >/dev/null; then
    perf_why="perf is not installed"
    return 1
  fi
  local paranoid
  paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo 2)
  if [ "$(id -u)" != 0 ] && [ "$paranoid" -gt 1 ]; then
    perf_why="kernel.perf_event_paranoid is $paranoid and this is not root"
    return 1
  fi
}

{
  echo "Written by \`make bench\` on $(date -u +%Y-%m-%d) at commit $(git rev-parse --short HEAD) ($(nproc) cores, $(go version | cut -d' ' -f3)); roomcast, the Socket.IO peer and Centrifugo v6.9.1, each started fresh."
  echo
  "$bin" bench fanout -compare -sockets "$sockets" -rooms "$rooms" -rate "$rate" -duration "$steady" -markdown
  echo
  "$bin" bench fanout -compare -pin -sockets "$sockets" -rooms "$rooms" -rate "$rate" -duration "$steady" -markdown
  echo
  if perf_ok; then
    "$bin" bench fanout -compare -sockets "$sockets" -rooms "$rooms" -rate "$rate" -duration "$steady" -perf "$perfdir" -markdown
  else
    echo "(The split of each server's CPU per delivery, \`-perf\`, was skipped: $perf_why.)"
  fi
  echo
  "$bin" bench fanout -compare -ramp -sockets "$sockets" -rooms "$rooms" -rate 50 -ramp-factor 2 \
    -max-p99 1s -duration 4s -max-steps 5 -plot docs/performance-fanout.png -markdown
  echo
  "$bin" bench idle -compare -sockets "$sockets" -rooms "$rooms" -markdown
  echo
  "$bin" bench storm -compare -sockets "$sockets" -rooms "$rooms" -markdown
  echo
  "$bin" bench idle -compare -peers socketio -transport polling -sockets 1000 -rooms 10 -markdown
  echo
  "$bin" bench fanout -compare -peers socketio -transport polling -sockets 1000 -rooms 10 -rate 20 -duration 10s -markdown
  echo
  "$bin" bench fanout -compare -peers socketio -sockets 1000 -rooms 10 -rate 50 -pad 1000 -duration 10s -markdown
  echo
  "$bin" bench fanout -compare -peers socketio -deflate -sockets 1000 -rooms 10 -rate 50 -pad 1000 -duration 10s -markdown
  echo
  "$bin" bench resync -stream-msgs "${BENCH_STREAM:-100000}" -rooms 1000 -markdown
} > "$out"

doc=docs/performance.md
begin='<!-- make bench: begin -->'
end='<!-- make bench: end -->'
grep -qF "$begin" "$doc" || printf '\n## The latest `make bench`\n\n%s\n%s\n' "$begin" "$end" >> "$doc"
awk -v begin="$begin" -v end="$end" -v body="$out" '
  $0 == begin { print; while ((getline line < body) > 0) print line; skip = 1; next }
  $0 == end   { skip = 0 }
  !skip       { print }
' "$doc" > "$doc.new" && mv "$doc.new" "$doc"
echo "wrote $doc and docs/performance-fanout.png"
