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
RUN_DIR       ?= $(CURDIR)/build/run

export CLOAK_CACHE_DIR := $(CACHE_DIR)

.PHONY: all guest-binaries cloak image test demo bench bench-boot bench-containers lint clean

all: image

guest-binaries:
	RUSTFLAGS="$(STATIC_FLAGS)" LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu \
		cargo build --release --locked --target $(TARGET) \
		-p cloak-agent -p cloak-floor-init

cloak:
	cargo build --release --locked -p cloak

image: guest-binaries cloak
	$(CLOAK_BIN) image build --out $(GUEST_DIR) --agent $(AGENT_BIN) --config configs/guest-image.toml

# Everything, VM tests included: a test that cannot run here fails instead of skipping.
test: image
	CLOAK_GUEST_DIR=$(CURDIR)/$(GUEST_DIR) CLOAK_AGENT_BIN=$(CURDIR)/$(AGENT_BIN) \
	CLOAK_FLOOR_INIT_BIN=$(CURDIR)/$(FLOOR_BIN) CLOAK_REQUIRE_VM_TESTS=1 \
		cargo test --release --locked --workspace

# A busybox root filesystem from Debian's busybox-static, for the demo container.
DEMO_ROOTFS := build/demo-rootfs
$(DEMO_ROOTFS)/bin/busybox:
	mkdir -p $(DEMO_ROOTFS)/bin $(DEMO_ROOTFS)/proc $(DEMO_ROOTFS)/sys $(DEMO_ROOTFS)/dev $(DEMO_ROOTFS)/tmp $(DEMO_ROOTFS)/etc
	cp /bin/busybox $(DEMO_ROOTFS)/bin/busybox
	for applet in $$(/bin/busybox --list); do [ -e $(DEMO_ROOTFS)/bin/$$applet ] || ln -s busybox $(DEMO_ROOTFS)/bin/$$applet; done

# Boots a pod VM and reports what the agent says, then runs a container in its own pod VM.
demo: image $(DEMO_ROOTFS)/bin/busybox
	mkdir -p $(RUN_DIR)
	$(CLOAK_BIN) probe --config configs/configuration.toml --guest-dir $(GUEST_DIR) --run-dir $(RUN_DIR)
	$(CLOAK_BIN) run --config configs/configuration.toml --guest-dir $(GUEST_DIR) --run-dir $(RUN_DIR) \
		--rootfs $(DEMO_ROOTFS) -- sh -c 'echo "hello from a container in a cloak VM, kernel $$(uname -r)"; ps'

bench-boot: image
	cargo build --release --locked -p cloak-tests --bin cloak-bench-boot
	CLOAK_GUEST_DIR=$(CURDIR)/$(GUEST_DIR) CLOAK_FLOOR_INIT_BIN=$(CURDIR)/$(FLOOR_BIN) \
		target/release/cloak-bench-boot --runs 5

bench-containers: image
	cargo build --release --locked -p cloak-tests --bin cloak-bench-containers
	CLOAK_GUEST_DIR=$(CURDIR)/$(GUEST_DIR) target/release/cloak-bench-containers --runs 20 --mib 256

bench: bench-boot bench-containers

lint:
	cargo fmt --all -- --check
	cargo clippy --release --locked --workspace --all-targets -- -D warnings

clean:
	rm -rf build
	cargo clean
