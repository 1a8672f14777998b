#!/usr/bin/env bash
# Runs librdkafka's own broker test suite (tests/ of the librdkafka copy that ships inside the
# rdkafka-sys crate) against one Causeway broker on loopback. A manual step, not part of CI;
# docs/compatibility.md records a run and which tests apply.
#
#   integration-tests/librdkafka-suite.sh [options] [TEST ...]
#
#   TEST ...                 test numbers to run (e.g. 0011 0081); default: every test that applies
#   --full                   full mode (no -Q: more messages and sub-tests, and the sockem tests,
#                            which cut or delay the client's sockets); default: quick mode
#                            (`make quick`'s -Q -E)
#   --binary PATH            the causeway binary (default: $CAUSEWAY_BIN, else target/release/causeway)
#   --work-dir DIR           where librdkafka is copied and built (default: /tmp/librdkafka-suite);
#                            an existing build there is reused, `--rebuild` forces a new one
#   --kafka-version V        TEST_KAFKA_VERSION handed to the runner (default: 4.0.0, see below)
#   --scenario NAME          runner scenario: `default` (auto-created topics) or `noautocreate`
#                            (the broker runs with --auto-create-topics false)
#   --skip LIST              extra test numbers to skip (comma separated), added to the default
#                            skip list below; `--no-default-skip` drops the default list
#   --subtests STR           SUBTESTS: only the sub-tests whose name holds STR (e.g. CreateAcls)
#   --debug CONTEXTS         TEST_DEBUG (librdkafka debug contexts, e.g. protocol,broker)
#   --timeout-multiplier X   test.timeout.multiplier in test.conf (default: 2: a test that
#                            overruns its timeout makes the runner SIGKILL itself, ending the
#                            whole run; upstream CI runs at 3)
#   --broker-arg ARG         extra flag for `causeway serve` (repeatable)
#   --keep                   keep the broker's data dir and log after the run
#
# What it does: copies librdkafka from the rdkafka-sys source in the cargo registry (the version
# in Cargo.lock; override with LIBRDKAFKA_SRC=DIR), configures it without SSL, SASL/GSSAPI and
# curl, builds the library and tests/test-runner, starts the broker on two free loopback ports
# with a temporary data dir and 4 partitions per auto-created topic (the suite's default
# scenario: num.partitions=4), writes tests/test.conf (bootstrap.servers), runs the tests one at
# a time (-p1) without the local/mock-only tests (-L), stops the broker and prints the runner's
# summary. The exit code is the runner's (0 when no test failed).
#
# TEST_KAFKA_VERSION=4.0.0: the runner assumes 2.4.0 otherwise. Causeway follows Kafka 4's
# protocol floor (KIP-896: Produce below v3, i.e. message formats v0/v1, is refused), and the
# suite uses ">= 4.0" exactly to stop sending those formats (0052, 0092); every other version
# check in the suite is a "feature since 0.x/2.x/3.x" check that 4.0 also satisfies.
#
# Build dependencies (Debian): build-essential, python3, zlib1g-dev; libzstd-dev (zstd in
# 0017_compression) and rapidjson-dev (without it 0053, 0098, 0110 skip themselves) are optional
# but wanted.
# The runner and the build run under `nice -n ${NICE:-10}`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"

# Tests the default scenario would run but that cannot apply to one Causeway broker (reasons in
# docs/compatibility.md): Kafka shell tools (kafka-topics.sh, kafka-acls.sh) and the mock-cluster
# tests not flagged local, 0101 (fetch from a follower: several brokers with racks) and 0098
# (its messages come from Kafka's Java TransactionProducerCli, which needs KAFKA_PATH).
DEFAULT_SKIP="0052,0077,0098,0101,0109,0115,0119,0139,0150"

