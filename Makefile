# cloak build entry points. `make test` and `make demo` are what README.md and .ci/run use.

TARGET        := x86_64-unknown-linux-gnu
# The agent and the floor init run as PID 1 of a guest that has no libc: link them statically.
# RUSTFLAGS with an explicit --target applies to them only, not to build scripts or proc-macros.
STATIC_FLAGS  := -C target-feature=+crt-static
GUEST_BIN_DIR := target/$(TARGET)/release
AGENT_BIN     := $(GUEST_BIN_DIR)/cloak-agent
FLOOR_BIN     := $(GUEST_BIN_DIR)/cloak-floor-init
CLOAK_BIN     := target/release/cloak
GUEST_DIR     := build/guest
CACHE_DIR     ?= $(CURDIR)/.cache
# The OVMF AmdSev firmware of SNP pods, built once by scripts/setup-host.sh (`make firmware`).
FIRMWARE      ?= $(CACHE_DIR)/firmware/OVMF.amdsev.fd

export CLOAK_CACHE_DIR := $(CACHE_DIR)

.PHONY: all guest-binaries cloak firmware shim vmm image test demo soak bench bench-boot bench-containers bench-containerd bench-cri bench-kbs bench-layers bench-policy bench-scale bench-start bench-vmm fuzz lint deny clean

all: image

guest-binaries:
	RUSTFLAGS="$(STATIC_FLAGS)" LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu \
		cargo build --release --locked --target $(TARGET) \
		-p cloak-agent -p cloak-floor-init

cloak:
	cargo build --release --locked -p cloak

# With the firmware present, the image ships it and its reference values hold QEMU+OVMF
# launch digests for it.
image: guest-binaries cloak
	$(CLOAK_BIN) image build --out $(GUEST_DIR) --agent $(AGENT_BIN) --config configs/guest-image.toml \
		$(if $(wildcard $(FIRMWARE)),--firmware $(FIRMWARE))

# Builds OVMF AmdSev from Debian's edk2 source package (about 110 s on 2 cores).
firmware: cloak
	$(CLOAK_BIN) firmware build --out $(FIRMWARE) --cache-dir $(CACHE_DIR)

# containerd 2.x (scripts/setup-host.sh unpacks Debian testing's package here).
CONTAINERD2_DIR ?= /opt/cloak-tools/containerd2/usr/bin
TEST_ENV = CLOAK_GUEST_DIR=$(CURDIR)/$(GUEST_DIR) CLOAK_AGENT_BIN=$(CURDIR)/$(AGENT_BIN) \
	CLOAK_FIRMWARE=$(FIRMWARE) \
	CLOAK_FLOOR_INIT_BIN=$(CURDIR)/$(FLOOR_BIN) CLOAK_REQUIRE_VM_TESTS=1 \
	CLOAK_PYTHON=/opt/cloak-tools/bin/python

# Everything, VM tests included: a test that cannot run here fails instead of skipping. The
# tests drive the built `cloak` and `containerd-shim-cloak-v2` binaries (cargo test alone does
# not build another package's binaries). The CRI tests run twice: against Debian's
# containerd 1.6 with the rest, then against containerd 2.x.
test: image shim vmm
	$(TEST_ENV) cargo test --release --locked --workspace --features cloak-vmm/test-guests
	$(TEST_ENV) CLOAK_CONTAINERD_DIR=$(CONTAINERD2_DIR) \
		cargo test --release --locked -p cloak-tests --features cloak-vmm/test-guests \
		--test cri --test cri_pod_semantics --test cri_policy --test kbs_secrets \
		--test cri_streaming --test cri_vm_size --test cri_port_forward --test cri_privileged --test cri_pod_network \
		--test cri_restart

# Every fuzz target of fuzz/ for FUZZ_SECONDS each over its committed corpus (not part of
# `make test`, which runs the short smoke setting): executions per target, crash inputs kept
# in target/fuzz-crashes/. The fuzz profile turns overflow and debug assertions into crashes.
FUZZ_SECONDS ?= 60
fuzz:
	cargo run --profile fuzz --locked -p cloak-fuzz --bin cloak-fuzz -- --seconds $(FUZZ_SECONDS)

SHIM_BIN := target/release/containerd-shim-cloak-v2

# SOAK_CYCLES `ctr run --rm` cycles and as many CRI pod cycles through one containerd, with
# the leak census before, while a pod runs, and after; fails if any count grew (the suite runs
# a 3-cycle version, tests/tests/soak.rs).
SOAK_CYCLES ?= 100
soak: image shim
	cargo build --release --locked -p cloak-tests --bin cloak-soak
	$(TEST_ENV) CLOAK_SHIM_BIN=$(CURDIR)/$(SHIM_BIN) target/release/cloak-soak --cycles $(SOAK_CYCLES)

