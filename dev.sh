#!/usr/bin/env bash
# One entry point for a fresh Debian or Fedora machine.
#
#   ./dev.sh run    build and start mcsd in dev mode (state and socket under ./.mcsd-dev, no root)
#   ./dev.sh test   build and run every test (unit, doc, integration, property), then print the summary
#   ./dev.sh deps   only install what the build and the tests need
#   ./dev.sh bench-deps
#                   install, besides, what the relabel and restore benches compare mcsd with
#                   (go-selinux and its Go toolchain, setfiles and a policy's file contexts);
#                   kept out of `deps` so the test path (and CI) does not pull in a Go toolchain
#
# Both `run` and `test` install missing system packages first (apt-get or dnf, with sudo when not
# root), a Rust toolchain through rustup when cargo is missing, cargo-nextest when absent, and
# the Python venv target/pyenv (grpcio from PyPI, tests/python/requirements.txt) the tests use.
set -euo pipefail

cd "$(dirname "$0")"

# Packages the build needs (libselinux headers + libclang for the selinux crate's bindgen, protoc
# for etcd-client's generated code) and the
# tests use (etcd for the cluster store, attr for getfattr, systemd for
# systemd-analyze and systemd-socket-activate, rpm for rpmbuild, bzip2 and cpio for the RPM's
# compressed policy module and the test that unpacks it, util-linux
# for setpriv and mount, procps for /bin/kill, which mcsd.service's ExecReload= names and
# systemd-analyze verify requires; a minimal Debian root lacks it), python3 with venv
# (Debian's python3-venv; Fedora's python3 has it) for the Python grpcio client test.
DEBIAN_PACKAGES=(build-essential pkg-config libselinux1-dev libclang-dev clang protobuf-compiler libprotobuf-dev attr strace etcd-server curl ca-certificates systemd rpm bzip2 cpio util-linux procps make selinux-policy-dev python3 python3-venv)
FEDORA_PACKAGES=(gcc make pkgconf-pkg-config libselinux-devel clang-devel protobuf-compiler protobuf-devel attr strace etcd curl systemd rpm-build bzip2 cpio util-linux selinux-policy-devel python3)

# The Python environment of server/tests/python_client.rs (stock grpcio from PyPI, pinned).
PYENV=target/pyenv
PY_REQUIREMENTS=tests/python/requirements.txt

# What the benches compare mcsd with (`cargo bench -p mcsd --bench relabel` / `--bench restore`):
# go-selinux (podman's relabel) and the Go toolchain that builds the peer in GOPATH mode, offline,
# from /usr/share/gocode; setfiles (policycoreutils) and a policy's file_contexts. Installing a
# policy does not enable SELinux. The Fedora names are the same packages' there.
BENCH_DEBIAN_PACKAGES=(golang-go golang-github-opencontainers-selinux-dev policycoreutils selinux-policy-default)
BENCH_FEDORA_PACKAGES=(golang golang-github-opencontainers-selinux-devel policycoreutils selinux-policy-targeted)

log() { printf 'dev.sh: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# install_system_packages [DEBIAN_LIST FEDORA_LIST]: the named arrays (the build's and tests' by default).
install_system_packages() {
    local -n debian_packages=${1:-DEBIAN_PACKAGES} fedora_packages=${2:-FEDORA_PACKAGES}
    if command -v apt-get >/dev/null 2>&1; then
        local missing=()
        for p in "${debian_packages[@]}"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
        done
        if [ ${#missing[@]} -gt 0 ]; then
            log "installing ${missing[*]}"
            as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        fi
    elif command -v dnf >/dev/null 2>&1; then
        local missing=()
        for p in "${fedora_packages[@]}"; do
            rpm -q "$p" >/dev/null 2>&1 || missing+=("$p")
        done
        if [ ${#missing[@]} -gt 0 ]; then
            log "installing ${missing[*]}"
            as_root dnf install -y -q "${missing[@]}"
        fi
    else
        log "neither apt-get nor dnf found; install by hand: ${debian_packages[*]}"
    fi
}

install_rust() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        log "installing the Rust toolchain with rustup"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! cargo nextest --version >/dev/null 2>&1; then
        log "installing cargo-nextest"
        cargo install --locked cargo-nextest
    fi
}

# (Re)creates $PYENV when it is missing or was made from other requirements; a copy of the
# requirements it was made from is kept in it, written last, so a failed install is redone.
install_python_env() {
    if [ -x "$PYENV/bin/python" ] && cmp -s "$PY_REQUIREMENTS" "$PYENV/requirements.txt"; then
        return
    fi
    log "creating $PYENV with $(grep -v '^#' "$PY_REQUIREMENTS" | tr '\n' ' ')"
    rm -rf "$PYENV"
    mkdir -p "$(dirname "$PYENV")"
    python3 -m venv "$PYENV"
    "$PYENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$PY_REQUIREMENTS"
    cp "$PY_REQUIREMENTS" "$PYENV/requirements.txt"
}

deps() {
    install_system_packages
    install_rust
    install_python_env
}

case "${1:-}" in
    run)
        shift
        deps
        cargo build --release -p mcsd -p mcs-client
        log "mcsd is starting in dev mode; in another shell try:"
        log "  export MCSD_SOCKET=$PWD/.mcsd-dev/mcsd.sock; target/release/mcsctl allocate my-container"
        exec target/release/mcsd --dev "$@"
        ;;
    test)
        shift
        deps
        # Doc tests first: nextest does not run them, and its summary should be the last thing printed.
        cargo test --workspace --doc --quiet
        exec cargo nextest run --workspace --no-fail-fast "$@"
        ;;
    deps)
        deps
        ;;
    bench-deps)
        deps
        install_system_packages BENCH_DEBIAN_PACKAGES BENCH_FEDORA_PACKAGES
        ;;
    *)
        echo "usage: $0 run|test|deps|bench-deps" >&2
        exit 2
        ;;
esac
