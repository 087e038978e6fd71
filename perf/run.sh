#!/usr/bin/env bash
# Runs the loopback comparisons pinned to one core and split over two:
# xtmp-tokio's RTT bench (XTMP vs raw TCP/UDP) and xtmp-perf (XTMP vs
# rustls: handshake and bulk). Needs `taskset` (util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --manifest-path perf/Cargo.toml
for mode in pinned split; do
    if [ "$mode" = pinned ]; then pin=(taskset -c 0); workers=1; else pin=(); workers=2; fi
    echo "=== $mode ==="
    XTMP_BENCH_WORKERS=$workers "${pin[@]}" cargo bench -q -p xtmp-tokio --features aws-lc --bench loopback
    XTMP_PERF_WORKERS=$workers "${pin[@]}" perf/target/release/xtmp-perf
done
