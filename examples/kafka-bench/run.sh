#!/usr/bin/env bash
# The Kafka benchmark of issue 4, in one run, so every ratio compares numbers taken under the same
# machine load:
#   disk       raw append + fdatasync of the same bytes (1 MiB per sync, and at the broker's
#              measured bytes per group-commit fsync; and appends with fdatasync running
#              alongside them, the shape of an overlapped group commit)
#   squall     durable pool (group commit), librdkafka acks=all, 1 KiB and 100 B, peak rate;
#              1 KiB with message.max.bytes=4 MB (librdkafka's default 1 MB request limit puts
#              one ~1 MB batch in each request); 1 KiB paced at half the peak rate (ack latency)
#   nats       NATS JetStream (Debian's nats-server, one replica, file storage), async publish of
#              the same 1 KiB payloads with async-nats (examples/nats-bench)
#   volatile   squall pool with squall.durable=false, 1 KiB, vs a raw loopback TCP stream of the
#              same bytes
#   null sink  the same librdkafka producer against `kafka_bench null-sink`, a broker that
#              acknowledges and discards: what this client can reach on this machine at all
#   e2e        produce → consume latency on a durable pool, one record per ms
#   tcp-retain the TCP stream again, but received into fresh 1 MiB buffers that are all kept, as
#              a volatile pool keeps what it is sent (first-touch page faults included)
#   -p2        the same with 2 librdkafka producers in one bench process (aggregate MB/s, merged
#              latencies): whether the broker takes more than one producer gives
#   wire-*     NOT librdkafka: `kafka_bench wire`, a lean wire-level producer resending one
#              prebuilt valid 1000-record batch per Produce request, 5 requests in flight: the
#              broker's own ceiling, apart from the client's (against squall durable and
#              volatile and the null sink); latency there is per request, not per record
# and prints one table with the ratios and goals. Raw outputs go to $OUT.
#
# Needs: nats-server (apt-get install nats-server), curl, /usr/bin/time (package time). Run from anywhere:
#   examples/kafka-bench/run.sh            # RECORDS=200000 1 KiB records per run by default
#   NO_BUILD=1 SQUALL_BIN=/path/to/squall examples/kafka-bench/run.sh   # another squall build
set -euo pipefail
cd "$(dirname "$0")/../.."
T="${CARGO_TARGET_DIR:-$PWD/target}"
OUT="${OUT:-$T/kafka-bench}"
RECORDS="${RECORDS:-200000}"             # 1 KiB records per produce run
SMALL_RECORDS="${SMALL_RECORDS:-1000000}" # 100 B records per produce run
E2E="${E2E:-2000}"
PARTITIONS="${PARTITIONS:-3}"
LINGER_MS="${LINGER_MS:-5}"
KPORT="${KPORT:-19092}"
HPORT="${HPORT:-18080}"
NPORT="${NPORT:-14222}"
SPORT="${SPORT:-19093}"
command -v nats-server >/dev/null || { echo "nats-server not found: apt-get install nats-server" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl not found" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time not found: apt-get install time" >&2; exit 1; }
export RUST_BACKTRACE=0
mkdir -p "$OUT"

if [ -z "${NO_BUILD:-}" ]; then # NO_BUILD=1 reuses the binaries already in $T/release
    echo "== building (release)" >&2
    cargo build -q --release -p squall-broker --bin squall -p squall-examples --example kafka_bench
    CARGO_TARGET_DIR="$T" cargo build -q --release --manifest-path examples/nats-bench/Cargo.toml
fi
SQUALL="${SQUALL_BIN:-$T/release/squall}" # SQUALL_BIN=… benchmarks another build (e.g. an older one)
KB="$T/release/examples/kafka_bench"
NB="$T/release/nats-bench"

