#!/usr/bin/env bash
# Starts the same three-region topology as docker/compose.yaml (eu, us, ap), as plain processes on
# loopback, for machines without Docker. Writes a Prometheus scrape config for the three.
#
#   docker/run-local.sh start [DIR]   start eu, us, ap; data, logs and pid files under DIR
#                                     (a new temporary directory when omitted)
#   docker/run-local.sh stop DIR      SIGTERM the three and wait for them to exit
#   docker/run-local.sh status DIR    show which regions are running and ready
#
# Environment:
#   CAUSEWAY_BIN                      the causeway binary (default: target/release/causeway)
#   CAUSEWAY_EU_KAFKA_PORT=9092  CAUSEWAY_EU_HTTP_PORT=8080
#   CAUSEWAY_US_KAFKA_PORT=9093  CAUSEWAY_US_HTTP_PORT=8081
#   CAUSEWAY_AP_KAFKA_PORT=9094  CAUSEWAY_AP_HTTP_PORT=8082
#   CAUSEWAY_READY_TIMEOUT_S=60       how long start waits for each region's /readyz
#   CAUSEWAY_REPLICATION_SECRET       the secret the regions share (default: a random one,
#                                     written to DIR/secret)
#
# Every region lists the other two as peers, so a record produced in any region appears in all
# three (active-active replication); `causeway region status --http 127.0.0.1:8080` shows links.
set -euo pipefail

REGIONS=(eu us ap)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"

usage() {
    sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

kafka_port() {
    case "$1" in
        eu) echo "${CAUSEWAY_EU_KAFKA_PORT:-9092}" ;;
        us) echo "${CAUSEWAY_US_KAFKA_PORT:-9093}" ;;
        ap) echo "${CAUSEWAY_AP_KAFKA_PORT:-9094}" ;;
    esac
}

http_port() {
    case "$1" in
        eu) echo "${CAUSEWAY_EU_HTTP_PORT:-8080}" ;;
        us) echo "${CAUSEWAY_US_HTTP_PORT:-8081}" ;;
        ap) echo "${CAUSEWAY_AP_HTTP_PORT:-8082}" ;;
    esac
}

# HTTP status of GET http://127.0.0.1:PORT/PATH, empty when nothing answers (bash's /dev/tcp:
# no curl needed).
http_status() {
    local port="$1" path="$2"
    (
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 0
        printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
        IFS= read -r -t 5 line <&3 || exit 0
        set -- $line
        echo "${2:-}"
    ) 2>/dev/null || true
}

running() {
    local pid="$1" state
    [ -r "/proc/$pid/stat" ] || return 1
    state="$(sed 's/.*) //' "/proc/$pid/stat" | cut -c1)"
    [ "$state" != Z ] && [ "$state" != X ]
}

pid_of() {
    local dir="$1" region="$2"
    [ -f "$dir/$region.pid" ] && cat "$dir/$region.pid"
}

stop_regions() {
    local dir="$1" region pid deadline
    for region in "${REGIONS[@]}"; do
        pid="$(pid_of "$dir" "$region" || true)"
        if [ -n "$pid" ] && running "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    deadline=$((SECONDS + 30))
    for region in "${REGIONS[@]}"; do
        pid="$(pid_of "$dir" "$region" || true)"
        [ -n "$pid" ] || continue
        while running "$pid"; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                echo "$region (pid $pid) did not stop within 30 s of SIGTERM; killing it" >&2
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
        echo "stopped $region (pid $pid)"
    done
}

write_scrape_config() {
    local dir="$1" region
    {
        echo "# Prometheus scrape config for docker/run-local.sh (the compose file uses docker/prometheus.yml)."
        echo "global:"
        echo "  scrape_interval: 5s"
        echo "scrape_configs:"
        echo "  - job_name: causeway"
        echo "    static_configs:"
        for region in "${REGIONS[@]}"; do
            echo "      - targets: [\"127.0.0.1:$(http_port "$region")\"]"
            echo "        labels:"
            echo "          region: $region"
        done
    } >"$dir/prometheus.yml"
}

start() {
    local dir="${1:-}" bin region other peers pid kafka http deadline
    if [ -z "$dir" ]; then
        dir="$(mktemp -d "${TMPDIR:-/tmp}/causeway-regions.XXXXXX")"
    fi
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    bin="${CAUSEWAY_BIN:-$ROOT/target/release/causeway}"
    if [ ! -x "$bin" ]; then
        echo "no causeway binary at $bin: run cargo build --release -p causeway-broker (or set CAUSEWAY_BIN)" >&2
        exit 1
    fi
    for region in "${REGIONS[@]}"; do
        pid="$(pid_of "$dir" "$region" || true)"
        if [ -n "$pid" ] && running "$pid"; then
            echo "$region is already running from $dir (pid $pid); stop it first" >&2
            exit 1
        fi
    done
    if [ ! -s "$dir/secret" ]; then
        (umask 077; echo "${CAUSEWAY_REPLICATION_SECRET:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}" >"$dir/secret")
    fi
    for region in "${REGIONS[@]}"; do
        peers=()
        for other in "${REGIONS[@]}"; do
            [ "$other" = "$region" ] && continue
            peers+=(--peer "$other@127.0.0.1:$(kafka_port "$other")")
        done
        kafka="127.0.0.1:$(kafka_port "$region")"
        http="127.0.0.1:$(http_port "$region")"
        mkdir -p "$dir/$region"
        "$bin" serve \
            --data-dir "$dir/$region" \
            --region "$region" \
            --kafka-listen "$kafka" \
            --advertised-addr "$kafka" \
            --http-listen "$http" \
            "${peers[@]}" \
            --replication-secret "$(cat "$dir/secret")" \
            </dev/null >>"$dir/$region.log" 2>&1 &
        echo $! >"$dir/$region.pid"
    done
    write_scrape_config "$dir"
    deadline=$((SECONDS + ${CAUSEWAY_READY_TIMEOUT_S:-60}))
    for region in "${REGIONS[@]}"; do
        pid="$(pid_of "$dir" "$region")"
        until [ "$(http_status "$(http_port "$region")" /readyz)" = 200 ]; do
            if ! running "$pid" || [ "$SECONDS" -ge "$deadline" ]; then
                echo "$region did not become ready; last lines of $dir/$region.log:" >&2
                tail -n 20 "$dir/$region.log" >&2 || true
                stop_regions "$dir" >&2
                exit 1
            fi
            sleep 0.1
        done
    done
    echo "three regions running from $dir:"
    for region in "${REGIONS[@]}"; do
        printf '  %s  kafka 127.0.0.1:%s  http http://127.0.0.1:%s  pid %s  log %s\n' \
            "$region" "$(kafka_port "$region")" "$(http_port "$region")" \
            "$(pid_of "$dir" "$region")" "$dir/$region.log"
    done
    echo "Prometheus scrape config: $dir/prometheus.yml (prometheus --config.file=$dir/prometheus.yml)"
    echo "stop them with: $HERE/run-local.sh stop $dir"
}

status() {
    local dir="$1" region pid state
    for region in "${REGIONS[@]}"; do
        pid="$(pid_of "$dir" "$region" || true)"
        if [ -n "$pid" ] && running "$pid"; then
            state="running, /readyz $(http_status "$(http_port "$region")" /readyz)"
        else
            state="stopped"
        fi
        echo "$region: $state"
    done
}

case "${1:-}" in
    start) start "${2:-}" ;;
    stop) [ -n "${2:-}" ] || usage; stop_regions "$2" ;;
    status) [ -n "${2:-}" ] || usage; status "$2" ;;
    *) usage ;;
esac
