#!/usr/bin/env bash
# Installs what cloak needs on a Debian 12 (bookworm) host, idempotently: QEMU from
# bookworm-backports (software emulation works where KVM cannot boot Linux), the userspace
# vsock backend, and the tools the test suite uses. Run as root.
set -euo pipefail

VHOST_DEVICE_VSOCK_VERSION=0.3.0
VIRTIOFSD_VERSION=1.14.0
SEV_SNP_MEASURE_VERSION=0.0.13
PYTHON_TOOLS=/opt/cloak-tools

log() { printf 'setup-host: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (apt-get install)"
    exit 1
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
# protobuf-compiler: the CRI client bindings (k8s-cri) are generated at build time;
# acpica-tools: iasl, the oracle that disassembles the ACPI tables cloak-vmm gives its guests.
packages=(cpio libseccomp-dev libcap-ng-dev busybox-static runc containerd libssl-dev pkg-config
    python3-venv containernetworking-plugins iproute2 protobuf-compiler acpica-tools)
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

if ! command -v vhost-device-vsock >/dev/null 2>&1; then
    log "installing vhost-device-vsock $VHOST_DEVICE_VSOCK_VERSION (cargo install)"
    cargo install --locked --quiet vhost-device-vsock --version "$VHOST_DEVICE_VSOCK_VERSION"
fi

if ! command -v virtiofsd >/dev/null 2>&1; then
    log "installing virtiofsd $VIRTIOFSD_VERSION (cargo install)"
    cargo install --locked --quiet virtiofsd --version "$VIRTIOFSD_VERSION"
fi

# The reference implementation of SEV-SNP launch digests, which the tests compare cloak's with.
if ! command -v sev-snp-measure >/dev/null 2>&1; then
    log "installing sev-snp-measure $SEV_SNP_MEASURE_VERSION (pip, in $PYTHON_TOOLS)"
    /usr/bin/python3 -m venv "$PYTHON_TOOLS"
    "$PYTHON_TOOLS/bin/pip" install --quiet "sev-snp-measure==$SEV_SNP_MEASURE_VERSION"
    ln -sf "$PYTHON_TOOLS/bin/sev-snp-measure" /usr/local/bin/sev-snp-measure
fi

log "qemu: $(qemu-system-x86_64 --version | head -n 1)"
log "vhost-device-vsock: $(command -v vhost-device-vsock)"
log "virtiofsd: $(command -v virtiofsd)"
if grep -qwE 'vmx|svm' /proc/cpuinfo; then
    log "CPU has hardware virtualization: guests can use KVM"
else
    log "no VMX/SVM in /proc/cpuinfo: guests run under QEMU software emulation (TCG)"
fi