DATA="$(mktemp -d -p "$OUT" data.XXXXXX)"
SQUALL_PID=""
NATS_PID=""
SINK_PID=""
cleanup() {
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
    [ -n "$SQUALL_PID" ] && kill "$SQUALL_PID" 2>/dev/null && wait "$SQUALL_PID" 2>/dev/null
    [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null && wait "$NATS_PID" 2>/dev/null
    rm -rf "$DATA"
}
trap cleanup EXIT

RES="$OUT/results.tsv"
: > "$RES"
# CPU ticks (user + system) used so far by the running server (squall or nats-server), or "-".
server_ticks() {
    local p="${SINK_PID:-${SQUALL_PID:-$NATS_PID}}"
    if [ -n "$p" ]; then awk '{print $14 + $15}' "/proc/$p/stat"; else echo "-"; fi
}
# Runs a bench command and appends its `result` fields (label, records/s, MB/s, p50, p99,
# p99.9) plus the CPU seconds the bench client and the server used during it to $RES.
run() {
    local s0 s1
    s0="$(server_ticks)"
    /usr/bin/time -f '%U %S' -o "$OUT/time.txt" "$@" | tee -a "$OUT/raw.log" |
        grep '^result' | cut -f2- > "$OUT/last.tsv"
    s1="$(server_ticks)"
    printf '%s\t%s\t%s\n' "$(cat "$OUT/last.tsv")" \
        "$(awk '{ printf "%.2f", $1 + $2 }' "$OUT/time.txt")" \
        "$(awk -v a="$s0" -v b="$s1" -v hz="$(getconf CLK_TCK)" \
            'BEGIN { if (a == "-") print "-"; else printf "%.2f", (b - a) / hz }')" |
        tee -a "$RES" >&2
}
field() { awk -F'\t' -v l="$1" -v c="$2" '$1==l {print $c}' "$RES"; }
wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}
# fsyncs and log bytes of the squall node, from /metrics.
log_counters() {
    curl -fs "http://127.0.0.1:$HPORT/metrics" |
        awk '$1=="squall_log_fsyncs"{f=$2} $1=="squall_log_bytes"{b=$2} END{printf "%d %d\n", f, b}'
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
BYTES=$((RECORDS * 1024))

echo "== disk: raw append + fdatasync, 1 MiB per sync" >&2
run "$KB" raw-append --dir "$DATA" --total-bytes "$BYTES" --chunk-bytes 1048576 --label disk-1m

echo "== squall serve" >&2
"$SQUALL" serve --data-dir "$DATA/squall" --kafka-listen "127.0.0.1:$KPORT" \
    --http-listen "127.0.0.1:$HPORT" > "$OUT/squall.log" 2>&1 &
SQUALL_PID=$!
wait_port "$KPORT"
wait_port "$HPORT"
B="127.0.0.1:$KPORT"
COMMON=(--bootstrap "$B" --partitions "$PARTITIONS" --linger-ms "$LINGER_MS")

echo "== squall durable 1 KiB, peak" >&2
read -r F0 L0 < <(log_counters)
run "$KB" produce "${COMMON[@]}" --size 1024 --records "$RECORDS" --label squall-durable-1k
read -r F1 L1 < <(log_counters)
FSYNCS=$((F1 - F0))
PER_FSYNC=$(( FSYNCS > 0 ? (L1 - L0) / FSYNCS : 1048576 ))
echo "   group commit: $FSYNCS fsyncs, $((L1 - L0)) log bytes, $PER_FSYNC bytes per fsync" >&2

echo "== squall durable 1 KiB, peak, 2 librdkafka producers" >&2
run "$KB" produce "${COMMON[@]}" --size 1024 --records "$RECORDS" --producers 2 --label squall-durable-1k-p2
echo "== squall durable 1 KiB, wire-level producer (not librdkafka), 5 requests in flight" >&2
read -r F0 L0 < <(log_counters)
run "$KB" wire --bootstrap "$B" --partitions "$PARTITIONS" --size 1024 --records "$RECORDS" --label wire-durable-1k
read -r F1 L1 < <(log_counters)
PER_FSYNC_WIRE=$(( (F1 - F0) > 0 ? (L1 - L0) / (F1 - F0) : 0 ))
echo "   group commit: $((F1 - F0)) fsyncs, $PER_FSYNC_WIRE bytes per fsync" >&2

echo "== disk: raw append + fdatasync at the broker's $PER_FSYNC bytes per sync" >&2
run "$KB" raw-append --dir "$DATA" --total-bytes "$BYTES" --chunk-bytes "$PER_FSYNC" --label disk-gc
echo "== disk: raw append of 1 MiB chunks while fdatasync runs alongside (overlapped group commit)" >&2
run "$KB" raw-append --dir "$DATA" --total-bytes "$BYTES" --chunk-bytes 1048576 --overlap --label disk-overlap

echo "== squall durable 1 KiB, peak, requests up to 4 MB (one batch per partition per request)" >&2
read -r F0 L0 < <(log_counters)
run "$KB" produce "${COMMON[@]}" --size 1024 --records "$RECORDS" \
    --producer-config message.max.bytes=4000000 --label squall-durable-1k-4mreq
read -r F1 L1 < <(log_counters)
PER_FSYNC_4M=$(( (F1 - F0) > 0 ? (L1 - L0) / (F1 - F0) : 0 ))
echo "   group commit: $((F1 - F0)) fsyncs, $PER_FSYNC_4M bytes per fsync" >&2

echo "== squall durable 100 B, peak" >&2
run "$KB" produce "${COMMON[@]}" --size 100 --records "$SMALL_RECORDS" --label squall-durable-100

PEAK="$(field squall-durable-1k 2)"
HALF=$(( ${PEAK%.*} / 2 ))
echo "== squall durable 1 KiB at half the peak rate ($HALF records/s)" >&2
run "$KB" produce "${COMMON[@]}" --size 1024 --records $((RECORDS / 2)) --rate "$HALF" --label squall-durable-1k-half

echo "== squall durable 1 KiB at half the peak rate, linger.ms 0" >&2
run "$KB" produce --bootstrap "$B" --partitions "$PARTITIONS" --linger-ms 0 --size 1024 \
    --records $((RECORDS / 2)) --rate "$HALF" --label squall-durable-1k-half-linger0

echo "== squall durable 1 KiB at half the peak rate, linger.ms 1" >&2
run "$KB" produce --bootstrap "$B" --partitions "$PARTITIONS" --linger-ms 1 --size 1024 \
    --records $((RECORDS / 2)) --rate "$HALF" --label squall-durable-1k-half-linger1

echo "== squall volatile 1 KiB, peak" >&2
run "$KB" produce "${COMMON[@]}" --size 1024 --records "$RECORDS" \
    --topic-config squall.durable=false --label squall-volatile-1k
run "$KB" produce "${COMMON[@]}" --size 1024 --records "$RECORDS" --producers 2 \
    --topic-config squall.durable=false --label squall-volatile-1k-p2
run "$KB" wire --bootstrap "$B" --partitions "$PARTITIONS" --size 1024 --records "$RECORDS" \
    --topic-config squall.durable=false --label wire-volatile-1k
run "$KB" wire --bootstrap "$B" --partitions "$PARTITIONS" --size 1024 --records "$RECORDS" \
    --connections 2 --topic-config squall.durable=false --label wire-volatile-1k-c2
echo "== loopback TCP, same bytes (median of 5 streams; CPU columns are for all 5)" >&2
run "$KB" raw-tcp --total-bytes "$BYTES" --repeat 5 --label tcp
echo "== loopback TCP into fresh 1 MiB buffers that are kept (what an in-memory broker must touch)" >&2
run "$KB" raw-tcp --total-bytes "$BYTES" --retain-bytes 1048576 --repeat 5 --label tcp-retain
echo "== the same producer against a null sink (acknowledges, discards)" >&2
"$KB" null-sink --listen "127.0.0.1:$SPORT" > "$OUT/null-sink.log" 2>&1 &
SINK_PID=$!
wait_port "$SPORT"
run "$KB" produce --bootstrap "127.0.0.1:$SPORT" --partitions "$PARTITIONS" --linger-ms "$LINGER_MS" --size 1024 --records "$RECORDS" --label null-sink-1k
run "$KB" produce --bootstrap "127.0.0.1:$SPORT" --partitions "$PARTITIONS" --linger-ms "$LINGER_MS" --size 1024 --records "$RECORDS" --producers 2 --label null-sink-1k-p2
run "$KB" wire --bootstrap "127.0.0.1:$SPORT" --partitions "$PARTITIONS" --size 1024 --records "$RECORDS" --label wire-null-sink-1k
kill "$SINK_PID"
wait "$SINK_PID" 2>/dev/null || true
SINK_PID=""

VPEAK="$(field squall-volatile-1k 2)"
VHALF=$(( ${VPEAK%.*} / 2 ))
echo "== squall volatile 1 KiB at half the peak rate ($VHALF records/s)" >&2
run "$KB" produce "${COMMON[@]}" --size 1024 --records $((RECORDS / 2)) --rate "$VHALF" \
    --topic-config squall.durable=false --label squall-volatile-1k-half

run "$KB" produce --bootstrap "$B" --partitions "$PARTITIONS" --linger-ms 0 --size 1024 \
    --records $((RECORDS / 2)) --rate "$VHALF" --topic-config squall.durable=false \
    --label squall-volatile-1k-half-linger0

echo "== end-to-end, durable pool" >&2
run "$KB" e2e --bootstrap "$B" --records "$E2E" --label squall-e2e

kill "$SQUALL_PID"
wait "$SQUALL_PID" 2>/dev/null || true
SQUALL_PID=""

echo "== nats-server (JetStream, file storage)" >&2
cat > "$DATA/nats.conf" <<EOF
listen: 127.0.0.1:$NPORT
jetstream { store_dir: "$DATA/nats", max_file_store: 20G }
EOF
nats-server -c "$DATA/nats.conf" > "$OUT/nats.log" 2>&1 &
NATS_PID=$!
wait_port "$NPORT"
run "$NB" --server "127.0.0.1:$NPORT" --records "$RECORDS" --size 1024 --inflight 512 --label nats-1k
NPEAK="$(field nats-1k 2)"
run "$NB" --server "127.0.0.1:$NPORT" --records $((RECORDS / 2)) --size 1024 --inflight 512 \
    --rate $(( ${NPEAK%.*} / 2 )) --label nats-1k-half
kill "$NATS_PID"
wait "$NATS_PID" 2>/dev/null || true
NATS_PID=""
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
D1K="$(field squall-durable-1k 3)"
cat <<EOF

Kafka face benchmark · $(date -u +%FT%TZ) · $(nproc) cores · load average before $LOAD_BEFORE, after $LOAD_AFTER
librdkafka acks=all, $PARTITIONS partitions, linger.ms $LINGER_MS, $RECORDS × 1 KiB ($SMALL_RECORDS × 100 B) per run; MB = 1e6 B of payload
group commit during the durable 1 KiB run: $FSYNCS fsyncs, $PER_FSYNC log bytes per fsync ($PER_FSYNC_4M with 4 MB requests, $PER_FSYNC_WIRE with the wire-level producer)
rows wire-*: NOT librdkafka (kafka_bench wire: prebuilt 1000-record batches, 5 requests in flight; latency per request) — the broker's ceiling, not a client's result

| run | records/s | MB/s | ack p50 ms | ack p99 ms | ack p99.9 ms | client CPU s | server CPU s |
|---|---|---|---|---|---|---|---|
EOF
awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8 }' "$RES"
cat <<EOF

