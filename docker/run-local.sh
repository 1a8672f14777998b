#!/usr/bin/env bash
# Starts the same three-region topology as docker/compose.yaml (eu, us, ap), as plain processes on
# loopback, for machines without Docker. Writes a Prometheus scrape config for the three.
#
#   docker/run-local.sh start [DIR [REGION]]   start eu, us, ap (or only REGION); data, logs and
#                                     pid files under DIR (a new temporary directory when omitted)
#   docker/run-local.sh stop DIR [REGION]      SIGTERM the three (or REGION), wait for them to exit
#   docker/run-local.sh restart DIR [REGION]   stop, then start again, the three (or REGION)
#   docker/run-local.sh status DIR             each region's ports, pid and /readyz
#
# Environment (read at the first start of DIR; the ports are then kept in DIR/ports.env, which
# every later command reads, so stop/restart/status need no environment):
#   CAUSEWAY_BIN                      the causeway binary (default: target/release/causeway)
#   CAUSEWAY_EU_KAFKA_PORT=9092  CAUSEWAY_EU_HTTP_PORT=8080
#   CAUSEWAY_US_KAFKA_PORT=9093  CAUSEWAY_US_HTTP_PORT=8081
#   CAUSEWAY_AP_KAFKA_PORT=9094  CAUSEWAY_AP_HTTP_PORT=8082
#   CAUSEWAY_READY_TIMEOUT_S=60       how long start waits for each region's /readyz
#   CAUSEWAY_REPLICATION_SECRET       the secret the regions share (default: a random one); kept
#                                     in DIR/secret (mode 600) and handed to each broker in its
#                                     environment, never on its command line
#
# Every region lists the other two as peers, so a record produced in any region appears in all
# three (active-active replication); `causeway region status --http 127.0.0.1:8080` shows links.
# A region stopped alone and started again catches up from the others.
set -euo pipefail

REGIONS=(eu us ap)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"

declare -A KAFKA_PORT HTTP_PORT

usage() {
    sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# The regions a command acts on: REGION if given (one of eu, us, ap), else all three.
selected_regions() {
    local wanted="${1:-}" region
    if [ -z "$wanted" ]; then
        echo "${REGIONS[@]}"
        return
    fi
    for region in "${REGIONS[@]}"; do
        if [ "$region" = "$wanted" ]; then
            echo "$region"
            return
        fi
    done
    echo "unknown region $wanted: one of ${REGIONS[*]}" >&2
    exit 2
}

env_port() {
    local name="CAUSEWAY_${1^^}_${2}_PORT" default="$3"
    echo "${!name:-$default}"
}

# Fills KAFKA_PORT and HTTP_PORT: from DIR/ports.env when an earlier start wrote it, else from
# the environment (and the defaults), written to DIR/ports.env when `write` is given.
load_ports() {
    local dir="$1" write="${2:-}" region i key value name
    if [ -f "$dir/ports.env" ]; then
        while IFS='=' read -r key value; do
            case "$key" in
                CAUSEWAY_[A-Z][A-Z]_KAFKA_PORT | CAUSEWAY_[A-Z][A-Z]_HTTP_PORT) ;;
                *) continue ;;
            esac
            [[ "$value" =~ ^[0-9]+$ ]] || {
                echo "$dir/ports.env: $key=$value is not a port" >&2
                exit 1
            }
            region="${key#CAUSEWAY_}"
            region="${region%%_*}"
            region="${region,,}"
            case "$key" in
                *_KAFKA_PORT) KAFKA_PORT[$region]="$value" ;;
                *_HTTP_PORT) HTTP_PORT[$region]="$value" ;;
            esac
        done <"$dir/ports.env"
        for region in "${REGIONS[@]}"; do
            if [ -z "${KAFKA_PORT[$region]:-}" ] || [ -z "${HTTP_PORT[$region]:-}" ]; then
                echo "$dir/ports.env lacks the ports of $region" >&2
                exit 1
            fi
            for name in KAFKA HTTP; do
                key="CAUSEWAY_${region^^}_${name}_PORT"
                if [ "$name" = KAFKA ]; then value="${KAFKA_PORT[$region]}"; else value="${HTTP_PORT[$region]}"; fi
                if [ -n "${!key:-}" ] && [ "${!key}" != "$value" ]; then
                    echo "note: $key=${!key} ignored: $dir/ports.env says $value (delete that file to change ports)" >&2
                fi
            done
        done
        return
    fi
    i=0
    for region in "${REGIONS[@]}"; do
        KAFKA_PORT[$region]="$(env_port "$region" KAFKA $((9092 + i)))"
        HTTP_PORT[$region]="$(env_port "$region" HTTP $((8080 + i)))"
        i=$((i + 1))
    done
    if [ -n "$write" ]; then
        {
            echo "# Ports of docker/run-local.sh's regions, fixed at the first start of this directory."
            for region in "${REGIONS[@]}"; do
                echo "CAUSEWAY_${region^^}_KAFKA_PORT=${KAFKA_PORT[$region]}"
                echo "CAUSEWAY_${region^^}_HTTP_PORT=${HTTP_PORT[$region]}"
            done
        } >"$dir/ports.env"
    fi
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

existing_dir() {
    local dir="$1"
    if [ ! -d "$dir" ]; then
        echo "$dir does not exist (start creates it)" >&2
        exit 1
    fi
    (cd "$dir" && pwd)
}

