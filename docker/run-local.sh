#!/usr/bin/env bash
# Starts the same three-region topology as docker/compose.yaml (eu, us, ap), as plain processes on
# loopback, for machines without Docker. Writes a Prometheus scrape config for the three.
# Secured by default: clients log in with SCRAM over TLS (SASL_SSL), regions replicate over
# mutual TLS; the certificates and an admin user are made at the first start of DIR.
#
#   docker/run-local.sh start [DIR [REGION]]   start eu, us, ap (or only REGION); data, logs and
#                                     pid files under DIR (a new temporary directory when omitted)
#   docker/run-local.sh stop DIR [REGION]      SIGTERM the three (or REGION), wait for them to exit
#   docker/run-local.sh restart DIR [REGION]   stop, then start again, the three (or REGION)
#   docker/run-local.sh status DIR             each region's ports, pid and /readyz
#
# Environment (read at the first start of DIR; the ports are then kept in DIR/ports.env and the
# security in DIR/security, which every later command reads, so stop/restart/status need none):
#   CAUSEWAY_BIN                      the causeway binary (default: target/release/causeway)
#   CAUSEWAY_EU_KAFKA_PORT=9092  CAUSEWAY_EU_HTTP_PORT=8080  CAUSEWAY_EU_LOCAL_PORT=19092
#   CAUSEWAY_US_KAFKA_PORT=9093  CAUSEWAY_US_HTTP_PORT=8081  CAUSEWAY_US_LOCAL_PORT=19093
#   CAUSEWAY_AP_KAFKA_PORT=9094  CAUSEWAY_AP_HTTP_PORT=8082  CAUSEWAY_AP_LOCAL_PORT=19094
#   CAUSEWAY_READY_TIMEOUT_S=60       how long start waits for each region's /readyz
#   CAUSEWAY_LOCAL_SECURITY=sasl_ssl  sasl_ssl (default) or plaintext:
#     sasl_ssl   the Kafka port of each region is SASL_SSL (SCRAM-SHA-512 and SCRAM-SHA-256) with
#                DIR/certs/REGION.pem, made with `causeway certs init` (authority DIR/certs/ca.pem);
#                regions replicate over mutual TLS (--replication-tls, no shared secret) and dial
#                the peers' Kafka ports. User `admin` is created in each region before its first
#                start, its password (CAUSEWAY_ADMIN_PASSWORD, default a random one) kept in
#                DIR/admin-password (mode 600) and, with the rest of a client's settings, in
#                DIR/client.properties (mode 600; `kcat -F DIR/client.properties ...`). HTTP
#                stays plaintext without authentication on loopback. The LOCAL port is a second,
#                PLAINTEXT listener bound to 127.0.0.1 only, for the `causeway` admin CLI and
#                clients without TLS (anyone on this machine may use it, unauthenticated).
#     plaintext  no TLS, no SASL, no LOCAL listener; the regions share a secret
#                (CAUSEWAY_REPLICATION_SECRET, default a random one) kept in DIR/secret (mode 600)
#                and handed to each broker in its environment, never on its command line
#
# Every region lists the other two as peers, so a record produced in any region appears in all
# three (active-active replication); `causeway region status --http 127.0.0.1:8080` shows links.
# A region stopped alone and started again catches up from the others.
set -euo pipefail

REGIONS=(eu us ap)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"

declare -A KAFKA_PORT HTTP_PORT LOCAL_PORT
# sasl_ssl or plaintext (load_security).
SECURITY=