| goal | measured | ratio | met |
|---|---|---|---|
EOF
goal() { # name ratio threshold
    printf "| %s | %s | %s | %s |\n" "$1" "$2" "$3" \
        "$(awk -v r="$3" -v t="$4" 'BEGIN { print (r != "-" && r + 0 >= t) ? "yes" : "no" }')"
}
goal "durable 1 KiB ≥ 0.5 × disk append (same bytes per fsync)" "$D1K / $(field disk-gc 3) MB/s" "$(ratio "$D1K" "$(field disk-gc 3)")" 0.5
goal "durable 1 KiB vs disk append at 1 MiB per fsync (for reference)" "$D1K / $(field disk-1m 3) MB/s" "$(ratio "$D1K" "$(field disk-1m 3)")" 0.5
goal "durable 1 KiB vs disk append with overlapped fdatasync (for reference)" "$D1K / $(field disk-overlap 3) MB/s" "$(ratio "$D1K" "$(field disk-overlap 3)")" 0.5
goal "durable 1 KiB, 2 librdkafka producers ≥ 0.5 × disk append (same bytes per fsync as the 1-producer run)" "$(field squall-durable-1k-p2 3) / $(field disk-gc 3) MB/s" "$(ratio "$(field squall-durable-1k-p2 3)" "$(field disk-gc 3)")" 0.5
goal "durable 1 KiB, wire-level producer (NOT librdkafka) vs disk append (the broker's ceiling)" "$(field wire-durable-1k 3) / $(field disk-gc 3) MB/s" "$(ratio "$(field wire-durable-1k 3)" "$(field disk-gc 3)")" 0.5
goal "durable 1 KiB ≥ 1.5 × NATS JetStream" "$D1K / $(field nats-1k 3) MB/s" "$(ratio "$D1K" "$(field nats-1k 3)")" 1.5
goal "volatile 1 KiB ≥ 0.35 × loopback TCP" "$(field squall-volatile-1k 3) / $(field tcp 3) MB/s" "$(ratio "$(field squall-volatile-1k 3)" "$(field tcp 3)")" 0.35
goal "volatile 1 KiB, 2 librdkafka producers ≥ 0.35 × loopback TCP" "$(field squall-volatile-1k-p2 3) / $(field tcp 3) MB/s" "$(ratio "$(field squall-volatile-1k-p2 3)" "$(field tcp 3)")" 0.35
goal "volatile 1 KiB, wire-level producer (NOT librdkafka) vs loopback TCP (the broker's ceiling)" "$(field wire-volatile-1k 3) / $(field tcp 3) MB/s" "$(ratio "$(field wire-volatile-1k 3)" "$(field tcp 3)")" 0.35
goal "volatile 1 KiB, wire-level producer, 2 connections vs loopback TCP (the broker's ceiling)" "$(field wire-volatile-1k-c2 3) / $(field tcp 3) MB/s" "$(ratio "$(field wire-volatile-1k-c2 3)" "$(field tcp 3)")" 0.35
goal "loopback TCP into kept fresh memory vs loopback TCP (what keeping the bytes costs)" "$(field tcp-retain 3) / $(field tcp 3) MB/s" "$(ratio "$(field tcp-retain 3)" "$(field tcp 3)")" 0.35
goal "volatile 1 KiB, wire-level producer vs TCP into kept fresh memory (for reference)" "$(field wire-volatile-1k 3) / $(field tcp-retain 3) MB/s" "$(ratio "$(field wire-volatile-1k 3)" "$(field tcp-retain 3)")" 0.35
goal "the wire-level producer against the null sink vs loopback TCP (that client's ceiling)" "$(field wire-null-sink-1k 3) / $(field tcp 3) MB/s" "$(ratio "$(field wire-null-sink-1k 3)" "$(field tcp 3)")" 0.35
goal "the client's own ceiling: null sink vs loopback TCP (for reference)" "$(field null-sink-1k 3) / $(field tcp 3) MB/s" "$(ratio "$(field null-sink-1k 3)" "$(field tcp 3)")" 0.35
goal "2 librdkafka producers' ceiling: null sink vs loopback TCP (for reference)" "$(field null-sink-1k-p2 3) / $(field tcp 3) MB/s" "$(ratio "$(field null-sink-1k-p2 3)" "$(field tcp 3)")" 0.35
goal "volatile 1 KiB vs the same client against a null sink (for reference)" "$(field squall-volatile-1k 3) / $(field null-sink-1k 3) MB/s" "$(ratio "$(field squall-volatile-1k 3)" "$(field null-sink-1k 3)")" 0.35
goal "durable 1 KiB vs the same client against a null sink (for reference)" "$D1K / $(field null-sink-1k 3) MB/s" "$(ratio "$D1K" "$(field null-sink-1k 3)")" 0.5
P99="$(field squall-durable-1k-half 5)"
printf "| durable 1 KiB ack p99 < 5 ms at half the peak rate | %s ms | - | %s |\n" "$P99" \
    "$(awk -v p="$P99" 'BEGIN { print (p + 0 < 5) ? "yes" : "no" }')"
