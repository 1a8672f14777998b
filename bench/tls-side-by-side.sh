#!/usr/bin/env bash
# Measures what TLS costs: the same benchmark session over a plaintext listener and over an SSL
# listener of the same broker binary, alternating (plaintext, ssl, plaintext, ...), each session
# on a fresh broker and data directory; prints one JSON line per benchmark run prefixed with
# `plaintext` or `ssl`. Compare medians of the pairs (docs/benchmarks.md, "TLS").
#
#   bench/tls-side-by-side.sh BROKER_BIN PAIRS > results.jsonl
#
# Needs `causeway-bench` built with librdkafka's TLS (cargo build --release -p causeway-bench)
# and makes its certificates with `BROKER_BIN certs init`.
set -euo pipefail

bin=${1:?broker binary}
pairs=${2:-3}
bench=${BENCH_BIN:-target/release/causeway-bench}
plain_port=39192
tls_port=39193
http=39180
certs=$(mktemp -d)
trap 'rm -rf "$certs"' EXIT
"$bin" certs init --dir "$certs" --regions bench >/dev/null

session() {
    local label=$1 port=$2 dir pid
    shift 2
    dir=$(mktemp -d)
    "$bin" --data-dir "$dir" --kafka-listen 127.0.0.1:$plain_port --http-listen 127.0.0.1:$http \
        --listener "TLS=ssl://127.0.0.1:$tls_port" \
        --ssl-certificate-file "$certs/bench.pem" --ssl-private-key-file "$certs/bench.key" \
        >"$dir.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$tls_port) 2>/dev/null && break
        sleep 0.1
    done
    local common=(--brokers 127.0.0.1:$port --broker-pid "$pid" --json "$@")
    {
        "$bench" produce --records 3000000 --record-bytes 100 "${common[@]}"
        "$bench" produce --topic bench-1k --records 1000000 --record-bytes 1024 "${common[@]}"
        "$bench" consume --topic bench-1k --records 1000000 --record-bytes 1024 "${common[@]}"
    } 2>/dev/null | grep '^{' | sed "s/^/$label /"
    kill -TERM "$pid"
    wait "$pid" || true
    rm -rf "$dir" "$dir.log"
}

for _ in $(seq "$pairs"); do
    session plaintext $plain_port
    session ssl $tls_port -X security.protocol=SSL -X "ssl.ca.location=$certs/ca.pem"
done
