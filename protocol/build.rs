//! Generates the protobuf messages and async ttrpc client/server code from `protos/`.
//!
//! The generated files carry inner attributes, which `include!` cannot take inside a module, so
//! the build also writes `modules.rs` declaring each one as a module through `#[path]`.

use std::fmt::Write as _;
use std::path::PathBuf;

use ttrpc_codegen::{Codegen, Customize};

const PROTOS: [&str; 2] = ["agent", "health"];

fn main() -> std::io::Result<()> {
    let out_dir =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));
    let inputs: Vec<String> = PROTOS
        .iter()
        .map(|name| format!("protos/{name}.proto"))
        .collect();
    for input in &inputs {
        println!("cargo:rerun-if-changed={input}");
    }
    Codegen::new()
        .out_dir(&out_dir)
        .inputs(&inputs)
        .include("protos")
        .rust_protobuf()
        .customize(Customize {
            async_all: true,
            ..Default::default()
        })
        .run()?;

    let mut modules = String::new();
    for name in PROTOS {
        for suffix in ["", "_ttrpc"] {
            let file = out_dir.join(format!("{name}{suffix}.rs"));
            writeln!(
                modules,
                "#[path = {:?}]\npub mod {name}{suffix};",
                file.display()
            )
            .expect("writing to a String cannot fail");
        }
    }
    std::fs::write(out_dir.join("modules.rs"), modules)
}
