#!/usr/bin/env bash
# Interleaved A/B of two squall builds with the Kafka bench, for a loaded machine where one
# full run.sh per build would compare different moments: each round runs, seconds apart, the
# null sink (the client's own ceiling), NEW volatile, NEW durable, OLD durable, OLD volatile
# (a fresh server per row; 1 KiB records, linger.ms 5, 3 partitions) and prints the log's
# fsync count after each durable row.
#   OLD=/path/to/old/squall examples/kafka-bench/ab.sh     # NEW defaults to $T/release/squall
#   CLIENT=wire OLD=… examples/kafka-bench/ab.sh   # the same rounds with `kafka_bench wire` (NOT
#                                                   # librdkafka: the broker's own ceiling)
# Needs the release kafka_bench (run.sh builds it) and curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
T="${CARGO_TARGET_DIR:-$PWD/target}"
KB="$T/release/examples/kafka_bench"
NEW="${NEW:-$T/release/squall}"
OLD="${OLD:?set OLD to the squall binary to compare against}"
ROUNDS="${ROUNDS:-3}"
RECORDS="${RECORDS:-200000}"
KPORT="${KPORT:-19192}"
HPORT="${HPORT:-18180}"
SPORT="${SPORT:-19393}"
W="$(mktemp -d -p "${TMPDIR:-/tmp}" kafka-ab.XXXXXX)"
SP=""
NP=""
cleanup() {
    [ -n "$SP" ] && kill "$SP" 2>/dev/null && wait "$SP" 2>/dev/null
    [ -n "$NP" ] && kill "$NP" 2>/dev/null && wait "$NP" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT
"$KB" null-sink --listen "127.0.0.1:$SPORT" 2>/dev/null &
NP=$!
sleep 0.5
start() {
    mkdir -p "$W/d"
    "$1" serve --data-dir "$W/d" --kafka-listen "127.0.0.1:$KPORT" --http-listen "127.0.0.1:$HPORT" \
        >/dev/null 2>&1 &
    SP=$!
    sleep 1.2
}
stop() { kill "$SP"; wait "$SP" 2>/dev/null || true; SP=""; rm -rf "$W/d"; }
fsyncs() { curl -fs "http://127.0.0.1:$HPORT/metrics" | awk '$1=="squall_log_fsyncs"{print $2}'; }
CLIENT="${CLIENT:-rdkafka}"
if [ "$CLIENT" = wire ]; then
    MODE=wire
    P=(--partitions 3 --size 1024 --records "$RECORDS")
else
    MODE=produce
    P=(--partitions 3 --linger-ms 5 --size 1024 --records "$RECORDS")
fi
echo "client $CLIENT"
for r in $(seq 1 "$ROUNDS"); do
    echo "round $r load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$KB" "$MODE" --bootstrap "127.0.0.1:$SPORT" "${P[@]}" --label null-sink 2>/dev/null | grep ^result
    start "$NEW"
    "$KB" "$MODE" --bootstrap "127.0.0.1:$KPORT" "${P[@]}" --topic-config squall.durable=false \
        --label new-volatile 2>/dev/null | grep ^result
    stop
    start "$NEW"
    "$KB" "$MODE" --bootstrap "127.0.0.1:$KPORT" "${P[@]}" --label new-durable 2>/dev/null | grep ^result
    echo "fsyncs $(fsyncs)"
    stop
    start "$OLD"
    "$KB" "$MODE" --bootstrap "127.0.0.1:$KPORT" "${P[@]}" --label old-durable 2>/dev/null | grep ^result
    echo "fsyncs $(fsyncs)"
    stop
    start "$OLD"
    "$KB" "$MODE" --bootstrap "127.0.0.1:$KPORT" "${P[@]}" --topic-config squall.durable=false \
        --label old-volatile 2>/dev/null | grep ^result
    stop
done