mode=quick
bin="${CAUSEWAY_BIN:-$ROOT/target/release/causeway}"
work=/tmp/librdkafka-suite
kafka_version=4.0.0
scenario=default
extra_skip=""
use_default_skip=1
debug=""
subtests=""
tmout_mult=2
keep=0
rebuild=0
broker_args=()
tests=()

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --full) mode=full ;;
        --quick) mode=quick ;;
        --binary) bin="$2"; shift ;;
        --work-dir) work="$2"; shift ;;
        --kafka-version) kafka_version="$2"; shift ;;
        --scenario) scenario="$2"; shift ;;
        --skip) extra_skip="$2"; shift ;;
        --no-default-skip) use_default_skip=0 ;;
        --debug) debug="$2"; shift ;;
        --subtests) subtests="$2"; shift ;;
        --timeout-multiplier) tmout_mult="$2"; shift ;;
        --broker-arg) broker_args+=("$2"); shift ;;
        --keep) keep=1 ;;
        --rebuild) rebuild=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
        *) tests+=("$1") ;;
    esac
    shift
done

case "$scenario" in
    default|noautocreate) ;;
    *) echo "unknown scenario: $scenario (default or noautocreate)" >&2; exit 2 ;;
esac

bin="$(realpath "$bin" 2>/dev/null || true)"
if [[ -z "$bin" || ! -x "$bin" ]]; then
    echo "no causeway binary (build it with cargo build --release, or pass --binary)" >&2
    exit 2
fi

NICE="${NICE:-10}"
log() { printf '[librdkafka-suite] %s\n' "$*" >&2; }

# --- librdkafka source and build --------------------------------------------------------------
if [[ -z "${LIBRDKAFKA_SRC:-}" ]]; then
    ver="$(grep -A1 '^name = "rdkafka-sys"$' "$ROOT/Cargo.lock" | sed -n 's/^version = "\(.*\)"$/\1/p')"
    [[ -n "$ver" ]] || { echo "rdkafka-sys not found in Cargo.lock" >&2; exit 2; }
    LIBRDKAFKA_SRC=""
    for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/rdkafka-sys-"$ver"/librdkafka; do
        [[ -d "$d/tests" ]] && LIBRDKAFKA_SRC="$d"
    done
    if [[ -z "$LIBRDKAFKA_SRC" ]]; then
        echo "rdkafka-sys-$ver source not in the cargo registry: run 'cargo fetch' first" >&2
        exit 2
    fi
fi
stamp="$work/.causeway-suite-source"
if [[ $rebuild -eq 1 || ! -x "$work/tests/test-runner" || ! -f "$stamp" \
      || "$(cat "$stamp")" != "$LIBRDKAFKA_SRC" ]]; then
    log "copying $LIBRDKAFKA_SRC to $work and building (a few minutes)"
    rm -rf "$work"
    mkdir -p "$(dirname "$work")"
    cp -r "$LIBRDKAFKA_SRC" "$work"
    (
        cd "$work"
        # (not configure.log: mklove loads every configure.* file in the directory as a module)
        ./configure --disable-ssl --disable-gssapi --disable-curl > suite-configure.log 2>&1 \
            || { tail -30 suite-configure.log >&2; exit 1; }
        nice -n "$NICE" make -j"$(nproc)" libs > suite-build.log 2>&1 \
            && nice -n "$NICE" make -j"$(nproc)" -C tests build >> suite-build.log 2>&1 \
            || { tail -30 suite-build.log >&2; exit 1; }
    )
    echo "$LIBRDKAFKA_SRC" > "$stamp"
else
    log "reusing the build in $work"
fi
lrk_hex="$(sed -n 's/^#define RD_KAFKA_VERSION *\(0x[0-9a-fA-F]*\).*/\1/p' "$work/src/rdkafka.h")"
lrk_version="$(( (lrk_hex >> 24) & 0xff )).$(( (lrk_hex >> 16) & 0xff )).$(( (lrk_hex >> 8) & 0xff ))"

# --- broker -----------------------------------------------------------------------------------
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
kport="$(free_port)"
hport="$(free_port)"
while [[ "$hport" == "$kport" ]]; do hport="$(free_port)"; done

