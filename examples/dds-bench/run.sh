#!/usr/bin/env bash
# The DDS benchmark of issue 5, in one run, in a private network namespace (loopback only):
#  1. Cyclone's ddsperf, native C, pub→sub throughput and ping→pong round trip (reference);
#  2. dds-bench direct: rustdds writer → rustdds reader on one topic;
#  3. dds-bench through Squall: rustdds writer → BenchIn → squall serve (stateless pool) →
#     Squall re-publishes on BenchOut → rustdds reader;
# for 64 B and 16 KiB samples, RELIABLE. Raw outputs go to $OUT (default target/dds-bench).
# Needs root (ip netns) and cyclonedds-tools (ddsperf).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS="${SECS:-5}"
OUT="${OUT:-${CARGO_TARGET_DIR:-target}/dds-bench}"
mkdir -p "$OUT"
cargo build -q --release -p squall-broker --bin squall -p squall-examples --bin dds-bench
BIN="${CARGO_TARGET_DIR:-target}/release"
NS="squall-bench-$$"
DATA="$(mktemp -d)"
ip netns add "$NS"
cleanup() { if [ -n "${SQUALL_PID:-}" ]; then kill "$SQUALL_PID" 2>/dev/null || true; fi; wait 2>/dev/null || true; ip netns del "$NS"; rm -rf "$DATA"; }
trap cleanup EXIT
ip -n "$NS" link set lo up
ip -n "$NS" link set lo multicast on
X="ip netns exec $NS"
export CYCLONEDDS_URI='<General><Interfaces><NetworkInterface name="lo"/></Interfaces></General>'
echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
for size in 64 16k; do
    echo "== ddsperf (Cyclone, native) size $size"
    $X timeout $((SECS + 10)) ddsperf -D $((SECS + 2)) -k all sub > "$OUT/ddsperf-sub-$size.txt" 2>&1 &
    sleep 1
    $X timeout $((SECS + 5)) ddsperf -D "$SECS" -k all pub size "$size" > "$OUT/ddsperf-pub-$size.txt" 2>&1 || true
    wait || true
    $X timeout $((SECS + 10)) ddsperf -D $((SECS + 2)) pong > "$OUT/ddsperf-pong-$size.txt" 2>&1 &
    sleep 1
    $X timeout $((SECS + 5)) ddsperf -D "$SECS" ping size "$size" > "$OUT/ddsperf-ping-$size.txt" 2>&1 || true
    wait || true
    tail -n 3 "$OUT/ddsperf-sub-$size.txt" "$OUT/ddsperf-ping-$size.txt"
done
for size in 64 16384; do
    echo "== dds-bench direct size $size"
    $X "$BIN/dds-bench" --in Bench --out Bench --size "$size" --secs "$SECS" | tee "$OUT/direct-$size.json"
done
$X "$BIN/squall" serve --config examples/dds-bench/squall.toml --data-dir "$DATA" > "$OUT/squall.log" 2>&1 &
SQUALL_PID=$!
sleep 2
for size in 64 16384; do
    echo "== dds-bench through Squall size $size"
    $X "$BIN/dds-bench" --in BenchIn --out BenchOut --size "$size" --secs "$SECS" | tee "$OUT/squall-$size.json"
done
$X curl -s http://127.0.0.1:8080/metrics | grep '^squall_dds_' | tee "$OUT/squall-metrics.txt" || true
