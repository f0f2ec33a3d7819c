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

# Kafka face (issue 4): the integration tests drive `squall serve` with three independent
# clients. librdkafka is built from source by the `rdkafka` crate (needs a C toolchain and make);
# kcat is Debian's build on an old librdkafka (the client that trips on tagged fields);
# kafka-python is a second, pure-Python client implementation.
echo "== install: C toolchain for librdkafka, kcat, kafka-python"
if command -v apt-get >/dev/null 2>&1; then
    need=""
    for p in build-essential pkg-config kcat python3 python3-pip; do
        dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
    done
    if [ -n "$need" ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need) \
            || echo "!! apt-get install$need failed; the kcat test will say it skipped"
    fi
fi
if ! python3 -c "import kafka" >/dev/null 2>&1; then
    python3 -m pip install --quiet kafka-python \
        || python3 -m pip install --quiet --break-system-packages kafka-python \
        || echo "!! pip install kafka-python failed; the kafka-python test will say it skipped"
fi
command -v kcat >/dev/null 2>&1 && echo "kcat: $(kcat -V 2>&1 | head -1)"
python3 -c "import kafka; print('kafka-python', kafka.__version__)" 2>/dev/null || true

# RDMA transport of mcast (feature `rdma`, off by default; docs/MCAST.md "RDMA"): the `ibverbs`
# crate runs cmake over its vendored rdma-core and bindgen (libclang) to make its bindings, and
# links the system libibverbs. No RDMA device is needed to build it or run its unit tests.
echo "== install: cmake, libclang, libnl and libibverbs-dev for the rdma feature's build"
if command -v apt-get >/dev/null 2>&1; then
    need=""
    for p in cmake pkg-config libclang-dev libnl-3-dev libnl-route-3-dev libibverbs-dev; do
        dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
    done
    if [ -n "$need" ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null) \
            || echo "!! apt-get install$need failed; the rdma feature's build will fail"
    fi
fi
