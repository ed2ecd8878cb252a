//! The cloak guest image: Debian's cloud kernel plus an initrd whose `/init` is cloak-agent,
//! built reproducibly (same inputs, byte-identical outputs) with a manifest describing it.

pub mod builder;
pub mod cpio;
pub mod deb;
pub mod download;
pub mod hashing;
pub mod kmod;
pub mod manifest;
pub mod pin;
pub mod progress;
pub mod toml_file;

pub use builder::{build_image, BuildError, BuildOptions};
pub use manifest::Manifest;
pub use pin::{ImageConfig, ReferenceLaunches};