P99="$(field squall-durable-1k-half-linger0 5)"
printf "| durable 1 KiB ack p99 < 5 ms at half the peak rate, linger.ms 0 | %s ms | - | %s |\n" "$P99" \
    "$(awk -v p="$P99" 'BEGIN { print (p + 0 < 5) ? "yes" : "no" }')"
P99="$(field squall-durable-1k-half-linger1 5)"
printf "| durable 1 KiB ack p99 < 5 ms at half the peak rate, linger.ms 1 | %s ms | - | %s |\n" "$P99" \
    "$(awk -v p="$P99" 'BEGIN { print (p + 0 < 5) ? "yes" : "no" }')"
VP99="$(field squall-volatile-1k-half-linger0 5)"
printf "| volatile 1 KiB ack p99 < 5 ms at half the peak rate, linger.ms 0 | %s ms | - | %s |\n" "$VP99" \
    "$(awk -v p="$VP99" 'BEGIN { print (p + 0 < 5) ? "yes" : "no" }')"
VP99="$(field squall-volatile-1k-half 5)"
printf "| volatile 1 KiB ack p99 < 5 ms at half the peak rate | %s ms | - | %s |\n" "$VP99" \
    "$(awk -v p="$VP99" 'BEGIN { print (p + 0 < 5) ? "yes" : "no" }')"
