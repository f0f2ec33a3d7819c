#!/usr/bin/env bash
# Runs the flight-plan example: a private network namespace (loopback only, multicast on),
# `squall serve` with examples/flight-plans/squall.toml, the owner/backup/consoles program, the
# audit replay; then stops squall and deletes the namespace. Needs root (ip netns).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p squall-broker --bin squall -p squall-examples --bin flight-plans
TARGET="${CARGO_TARGET_DIR:-target}/debug"
NS="squall-flights-$$"
DATA="$(mktemp -d)"
ip netns add "$NS"
cleanup() { kill "${SQUALL_PID:-0}" 2>/dev/null || true; wait 2>/dev/null || true; ip netns del "$NS"; rm -rf "$DATA"; }
trap cleanup EXIT
ip -n "$NS" link set lo up
ip -n "$NS" link set lo multicast on
ip netns exec "$NS" "$TARGET/squall" serve --config examples/flight-plans/squall.toml --data-dir "$DATA" &
SQUALL_PID=$!
sleep 2
ip netns exec "$NS" "$TARGET/flight-plans" http://127.0.0.1:8080
