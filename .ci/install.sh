# Sourced by .ci/run (and usable by hand): installs what the tests need on a fresh machine.
# Each step is idempotent and says what it installs and why.
echo "== install: rust toolchain"
cargo --version
rustc --version

# DDS face tests (integration-tests/tests/dds_*.rs, issue 5): a real, independent DDS peer
# (Eclipse Cyclone DDS through its Python binding, in a venv), Cyclone's ddsperf for the
# benchmark, and iproute2 for the private network namespaces the tests run in.
echo "== install: Cyclone DDS (python binding + ddsperf) and iproute2 for the DDS tests"
if ! command -v ip >/dev/null 2>&1 || ! command -v ddsperf >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 cyclonedds-tools python3-venv >/dev/null \
        || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 cyclonedds-tools >/dev/null
fi
SQUALL_DDS_VENV="${SQUALL_DDS_VENV:-$HOME/.squall-dds-venv}"
if ! "$SQUALL_DDS_VENV/bin/python" -c "import cyclonedds" >/dev/null 2>&1; then
    python3 -m venv "$SQUALL_DDS_VENV"
    "$SQUALL_DDS_VENV/bin/pip" install -q "cyclonedds==11.0.1"
fi
"$SQUALL_DDS_VENV/bin/python" -c "import cyclonedds.domain; print('cyclonedds python binding ok')"
