# Installs what the build and the tests need, if it is missing:
# - Debian packages: clang and libclang-dev (RocksDB's bindings), g++ and make (RocksDB,
#   librdkafka), libssl-dev and pkg-config (librdkafka's TLS and SCRAM, for the TLS tests and
#   `causeway-bench -X security.protocol=SSL`), kcat (tests), python3-pip and npm (the client
#   tests' installers);
# - kafka-python from PyPI and KafkaJS from npm, for integration-tests/tests/suite/other_clients.rs.
# Sourced by start.sh and .ci/run from the repository root.
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
need=()
for package in clang libclang-dev g++ make kcat curl libssl-dev pkg-config; do
  dpkg -s "$package" >/dev/null 2>&1 || need+=("$package")
done
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "installing the Rust toolchain (rustup)" >&2
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  source "$HOME/.cargo/env"
fi
if ! python3 -c 'import kafka' >/dev/null 2>&1; then
  python3 -m pip install --quiet kafka-python==3.0.12 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages kafka-python==3.0.12
fi
if [ ! -d integration-tests/clients/node_modules/kafkajs ]; then
  (cd integration-tests/clients && npm ci --no-audit --no-fund --silent)
fi
