# Sourced by .ci/run (and usable by hand): installs what the tests need on a fresh machine.
# Each step is idempotent and says what it installs and why.
echo "== install: rust toolchain"
cargo --version
rustc --version
