#!/usr/bin/env bash
# HTTP API load run (docs/BENCHMARKS.md, "HTTP API"): builds the release binary, starts
# `squall serve` on a temporary data dir and a free port, runs `squall bench http` against it
# (phases in one run: healthz = HTTP round-trip floor, the baseline; put-volatile; put-durable
# with group commit; get-latest), prints a Markdown table of medians, and stops the node.
# Usage: broker/bench/http.sh [extra `squall bench http` flags, e.g. --writers 64 --duration-s 5]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p squall-broker --bin squall
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release/squall"
data="$(mktemp -d)"
log="$data/serve.log"
"$bin" serve --data-dir "$data/node" --http-listen 127.0.0.1:0 >"$log" 2>&1 &
pid=$!
cleanup() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  grep -q "squall: ready" "$log" && break
  sleep 0.1
done
addr="$(sed -n 's/^squall: http listening on \([^ ]*\).*/\1/p' "$log")"
[ -n "$addr" ] || { cat "$log"; echo "squall did not start" >&2; exit 1; }
echo "== $(date -u +%FT%TZ), $(nproc) vCPU, $(uname -r), node at $addr, data in $data (same disk as the repo)"
"$bin" --server "http://$addr" bench http "$@"