shim:
	cargo build --release --locked -p containerd-shim-cloak-v2

vmm:
	cargo build --release --locked -p cloak-vmm

# A container through a private containerd (`ctr run --runtime io.containerd.cloak.v2`) in a
# cloak VM: prints what it ran, its output and the guest kernel release.
demo: image shim
	cargo build --release --locked -p cloak-tests --bin cloak-demo-containerd
	CLOAK_GUEST_DIR=$(CURDIR)/$(GUEST_DIR) CLOAK_SHIM_BIN=$(CURDIR)/$(SHIM_BIN) \
		target/release/cloak-demo-containerd

bench-boot: image
	cargo build --release --locked -p cloak-tests --bin cloak-bench-boot
	CLOAK_GUEST_DIR=$(CURDIR)/$(GUEST_DIR) CLOAK_FLOOR_INIT_BIN=$(CURDIR)/$(FLOOR_BIN) \
		target/release/cloak-bench-boot --runs 5

bench-containers: image
	cargo build --release --locked -p cloak-tests --bin cloak-bench-containers
	$(TEST_ENV) target/release/cloak-bench-containers --runs 20 --mib 256 --rounds 3

bench-containerd: image shim
	cargo build --release --locked -p cloak-tests --bin cloak-bench-containerd
	CLOAK_GUEST_DIR=$(CURDIR)/$(GUEST_DIR) CLOAK_SHIM_BIN=$(CURDIR)/$(SHIM_BIN) \
		target/release/cloak-bench-containerd --runs 5

# The kubelet's view: RunPodSandbox to first container running, cloak vs runc, and the pod
# overhead a RuntimeClass should declare.
bench-cri: image shim
	cargo build --release --locked -p cloak-tests --bin cloak-bench-cri
	CLOAK_GUEST_DIR=$(CURDIR)/$(GUEST_DIR) CLOAK_SHIM_BIN=$(CURDIR)/$(SHIM_BIN) \
		target/release/cloak-bench-cri --runs 5

# cloak-vmm against QEMU on KVM with a tiny guest: start to first guest output, VMM memory.
bench-kbs: image shim cloak
	cargo build --release --locked -p cloak-tests --bin cloak-bench-kbs
	$(TEST_ENV) CLOAK_SHIM_BIN=$(CURDIR)/$(SHIM_BIN) CLOAK_BIN=$(CURDIR)/target/release/cloak \
		target/release/cloak-bench-kbs --runs 5

bench-layers: image
	cargo build --release --locked -p cloak-tests --bin cloak-bench-layers
	$(TEST_ENV) target/release/cloak-bench-layers --runs 3

bench-policy: image
	cargo build --release --locked -p cloak-tests --bin cloak-bench-policy
	$(TEST_ENV) target/release/cloak-bench-policy --runs 10

# Pod start against the boot floor (QEMU launch -> agent Check) in one run: `ctr run --rm`
# and CRI first-container-running medians, their ratios to the floor, and the median of each
# phase of the shim's start timeline.
bench-start: image shim
	cargo build --release --locked -p cloak-tests --bin cloak-bench-start
	$(TEST_ENV) CLOAK_SHIM_BIN=$(CURDIR)/$(SHIM_BIN) target/release/cloak-bench-start --runs 5

# 1, 2 and 3 CRI pods started at once: each pod's start time and the host memory of all,
# against one pod alone in the same run.
bench-scale: image shim
	cargo build --release --locked -p cloak-tests --bin cloak-bench-scale
	$(TEST_ENV) CLOAK_SHIM_BIN=$(CURDIR)/$(SHIM_BIN) target/release/cloak-bench-scale --max-pods 3

bench-vmm:
	cargo build --release --locked -p cloak-vmm -p cloak-tests --features cloak-vmm/test-guests \
		--bin cloak-vmm --bin cloak-bench-vmm
	target/release/cloak-bench-vmm --runs 10

bench: bench-boot bench-containers bench-containerd bench-cri bench-kbs bench-layers bench-policy bench-scale bench-start bench-vmm

# Installed by scripts/setup-host.sh.
CARGO_DENY ?= /opt/cloak-tools/cargo-deny/bin/cargo-deny

lint:
	cargo fmt --all -- --check
	cargo clippy --release --locked --workspace --all-targets --features cloak-vmm/test-guests -- -D warnings
	cargo clippy --release --locked -p cloak-vmm --all-targets -- -D warnings
	$(MAKE) --no-print-directory deny

# Licenses, banned crates and sources of the dependency graph (deny.toml). The advisory
# database cannot be fetched here; `cargo deny check advisories` runs where it can.
deny:
	@test -x $(CARGO_DENY) || { echo "no cargo-deny at $(CARGO_DENY): run scripts/setup-host.sh"; exit 1; }
	$(CARGO_DENY) check licenses bans sources

clean:
	rm -rf build
	cargo clean