run_dir="$(mktemp -d /tmp/causeway-librdkafka-XXXXXX)"
broker_pid=""
cleanup() {
    local rc=$?
    if [[ -n "$broker_pid" ]] && kill -0 "$broker_pid" 2>/dev/null; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        for _ in $(seq 1 150); do
            kill -0 "$broker_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    if [[ $keep -eq 1 ]]; then
        log "kept broker data and log in $run_dir"
    else
        rm -rf "$run_dir"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

auto_create=true
[[ "$scenario" == noautocreate ]] && auto_create=false
broker_cmd=("$bin" serve
    --data-dir "$run_dir/data"
    --kafka-listen "127.0.0.1:$kport"
    --http-listen "127.0.0.1:$hport"
    --num-partitions 4
    --auto-create-topics "$auto_create"
    ${broker_args[@]+"${broker_args[@]}"})
log "broker: ${broker_cmd[*]}"
"${broker_cmd[@]}" > "$run_dir/broker.log" 2>&1 &
broker_pid=$!

for _ in $(seq 1 300); do
    if ! kill -0 "$broker_pid" 2>/dev/null; then
        echo "the broker exited at start:" >&2
        tail -20 "$run_dir/broker.log" >&2
        exit 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$kport") 2>/dev/null; then break; fi
    sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$kport") 2>/dev/null \
    || { echo "the broker does not listen on $kport after 30 s" >&2; exit 1; }

# --- runner -----------------------------------------------------------------------------------
cat > "$work/tests/test.conf" <<EOF
bootstrap.servers=127.0.0.1:$kport
test.timeout.multiplier=$tmout_mult
EOF

args=(-p1 -L)
[[ "$mode" == quick ]] && args+=(-Q -E)
[[ "$scenario" != default ]] && args+=(-s "$scenario")

skip=""
[[ $use_default_skip -eq 1 ]] && skip="$DEFAULT_SKIP"
[[ -n "$extra_skip" ]] && skip="${skip:+$skip,}$extra_skip"

runner_env=(TEST_KAFKA_VERSION="$kafka_version" TESTS_SKIP="${skip:-none}"
    RDKAFKA_GITVER="librdkafka-$lrk_version")
[[ ${#tests[@]} -gt 0 ]] && runner_env+=(TESTS="$(IFS=,; echo "${tests[*]}")")
[[ -n "$debug" ]] && runner_env+=(TEST_DEBUG="$debug")
[[ -n "$subtests" ]] && runner_env+=(SUBTESTS="$subtests")

out="$run_dir/runner.log"
log "librdkafka $lrk_version, $mode mode, scenario $scenario, TEST_KAFKA_VERSION=$kafka_version"
log "runner: (cd $work/tests && ${runner_env[*]} ./test-runner ${args[*]})"
start=$(date +%s)
set +e
(
    cd "$work/tests"
    unset CI
    export LD_LIBRARY_PATH="../src:../src-cpp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # stdbuf -oL: the runner printf()s its summary table into this pipe (block-buffered) and
    # abort()s at the end when a failed test left librdkafka threads behind, which dropped the
    # unflushed part of the table (and with it tests from the summary below).
    env "${runner_env[@]}" nice -n "$NICE" stdbuf -oL ./test-runner "${args[@]}"
) 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
set -e
elapsed=$(( $(date +%s) - start ))

# --- summary ----------------------------------------------------------------------------------
echo
echo "=== librdkafka $lrk_version suite against $(basename "$bin") ($mode mode, ${elapsed}s) ==="
sed 's/\x1b\[[0-9;]*m//g' "$out" \
    | awk -F'|' '
        /SUMMARY$/ { on = 1; next }
        on && /^\|/ && !/<MAIN>/ {
            name = $2; state = $3; why = $5
            gsub(/^ +| +$/, "", name); gsub(/^ +| +$/, "", state); gsub(/^ +| +$/, "", why)
            n[state]++
            if (state == "FAILED") failed = failed "  " name ": " why "\n"
            if (state == "SKIPPED") skipped = skipped "  " name ": " why "\n"
        }
        END {
            for (s in n) printf "%-8s %d\n", s, n[s]
            if (skipped != "") printf "skipped:\n%s", skipped
            if (failed != "") printf "failed:\n%s", failed
        }'
cp "$out" "$work/last-run-$mode.log"
echo "full runner log: $work/last-run-$mode.log"
if [[ $rc -ne 0 ]]; then
    echo "broker log tail:"
    tail -20 "$run_dir/broker.log"
fi
exit "$rc"
