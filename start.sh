#!/usr/bin/env bash
# Fresh-machine start: installs what the build needs (clang and libclang-dev for RocksDB's
# bindings, kcat for trying the broker), then builds and starts the broker on its defaults
# (Kafka on 127.0.0.1:9092, HTTP on 127.0.0.1:8080, data under ./data). Extra arguments go to
# the broker, e.g. ./start.sh --num-partitions 6
set -euo pipefail
cd "$(dirname "$0")"
source .ci/install-deps.sh
exec cargo run --release --bin causeway -- "$@"
