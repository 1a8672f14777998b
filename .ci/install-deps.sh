# Installs the system packages the build and the tests need, if they are missing:
# clang and libclang-dev (RocksDB's bindings), g++ and make (RocksDB, librdkafka), kcat (tests).
# Sourced by start.sh and .ci/run.
need=()
for package in clang libclang-dev g++ make kcat curl; do
  dpkg -s "$package" >/dev/null 2>&1 || need+=("$package")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "installing the Rust toolchain (rustup)" >&2
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  source "$HOME/.cargo/env"
fi
