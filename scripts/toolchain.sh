#!/usr/bin/env bash
# Makes the toolchain rust-toolchain.toml names usable without a download: if rustup has no
# toolchain of that name but its stable toolchain is that very release, the name is made to
# point at it (`rustup toolchain link` refuses release-like names, so as a symlink in rustup's
# toolchains directory, which rustup then treats as installed). Any other release is an error
# that says which release is wanted.
set -euo pipefail
cd "$(dirname "$0")/.."

want=$(sed -n 's/^channel = "\(.*\)"$/\1/p' rust-toolchain.toml)
log() { printf 'toolchain: %s\n' "$*" >&2; }

if rustup toolchain list | grep -q "^${want}-"; then
    exit 0
fi
# `+stable` looks past rust-toolchain.toml at what this machine has.
have=$(rustc +stable --version | awk '{print $2}')
if [ "$have" != "$want" ]; then
    log "cloak is built with Rust $want (rust-toolchain.toml); this machine's stable is $have"
    log "install it with: rustup toolchain install $want --component clippy rustfmt"
    exit 1
fi
host=$(rustc +stable -vV | sed -n 's/^host: //p')
ln -sfn "$(rustc +stable --print sysroot)" "${RUSTUP_HOME:-$HOME/.rustup}/toolchains/${want}-${host}"
log "toolchain $want is this machine's stable ($have)"