usage() {
    sed -n '2,37p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
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

# Fills KAFKA_PORT, HTTP_PORT and LOCAL_PORT: from DIR/ports.env when an earlier start wrote it,
# else from the environment (and the defaults), written to DIR/ports.env when `write` is given.
# A ports.env written before the LOCAL listener existed has no LOCAL ports; only the plaintext
# topology (which has no LOCAL listener) runs from such a directory.
load_ports() {
    local dir="$1" write="${2:-}" region i key value name
    if [ -f "$dir/ports.env" ]; then
        while IFS='=' read -r key value; do
            case "$key" in
                CAUSEWAY_[A-Z][A-Z]_KAFKA_PORT | CAUSEWAY_[A-Z][A-Z]_HTTP_PORT | CAUSEWAY_[A-Z][A-Z]_LOCAL_PORT) ;;
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
                *_LOCAL_PORT) LOCAL_PORT[$region]="$value" ;;
            esac
        done <"$dir/ports.env"
        for region in "${REGIONS[@]}"; do
            if [ -z "${KAFKA_PORT[$region]:-}" ] || [ -z "${HTTP_PORT[$region]:-}" ] \
                || { [ "$SECURITY" != plaintext ] && [ -z "${LOCAL_PORT[$region]:-}" ]; }; then
                echo "$dir/ports.env lacks the ports of $region" >&2
                exit 1
            fi
            for name in KAFKA HTTP LOCAL; do
                key="CAUSEWAY_${region^^}_${name}_PORT"
                case "$name" in
                    KAFKA) value="${KAFKA_PORT[$region]}" ;;
                    HTTP) value="${HTTP_PORT[$region]}" ;;
                    LOCAL) value="${LOCAL_PORT[$region]:-}" ;;
                esac
                if [ -n "${!key:-}" ] && [ "${!key}" != "$value" ]; then
                    echo "note: $key=${!key} ignored: $dir/ports.env says ${value:-nothing} (delete that file to change ports)" >&2
                fi
            done
        done
        return
    fi
    i=0
    for region in "${REGIONS[@]}"; do
        KAFKA_PORT[$region]="$(env_port "$region" KAFKA $((9092 + i)))"
        HTTP_PORT[$region]="$(env_port "$region" HTTP $((8080 + i)))"
        LOCAL_PORT[$region]="$(env_port "$region" LOCAL $((19092 + i)))"
        i=$((i + 1))
    done
    if [ -n "$write" ]; then
        {
            echo "# Ports of docker/run-local.sh's regions, fixed at the first start of this directory."
            for region in "${REGIONS[@]}"; do
                echo "CAUSEWAY_${region^^}_KAFKA_PORT=${KAFKA_PORT[$region]}"
                echo "CAUSEWAY_${region^^}_HTTP_PORT=${HTTP_PORT[$region]}"
                echo "CAUSEWAY_${region^^}_LOCAL_PORT=${LOCAL_PORT[$region]}"
            done
        } >"$dir/ports.env"
    fi
}

# Sets SECURITY (sasl_ssl or plaintext): from DIR/security when an earlier start wrote it, else
# plaintext for a directory an earlier version of this script started (it has a ports.env but
# no DIR/security), else CAUSEWAY_LOCAL_SECURITY (default sasl_ssl), written to DIR/security when
# `write` is given.
load_security() {
    local dir="$1" write="${2:-}" wanted="${CAUSEWAY_LOCAL_SECURITY:-}"
    if [ -f "$dir/security" ]; then
        SECURITY="$(tr -d ' \n' <"$dir/security")"
    elif [ -f "$dir/ports.env" ]; then
        SECURITY=plaintext
    else
        SECURITY="${wanted:-sasl_ssl}"
    fi
    case "$SECURITY" in
        sasl_ssl | plaintext) ;;
        *)
            echo "security ${SECURITY@Q}: sasl_ssl or plaintext (CAUSEWAY_LOCAL_SECURITY, $dir/security)" >&2
            exit 2
            ;;
    esac
    if [ -n "$wanted" ] && [ "$wanted" != "$SECURITY" ]; then
        echo "note: CAUSEWAY_LOCAL_SECURITY=$wanted ignored: $dir runs $SECURITY (start a new directory to change it)" >&2
    fi
    if [ -n "$write" ] && [ ! -f "$dir/security" ]; then
        echo "$SECURITY" >"$dir/security"
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
    local -A signalled=()
    shift
    for region in "$@"; do
        pid="$(pid_of "$dir" "$region" || true)"
        if [ -n "$pid" ] && running "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            signalled[$region]=1
        fi
    done
    deadline=$((SECONDS + 30))
    for region in "$@"; do
        pid="$(pid_of "$dir" "$region" || true)"
        if [ -z "${signalled[$region]:-}" ]; then
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

