#!/usr/bin/env bash
# Runs the same benchmark session against two broker binaries, alternating (baseline, candidate,
# baseline, ...), each session on a fresh broker and data directory, and prints one JSON line
# per benchmark run prefixed with the binary's label. Machines are noisy: compare medians of
# the pairs, never single runs (docs/benchmarks.md, "Hardening re-measure").
#
#   bench/side-by-side.sh BASELINE_BIN CANDIDATE_BIN PAIRS > results.jsonl
#
# With SESSION=produce, a session is only the two produce runs (more pairs in the same time
# when ingest is what changed).
#
# Needs `causeway-bench` built: cargo build --release -p causeway-bench.
set -euo pipefail

baseline=${1:?baseline broker binary}
candidate=${2:?candidate broker binary}
pairs=${3:-3}
bench=${BENCH_BIN:-target/release/causeway-bench}
port=39192
http=39180

session() {
    local label=$1 bin=$2 dir pid
    dir=$(mktemp -d)
    "$bin" --data-dir "$dir" --kafka-listen 127.0.0.1:$port --http-listen 127.0.0.1:$http \
        >"$dir.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
        sleep 0.1
    done
    local common=(--brokers 127.0.0.1:$port --broker-pid "$pid" --json)
    {
        "$bench" produce --records 3000000 --record-bytes 100 "${common[@]}"
        "$bench" produce --topic bench-1k --records 1000000 --record-bytes 1024 "${common[@]}"
        if [ "${SESSION:-all}" != produce ]; then
            "$bench" consume --topic bench-1k --records 1000000 --record-bytes 1024 "${common[@]}"
            "$bench" e2e --topic bench-e2e --rate 20000 --duration-s 10 "${common[@]}"
        fi
    } 2>/dev/null | grep '^{' | sed "s/^/$label /"
    kill -TERM "$pid"
    wait "$pid" || true
    rm -rf "$dir" "$dir.log"
}

for _ in $(seq "$pairs"); do
    session baseline "$baseline"
    session candidate "$candidate"
done
