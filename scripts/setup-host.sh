#!/usr/bin/env bash
# Installs what cloak needs on a Debian 12 (bookworm) host, idempotently: QEMU from
# bookworm-backports (software emulation works where KVM cannot boot Linux), the userspace
# vsock backend, and the tools the test suite uses. Run as root.
set -euo pipefail

VHOST_DEVICE_VSOCK_VERSION=0.3.0
VIRTIOFSD_VERSION=1.14.0
SEV_SNP_MEASURE_VERSION=0.0.13
# An independent JOSE implementation, the oracle of the key broker's JWE.
JWCRYPTO_VERSION=1.5.6
PYTHON_TOOLS=/opt/cloak-tools
# containerd 2.x for the CRI tests' second run (Debian 12 ships 1.6 only): Debian testing's
# package, which needs nothing newer than bookworm's libc (libc6 >= 2.34) and runc. It is
# unpacked into its own directory, never installed over the system's containerd.
CONTAINERD2_VERSION=2.1.9+ds1-5
CONTAINERD2_SHA256=2dda86ce7033fd612fc50e136679d8174ccad680eb29cd4611e0d2a1b84cf591
CONTAINERD2_DIR=$PYTHON_TOOLS/containerd2
# cargo-deny for `make lint`'s license, ban and source checks of the dependency graph.
CARGO_DENY_VERSION=0.20.2
CARGO_DENY_ROOT=$PYTHON_TOOLS/cargo-deny