# A random password or secret: 32 hex digits.
random_hex() {
    od -An -N16 -tx1 /dev/urandom | tr -d ' \n'
}

# The secured topology's files, made where missing (a second start changes nothing): the
# certificates (`causeway certs init`), the admin password and a librdkafka client config.
prepare_secure() {
    local dir="$1" bin="$2" written
    written="$("$bin" certs init --dir "$dir/certs" --regions "$(IFS=,; echo "${REGIONS[*]}")")" || {
        echo "causeway certs init --dir $dir/certs failed" >&2
        exit 1
    }
    if grep -q '^wrote' <<<"$written"; then
        echo "$written"
    fi
    if [ ! -s "$dir/admin-password" ]; then
        (umask 077; printf '%s\n' "${CAUSEWAY_ADMIN_PASSWORD:-$(random_hex)}" >"$dir/admin-password")
    fi
    if [ ! -s "$dir/client.properties" ]; then
        (
            umask 077
            {
                echo "# librdkafka settings of a client of docker/run-local.sh's regions: kcat -F $dir/client.properties -b 127.0.0.1:${KAFKA_PORT[eu]} -L"
                echo "security.protocol=SASL_SSL"
                echo "ssl.ca.location=$dir/certs/ca.pem"
                echo "sasl.mechanisms=SCRAM-SHA-512"
                echo "sasl.username=admin"
                echo "sasl.password=$(head -n 1 "$dir/admin-password")"
            } >"$dir/client.properties"
        )
    fi
}

# Creates user admin (password: DIR/admin-password) in REGION's data dir before its first start
# (every region gets it, so each can be logged in to at once; the users replicate anyway).
create_admin() {
    local dir="$1" bin="$2" region="$3"
    [ -d "$dir/$region/meta" ] && return
    mkdir -p "$dir/$region"
    "$bin" user create admin --data-dir "$dir/$region" --mechanism SCRAM-SHA-512,SCRAM-SHA-256 \
        <"$dir/admin-password" >/dev/null || {
        echo "causeway user create admin --data-dir $dir/$region failed" >&2
        exit 1
    }
}

