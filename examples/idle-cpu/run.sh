#!/usr/bin/env bash
# Idle CPU of `squall serve` with a few idle Kafka consumers (issue 4, broker/src/node.rs):
# starts the broker on a temporary data dir and free ports, writes one record, starts
# CONSUMERS kcat consumers long-polling at the end of the partition, lets them settle, and
# reads the broker's utime+stime from /proc/<pid>/stat over SECONDS seconds.
#
# Usage: examples/idle-cpu/run.sh BIN [BIN ...]   (several binaries: measured interleaved,
#        ROUNDS times each, so an A/B of two builds shares the machine's load)
# Env:   CONSUMERS (4), SECONDS_IDLE (10), ROUNDS (2)
set -euo pipefail
CONSUMERS=${CONSUMERS:-4}
SECONDS_IDLE=${SECONDS_IDLE:-10}
ROUNDS=${ROUNDS:-2}
TCK=$(getconf CLK_TCK)

measure() {
  local bin=$1 dir pid addr t0 t1 pids=()
  dir=$(mktemp -d)
  "$bin" serve --data-dir "$dir/data" --http-listen 127.0.0.1:0 --kafka-listen 127.0.0.1:0 \
    >"$dir/out" 2>&1 &
  pid=$!
  for _ in $(seq 1 200); do
    addr=$(grep -o 'kafka listening on [0-9.:]*' "$dir/out" | awk '{print $4}' || true)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  if [ -z "$addr" ]; then echo "no kafka address"; cat "$dir/out"; kill "$pid"; exit 1; fi
  echo x | kcat -P -b "$addr" -t idle -p 0 2>/dev/null
  for _ in $(seq 1 "$CONSUMERS"); do
    kcat -C -q -b "$addr" -t idle -p 0 -o end >/dev/null 2>&1 &
    pids+=($!)
  done
  sleep 3
  t0=$(awk '{print $14+$15}' /proc/$pid/stat)
  sleep "$SECONDS_IDLE"
  t1=$(awk '{print $14+$15}' /proc/$pid/stat)
  kill "${pids[@]}" 2>/dev/null || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
  awk -v d=$((t1 - t0)) -v s="$SECONDS_IDLE" -v t="$TCK" -v b="$bin" \
    'BEGIN { printf "%-40s %6.2f %% of one core (%d ticks in %d s)\n", b, 100*d/(s*t), d, s }'
}

echo "idle CPU, $CONSUMERS idle kcat consumers, ${SECONDS_IDLE}s, load: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do measure "$bin"; done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