log() { printf 'setup-host: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (apt-get install)"
    exit 1
fi

# Before anything runs cargo here: the toolchain rust-toolchain.toml names.
bash "$(dirname "$0")/toolchain.sh"

# Tools cargo builds from source. Their own release profiles ask for (fat) LTO, which costs a
# fresh machine minutes and buys these helpers nothing that matters here: builds here turn it
# off. vhost-device-vsock needs no Debian package, so it builds while apt works; the others
# follow apt (virtiofsd links libseccomp and libcap-ng).
fast_install() {
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        cargo install --locked --quiet "$@"
}
background=()
if ! command -v vhost-device-vsock >/dev/null 2>&1; then
    log "installing vhost-device-vsock $VHOST_DEVICE_VSOCK_VERSION (cargo install, in the background)"
    fast_install vhost-device-vsock --version "$VHOST_DEVICE_VSOCK_VERSION" &
    background+=($!)
fi

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
if [ "$codename" != bookworm ]; then
    log "warning: written for Debian bookworm, this is '${codename:-unknown}'"
fi

# The guest kernel package and a current QEMU come from bookworm-backports.
backports=/etc/apt/sources.list.d/cloak-backports.sources
if [ "$codename" = bookworm ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding bookworm-backports to apt sources"
    cat > "$backports" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
fi

export DEBIAN_FRONTEND=noninteractive
log "apt-get update"
apt-get update -q >/dev/null

# cpio: cross-checks the initrd writer; libseccomp-dev: the agent links libseccomp statically
# (and virtiofsd needs it, with libcap-ng-dev, to build); busybox-static: test container root
# filesystems; runc: the host baseline of the container benchmarks; containerd: the shim's tests,
# the demo and the benchmark run a private containerd (its system service is left alone);
# libssl-dev, pkg-config: the sev crate (launch digests, report checks) links OpenSSL;
# python3-venv: the sev-snp-measure oracle's environment; containernetworking-plugins: CNI
# bridge/host-local for the CRI tests; iproute2: the shim wires pod networks with ip and tc;
# iptables: the shim's port-forward rule in each pod's network namespace;
# protobuf-compiler: the CRI client bindings (k8s-cri) are generated at build time;
# acpica-tools: iasl, the oracle that disassembles the ACPI tables cloak-vmm gives its guests.
# cryptsetup-bin, erofs-utils: veritysetup and fsck.erofs, the oracles of the layer images.
# ovmf: Debian's firmware build, a real image in the launch digest oracle matrix.
# nasm, uuid-dev, patch, xz-utils, g++, make: `cloak firmware build` (edk2 from Debian's source
# package; iasl is acpica-tools').
packages=(cpio libseccomp-dev libcap-ng-dev busybox-static runc containerd libssl-dev pkg-config
    python3-venv containernetworking-plugins iproute2 iptables protobuf-compiler acpica-tools
    cryptsetup-bin erofs-utils ovmf nasm uuid-dev patch xz-utils g++ make)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! dpkg -s qemu-system-x86 >/dev/null 2>&1; then
    log "installing qemu-system-x86 from bookworm-backports"
    apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
fi

if [ "$("$CARGO_DENY_ROOT/bin/cargo-deny" --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]; then
    # A debug build: it checks a dependency graph in well under a second either way.
    log "installing cargo-deny $CARGO_DENY_VERSION (cargo install --debug, in $CARGO_DENY_ROOT, in the background)"
    cargo install --locked --quiet --debug cargo-deny --version "$CARGO_DENY_VERSION" \
        --root "$CARGO_DENY_ROOT" &
    background+=($!)
fi

if ! command -v virtiofsd >/dev/null 2>&1; then
    log "installing virtiofsd $VIRTIOFSD_VERSION (cargo install)"
    fast_install virtiofsd --version "$VIRTIOFSD_VERSION"
fi

# A failed background build fails the setup here.
for pid in "${background[@]}"; do
    wait "$pid"
done

# The reference implementation of SEV-SNP launch digests, which the tests compare cloak's with.
if ! command -v sev-snp-measure >/dev/null 2>&1; then
    log "installing sev-snp-measure $SEV_SNP_MEASURE_VERSION (pip, in $PYTHON_TOOLS)"
    /usr/bin/python3 -m venv "$PYTHON_TOOLS"
    "$PYTHON_TOOLS/bin/pip" install --quiet "sev-snp-measure==$SEV_SNP_MEASURE_VERSION"
    ln -sf "$PYTHON_TOOLS/bin/sev-snp-measure" /usr/local/bin/sev-snp-measure
fi
if ! "$PYTHON_TOOLS/bin/python" -c "import jwcrypto" >/dev/null 2>&1; then
    log "installing jwcrypto $JWCRYPTO_VERSION (pip, in $PYTHON_TOOLS)"
    "$PYTHON_TOOLS/bin/pip" install --quiet "jwcrypto==$JWCRYPTO_VERSION"
fi

# apt-get download from a private sources list (testing, then unstable): the host's own apt
# sources stay as they are. If testing has moved on from the pinned version, the newest 2.x
# it has is taken (and said), since Debian keeps only current versions in its archive.
if [ ! -x "$CONTAINERD2_DIR/usr/bin/containerd" ]; then
    apt_dir=$(mktemp -d)
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    printf 'deb [arch=amd64] http://deb.debian.org/debian %s main\n' testing unstable \
        > "$apt_dir/sources.list"
    apt_options=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=-
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
        -o APT::Sandbox::User=root)
    apt-get "${apt_options[@]}" update -q >/dev/null
    version=$CONTAINERD2_VERSION
    if ! apt-cache "${apt_options[@]}" show "containerd=$version" >/dev/null 2>&1; then
        version=$(apt-cache "${apt_options[@]}" madison containerd | awk '$3 ~ /^2\./ { print $3; exit }')
        if [ -z "$version" ]; then
            log "no containerd 2.x in Debian testing or unstable"
            exit 1
        fi
        log "warning: containerd $CONTAINERD2_VERSION is no longer in Debian testing; taking $version"
    fi
    log "installing containerd $version (Debian testing's package) in $CONTAINERD2_DIR"
    (cd "$apt_dir" && apt-get "${apt_options[@]}" download -q "containerd=$version" >/dev/null)
    deb=$(find "$apt_dir" -maxdepth 1 -name 'containerd_*.deb' | head -n 1)
    if [ "$version" = "$CONTAINERD2_VERSION" ]; then
        echo "$CONTAINERD2_SHA256  $deb" | sha256sum -c --quiet -
    fi
    rm -rf "$CONTAINERD2_DIR"
    mkdir -p "$CONTAINERD2_DIR"
    dpkg-deb -x "$deb" "$CONTAINERD2_DIR"
    rm -rf "$apt_dir"
fi

# The OVMF AmdSev firmware SNP pods boot with: Debian ships no AmdSev build, so it is built
# from Debian's edk2 source package once and cached (about 110 s on 2 cores, plus the
# cloak build it needs); `make image` then ships it in the guest image.
repo=$(cd "$(dirname "$0")/.." && pwd)
firmware="$repo/.cache/firmware/OVMF.amdsev.fd"
if [ ! -f "$firmware" ]; then
    log "building the OVMF AmdSev firmware (cloak firmware build, Debian edk2 source)"
    started=$(date +%s)
    (cd "$repo" && cargo build --release --locked --quiet -p cloak \
        && target/release/cloak firmware build --out "$firmware" --cache-dir "$repo/.cache")
    log "firmware built in $(( $(date +%s) - started )) s: $firmware"
fi

log "qemu: $(qemu-system-x86_64 --version | head -n 1)"
log "containerd 2.x: $("$CONTAINERD2_DIR/usr/bin/containerd" --version)"
log "vhost-device-vsock: $(command -v vhost-device-vsock)"
log "virtiofsd: $(command -v virtiofsd)"
if grep -qwE 'vmx|svm' /proc/cpuinfo; then
    log "CPU has hardware virtualization: guests can use KVM"
else
    log "no VMX/SVM in /proc/cpuinfo: guests run under QEMU software emulation (TCG)"
fi