# start_regions DIR REGION...
start_regions() {
    local dir="$1" bin region other peers pid kafka http deadline secret
    local -a security secret_env
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
    if [ "$SECURITY" = plaintext ]; then
        if [ ! -s "$dir/secret" ]; then
            (umask 077; echo "${CAUSEWAY_REPLICATION_SECRET:-$(random_hex)}" >"$dir/secret")
        fi
        secret="$(cat "$dir/secret")"
    else
        prepare_secure "$dir" "$bin"
        # No shared secret: the regions know each other by their certificates.
        secret=""
    fi
    for region in "$@"; do
        peers=()
        for other in "${REGIONS[@]}"; do
            [ "$other" = "$region" ] && continue
            peers+=(--peer "$other@127.0.0.1:${KAFKA_PORT[$other]}")
        done
        kafka="127.0.0.1:${KAFKA_PORT[$region]}"
        http="127.0.0.1:${HTTP_PORT[$region]}"
        mkdir -p "$dir/$region"
        security=()
        if [ "$SECURITY" = sasl_ssl ]; then
            create_admin "$dir" "$bin" "$region"
            security=(
                --kafka-security-protocol sasl_ssl
                --sasl-enabled-mechanisms SCRAM-SHA-512,SCRAM-SHA-256
                --ssl-certificate-file "$dir/certs/$region.pem"
                --ssl-private-key-file "$dir/certs/$region.key"
                --ssl-client-auth requested
                --ssl-client-ca-file "$dir/certs/ca.pem"
                --replication-tls true
                --listener "LOCAL=plaintext://127.0.0.1:${LOCAL_PORT[$region]}"
            )
        fi
        # The secret goes in the environment (the broker reads CAUSEWAY_REPLICATION_SECRET), not
        # on the command line that `ps` shows to every user; the secured topology has none (an
        # inherited one is removed).
        secret_env=()
        if [ -n "$secret" ]; then
            secret_env=("CAUSEWAY_REPLICATION_SECRET=$secret")
        fi
        env -u CAUSEWAY_REPLICATION_SECRET "${secret_env[@]}" \
            "$bin" serve \
            --data-dir "$dir/$region" \
            --region "$region" \
            --kafka-listen "$kafka" \
            --advertised-addr "$kafka" \
            --http-listen "$http" \
            "${security[@]}" \
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
    echo "running from $dir ($SECURITY):"
    for region in "$@"; do
        printf '  %s  kafka 127.0.0.1:%s%s  http http://127.0.0.1:%s  pid %s  log %s\n' \
            "$region" "${KAFKA_PORT[$region]}" "$(local_listener "$region")" "${HTTP_PORT[$region]}" \
            "$(pid_of "$dir" "$region")" "$dir/$region.log"
    done
    if [ "$SECURITY" = sasl_ssl ]; then
        echo "clients: SASL_SSL, SCRAM-SHA-512 or SCRAM-SHA-256 as admin (password in $dir/admin-password), authority $dir/certs/ca.pem:"
        echo "  kcat -b 127.0.0.1:${KAFKA_PORT[eu]} -X security.protocol=SASL_SSL -X ssl.ca.location=$dir/certs/ca.pem \\"
        echo "       -X sasl.mechanisms=SCRAM-SHA-512 -X sasl.username=admin -X sasl.password=\"\$(cat $dir/admin-password)\" -L"
        echo "  kcat -F $dir/client.properties -b 127.0.0.1:${KAFKA_PORT[eu]} -L   # the same settings from a file"
        echo "admin CLI (plaintext, loopback only): causeway topic list -b 127.0.0.1:${LOCAL_PORT[eu]}"
    fi
    echo "Prometheus scrape config: $dir/prometheus.yml (prometheus --config.file=$dir/prometheus.yml)"
    echo "stop them with: $HERE/run-local.sh stop $dir"
}

# "  local 127.0.0.1:PORT" in the secured topology, else nothing.
local_listener() {
    if [ "$SECURITY" = sasl_ssl ]; then
        printf '  local 127.0.0.1:%s' "${LOCAL_PORT[$1]}"
    fi
}

start() {
    local dir="${1:-}" only="${2:-}" regions
    regions="$(selected_regions "$only")"
    if [ -z "$dir" ]; then
        dir="$(mktemp -d "${TMPDIR:-/tmp}/causeway-regions.XXXXXX")"
    fi
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    load_security "$dir" write
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
    load_security "$dir" write
    load_ports "$dir" write
    # shellcheck disable=SC2086
    stop_regions "$dir" $regions
    # shellcheck disable=SC2086
    start_regions "$dir" $regions
}

status() {
    local dir region pid state
    dir="$(existing_dir "$1")"
    load_security "$dir"
    load_ports "$dir"
    echo "$dir: $SECURITY"
    for region in "${REGIONS[@]}"; do
        pid="$(pid_of "$dir" "$region" || true)"
        if [ -n "$pid" ] && running "$pid"; then
            state="running (pid $pid), /readyz $(http_status "${HTTP_PORT[$region]}" /readyz)"
        else
            state="stopped"
        fi
        printf '%s: %s  kafka 127.0.0.1:%s%s  http 127.0.0.1:%s\n' \
            "$region" "$state" "${KAFKA_PORT[$region]}" "$(local_listener "$region")" "${HTTP_PORT[$region]}"
    done
}

case "${1:-}" in
    start) start "${2:-}" "${3:-}" ;;
    stop) [ -n "${2:-}" ] || usage; stop "$2" "${3:-}" ;;
    restart) [ -n "${2:-}" ] || usage; restart "$2" "${3:-}" ;;
    status) [ -n "${2:-}" ] || usage; status "$2" ;;
    *) usage ;;
esac
