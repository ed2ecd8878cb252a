//! The ACPI tables cloak-vmm's guests boot with, read by ACPICA's disassembler (iasl, the
//! reference implementation Linux's ACPI interpreter comes from): every table must
//! disassemble without complaint and describe the machine the VMM builds.

use cloak_launch::acpi::{self, VIRTIO_MMIO_SLOTS};
use cloak_tests::tools_on_path;

fn disassemble(signature: &str, table: &[u8], dir: &std::path::Path) -> String {
    let path = dir.join(format!("{}.dat", signature.to_lowercase()));
    std::fs::write(&path, table).expect("write table");
    let output = std::process::Command::new("iasl")
        .arg("-d")
        .arg(&path)
        .current_dir(dir)
        .output()
        .expect("run iasl");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "iasl -d {signature}: {log}");
    assert!(
        !log.contains("Error") && !log.contains("Invalid") && !log.contains("Warning"),
        "iasl complained about {signature}: {log}"
    );
    std::fs::read_to_string(path.with_extension("dsl")).expect("disassembly written")
}

/// The disassembly on one line, without iasl's explanatory comments.
fn without_comments(dsl: &str) -> String {
    let mut text = String::new();
    for line in dsl.lines() {
        text.push_str(line.split("//").next().unwrap_or_default());
        text.push(' ');
    }
    while let Some(start) = text.find("/*") {
        let end = text[start..]
            .find("*/")
            .map_or(text.len(), |e| start + e + 2);
        text.replace_range(start..end, "");
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn iasl_reads_the_guest_tables_as_the_machine_cloak_vmm_builds() {
    if !tools_on_path("acpi_oracle", &["iasl"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let base = 0x12000;
    let blob = acpi::tables(base, 3);
    let tables = acpi::read_tables(&blob, base).expect("tables");
    let mut seen = Vec::new();
    for (signature, table) in &tables {
        let dsl = disassemble(signature, table, dir.path());
        match signature.as_str() {
            "APIC" => {
                let local_apics = dsl.matches("Processor Local APIC").count();
                assert_eq!(local_apics, 3, "{dsl}");
                assert!(dsl.contains("Address : FEC00000"), "{dsl}");
            }
            "FACP" => {
                assert!(
                    dsl.contains("Hardware Reduced (V5) : 1"),
                    "HW_REDUCED_ACPI: {dsl}"
                );
                let sleep_control = dsl
                    .split("Sleep Control Register")
                    .nth(1)
                    .expect("a sleep control register");
                assert!(
                    sleep_control.contains("Space ID : 01 [SystemIO]")
                        && sleep_control
                            .contains(&format!("Address : {:016X}", acpi::SLEEP_CONTROL_PORT)),
                    "sleep control register at the VMM's port: {dsl}"
                );
            }
            "DSDT" => {
                let compact = without_comments(&dsl);
                assert!(
                    compact.contains("Name (_HID, EisaId (\"PNP0501\") )"),
                    "{dsl}"
                );
                assert_eq!(
                    compact.matches("Name (_HID, \"LNRO0005\")").count(),
                    VIRTIO_MMIO_SLOTS as usize,
                    "{dsl}"
                );
                for slot in 0..VIRTIO_MMIO_SLOTS {
                    let (address, gsi) = acpi::virtio_mmio_slot(slot).expect("slot");
                    let window =
                        format!("Memory32Fixed (ReadWrite, 0x{address:08X}, 0x00001000, )");
                    assert!(compact.contains(&window), "{window} in {dsl}");
                    let irq = format!(
                        "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) {{ 0x{gsi:08X}, }}"
                    );
                    assert!(compact.contains(&irq), "{irq} in {dsl}");
                }
            }
            other => panic!("unexpected table {other}"),
        }
        seen.push(signature.clone());
    }
    assert_eq!(seen, ["FACP", "APIC", "DSDT"]);
}
