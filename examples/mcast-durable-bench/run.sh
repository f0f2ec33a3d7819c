#!/bin/bash
# Ordered multicast: durable mode (FilePersist, fsync group commit) beside volatile mode, in
# the same run. Three squall-mcast-member processes on 127.0.0.1, all sending as fast as the
# window (256) allows, 1 s warm-up + 4 s measured; the phases alternate volatile/durable
# REPS times per size so both see the same load. Data dirs go under $CARGO_TARGET_DIR/tmp
# (a real disk: fsync must cost what it costs), removed afterwards.
#
#   examples/mcast-durable-bench/run.sh [REPS] [SIZES...]     (default: 3 runs of 100 1024)
#
# Per phase it prints: mean msgs/s delivered per member, worst p50/p99 delivery latency (µs,
# send -> delivery at the other members), and for durable phases the group commits (fsyncs)
# per member and messages delivered per fsync.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${1:-3}; shift || true
SIZES=${*:-100 1024}
T=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p squall-integration-tests --bin squall-mcast-member
B=$T/release/squall-mcast-member
D=$T/tmp/mcast-durable-bench
echo "load: $(uptime)"
phase() {
  local size=$1 mode=$2
  rm -rf "$D"; mkdir -p "$D"
  local base=$((40000 + RANDOM % 20000))
  local pids=()
  for i in 1 2 3; do
    local peers=()
    for j in 1 2 3; do [ "$j" != "$i" ] && peers+=(--peer "$j=127.0.0.1:$((base + j))"); done
    local extra=()
    [ "$mode" = durable ] && extra=(--durable --data-dir "$D/m$i")
    sleep 30 | "$B" --id "$i" --listen "127.0.0.1:$((base + i))" "${peers[@]}" --size "$size" \
      --rate 0 --window 256 --warmup-ms 1000 --measure-ms 4000 --drain-ms 1000 \
      --linger-ms 500 "${extra[@]}" > "$D/out$i" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
  grep -h '^RESULT' "$D"/out* | awk -v size="$size" -v mode="$mode" '
    { for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
      n++; rate += f["msgs_per_s"]; if (f["p50_us"] > p50) p50 = f["p50_us"];
      if (f["p99_us"] > p99) p99 = f["p99_us"]; g += f["persist_groups"]; c += f["count"] }
    END { if (n != 3) { print size, mode, "FAILED: " n " results"; exit }
          per = (g > 0) ? sprintf("%.0f", c / g) : "-";
          printf "size=%s mode=%-8s msgs_per_s=%.0f p50_us=%d p99_us=%d fsyncs_per_member=%.0f msgs_per_fsync=%s\n",
                 size, mode, rate / n, p50, p99, g / n, per }'
  rm -rf "$D"
}
for size in $SIZES; do
  for r in $(seq 1 "$REPS"); do
    phase "$size" volatile
    phase "$size" durable
  done
done
echo "load: $(uptime)"