# stop_regions DIR REGION...
stop_regions() {
    local dir="$1" region pid deadline
    shift
    for region in "$@"; do
        pid="$(pid_of "$dir" "$region" || true)"
        if [ -n "$pid" ] && running "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    deadline=$((SECONDS + 30))
    for region in "$@"; do
        pid="$(pid_of "$dir" "$region" || true)"
        if [ -z "$pid" ] || ! running "$pid"; then
            echo "$region is not running"
            continue
        fi
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
            echo "      - targets: [\"127.0.0.1:${HTTP_PORT[$region]}\"]"
            echo "        labels:"
            echo "          region: $region"
        done
    } >"$dir/prometheus.yml"
}

# start_regions DIR REGION...
start_regions() {
    local dir="$1" bin region other peers pid kafka http deadline secret
    shift
    bin="${CAUSEWAY_BIN:-$ROOT/target/release/causeway}"
    if [ ! -x "$bin" ]; then
        echo "no causeway binary at $bin: run cargo build --release -p causeway-broker (or set CAUSEWAY_BIN)" >&2
        exit 1
    fi
    for region in "$@"; do
        pid="$(pid_of "$dir" "$region" || true)"
        if [ -n "$pid" ] && running "$pid"; then
            echo "$region is already running from $dir (pid $pid); stop it first" >&2
            exit 1
        fi
    done
    if [ ! -s "$dir/secret" ]; then
        (umask 077; echo "${CAUSEWAY_REPLICATION_SECRET:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}" >"$dir/secret")
    fi
    secret="$(cat "$dir/secret")"
    for region in "$@"; do
        peers=()
        for other in "${REGIONS[@]}"; do
            [ "$other" = "$region" ] && continue
            peers+=(--peer "$other@127.0.0.1:${KAFKA_PORT[$other]}")
        done
        kafka="127.0.0.1:${KAFKA_PORT[$region]}"
        http="127.0.0.1:${HTTP_PORT[$region]}"
        mkdir -p "$dir/$region"
        # The secret goes in the environment (the broker reads CAUSEWAY_REPLICATION_SECRET), not
        # on the command line that `ps` shows to every user.
        CAUSEWAY_REPLICATION_SECRET="$secret" "$bin" serve \
            --data-dir "$dir/$region" \
            --region "$region" \
            --kafka-listen "$kafka" \
            --advertised-addr "$kafka" \
            --http-listen "$http" \
            "${peers[@]}" \
            </dev/null >>"$dir/$region.log" 2>&1 &
        echo $! >"$dir/$region.pid"
    done
    write_scrape_config "$dir"
    deadline=$((SECONDS + ${CAUSEWAY_READY_TIMEOUT_S:-60}))
    for region in "$@"; do
        pid="$(pid_of "$dir" "$region")"
        until [ "$(http_status "${HTTP_PORT[$region]}" /readyz)" = 200 ]; do
            if ! running "$pid" || [ "$SECONDS" -ge "$deadline" ]; then
                echo "$region did not become ready; last lines of $dir/$region.log:" >&2
                tail -n 20 "$dir/$region.log" >&2 || true
                stop_regions "$dir" "$@" >&2
                exit 1
            fi
            sleep 0.1
        done
    done
    echo "running from $dir:"
    for region in "$@"; do
        printf '  %s  kafka 127.0.0.1:%s  http http://127.0.0.1:%s  pid %s  log %s\n' \
            "$region" "${KAFKA_PORT[$region]}" "${HTTP_PORT[$region]}" \
            "$(pid_of "$dir" "$region")" "$dir/$region.log"
    done
    echo "Prometheus scrape config: $dir/prometheus.yml (prometheus --config.file=$dir/prometheus.yml)"
    echo "stop them with: $HERE/run-local.sh stop $dir"
}

start() {
    local dir="${1:-}" only="${2:-}" regions
    regions="$(selected_regions "$only")"
    if [ -z "$dir" ]; then
        dir="$(mktemp -d "${TMPDIR:-/tmp}/causeway-regions.XXXXXX")"
    fi
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    load_ports "$dir" write
    # shellcheck disable=SC2086 # a list of region names
    start_regions "$dir" $regions
}

stop() {
    local dir regions
    dir="$(existing_dir "$1")"
    regions="$(selected_regions "${2:-}")"
    # shellcheck disable=SC2086
    stop_regions "$dir" $regions
}

restart() {
    local dir regions
    dir="$(existing_dir "$1")"
    regions="$(selected_regions "${2:-}")"
    load_ports "$dir" write
    # shellcheck disable=SC2086
    stop_regions "$dir" $regions
    # shellcheck disable=SC2086
    start_regions "$dir" $regions
}

status() {
    local dir region pid state
    dir="$(existing_dir "$1")"
    load_ports "$dir"
    for region in "${REGIONS[@]}"; do
        pid="$(pid_of "$dir" "$region" || true)"
        if [ -n "$pid" ] && running "$pid"; then
            state="running (pid $pid), /readyz $(http_status "${HTTP_PORT[$region]}" /readyz)"
        else
            state="stopped"
        fi
        printf '%s: %s  kafka 127.0.0.1:%s  http 127.0.0.1:%s\n' \
            "$region" "$state" "${KAFKA_PORT[$region]}" "${HTTP_PORT[$region]}"
    done
}

case "${1:-}" in
    start) start "${2:-}" "${3:-}" ;;
    stop) [ -n "${2:-}" ] || usage; stop "$2" "${3:-}" ;;
    restart) [ -n "${2:-}" ] || usage; restart "$2" "${3:-}" ;;
    status) [ -n "${2:-}" ] || usage; status "$2" ;;
    *) usage ;;
esac
