//! The SNP launch rehearsed on a host without SEV-SNP: the exact QEMU command line of
//! `tee = "snp"` (q35, the OVMF AmdSev firmware with `-bios`, the CPU model, direct kernel
//! boot through the firmware, the same devices) with only its SEV parts taken out — the
//! machine's `confidential-guest-support` and the `sev-snp-guest` object.
//!
//! Without that object QEMU writes no kernel-hashes table, and the AmdSev firmware refuses to
//! boot a kernel it cannot check (it fails closed). So the rehearsal puts the table there
//! itself, the way `kernel-hashes=on` would: the page cloak's launch plan measures
//! (`cloak_launch::ovmf::kernel_hashes_page`, for the exact kernel, initrd and `-append`),
//! loaded at the firmware's kernel-hashes section by QEMU's generic loader device. The
//! firmware then finds the table, checks the kernel, initrd and command line against it and
//! boots; a wrong hash stops the boot. What remains between this and a real SNP launch is
//! exactly `removed`. Nothing about it is confidential: it checks the boot path, never runs
//! pods.

use super::launch::VmmCommand;
use super::qemu::{Accel, Qemu};
use super::snp::{SnpLaunch, SNP_OBJECT_ID};
use super::{Hypervisor, HypervisorError, RunningVm, VmConfig};
use crate::config::HypervisorConfig;

/// The QEMU arguments of an SNP launch split into what a host without SNP runs and the SEV
/// parts it leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RehearsalArgs {
    pub args: Vec<String>,
    pub removed: Vec<String>,
    /// What the rehearsal does in the removed object's stead.
    pub added: Option<String>,
}

/// The kernel-hashes page in the run directory.
const KERNEL_HASHES_FILE: &str = "kernel-hashes.bin";

/// Takes the SEV parts out of an SNP launch's arguments.
pub fn without_sev(snp_args: &[String]) -> RehearsalArgs {
    let support = format!(",confidential-guest-support={SNP_OBJECT_ID}");
    let mut args = Vec::with_capacity(snp_args.len());
    let mut removed = Vec::new();
    let mut iter = snp_args.iter().peekable();
    while let Some(arg) = iter.next() {
        match (arg.as_str(), iter.peek()) {
            ("-object", Some(value)) if value.starts_with("sev-snp-guest,") => {
                removed.push(format!("-object {value}"));
                iter.next();
            }
            ("-machine", Some(value)) if value.contains(&support) => {
                removed.push(format!("-machine …{support}"));
                args.push(arg.clone());
                args.push(value.replace(&support, ""));
                iter.next();
            }
            _ => args.push(arg.clone()),
        }
    }
    RehearsalArgs {
        args,
        removed,
        added: None,
    }
}

pub struct SnpRehearsal {
    qemu: Qemu,
}

impl SnpRehearsal {
    pub fn new(settings: HypervisorConfig) -> Self {
        Self {
            qemu: Qemu::new(settings),
        }
    }

    /// What this rehearsal runs for `config`, and what it leaves out.
    pub fn plan(&self, config: &VmConfig) -> Result<RehearsalArgs, HypervisorError> {
        let settings = &self.qemu.settings;
        if !settings.firmware.is_file() {
            return Err(HypervisorError::Refused(format!(
                "the SNP rehearsal boots the firmware {}, which does not exist (cloak firmware build)",
                settings.firmware.display()
            )));
        }
        let accel = Accel::resolve(settings.accel);
        let snp = SnpLaunch::for_rehearsal(settings, config.host_data()?);
        let launch = self.qemu.launch_for(config, accel, Some(snp));
        let mut plan = without_sev(&launch.args());
        let (gpa, page) = cloak_launch::ovmf::kernel_hashes_page(
            &settings.firmware,
            &launch.kernel,
            Some(&launch.initrd),
            &launch.cmdline,
        )
        .map_err(|err| HypervisorError::Refused(format!("the SNP rehearsal: {err}")))?;
        let table = config.run_dir.join(KERNEL_HASHES_FILE);
        std::fs::create_dir_all(&config.run_dir)
            .and_then(|()| std::fs::write(&table, page))
            .map_err(|source| HypervisorError::RunDir {
                path: table.display().to_string(),
                source,
            })?;
        plan.args.extend([
            "-device".to_owned(),
            format!(
                "loader,file={},addr={gpa:#x},force-raw=on",
                table.display().to_string().replace(',', ",,")
            ),
        ]);
        plan.added = Some(format!(
            "the kernel-hashes page at {gpa:#x}, which kernel-hashes=on would write"
        ));
        Ok(plan)
    }
}

#[async_trait::async_trait]
impl Hypervisor for SnpRehearsal {
    fn name(&self) -> &'static str {
        "qemu (SNP rehearsal, not confidential)"
    }

    async fn launch(&self, config: &VmConfig) -> Result<Box<dyn RunningVm>, HypervisorError> {
        let plan = self.plan(config)?;
        tracing::info!(pod = %config.id, removed = ?plan.removed, "SNP rehearsal: the tee = \"snp\" launch without its SEV parts");
        let command = VmmCommand {
            name: "qemu",
            program: self.qemu.settings.qemu_path.clone(),
            args: plan.args,
            vsock_backend: true,
            // What the SNP launch it rehearses would keep.
            kept: super::launch::vmm_capabilities(config, true),
        };
        Ok(Box::new(
            super::launch::launch(&self.qemu.settings, config, command).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn only_the_sev_parts_are_taken_out() {
        let snp = strings(&[
            "-machine",
            "q35,accel=kvm,confidential-guest-support=sev0,memory-backend=mem",
            "-cpu",
            "EPYC-v4",
            "-object",
            "memory-backend-memfd,id=mem,size=512M,share=on",
            "-bios",
            "/fw/OVMF.amdsev.fd",
            "-object",
            "sev-snp-guest,id=sev0,policy=0x30000,kernel-hashes=on",
        ]);
        let rehearsal = without_sev(&snp);
        assert_eq!(
            rehearsal.args,
            strings(&[
                "-machine",
                "q35,accel=kvm,memory-backend=mem",
                "-cpu",
                "EPYC-v4",
                "-object",
                "memory-backend-memfd,id=mem,size=512M,share=on",
                "-bios",
                "/fw/OVMF.amdsev.fd",
            ])
        );
        assert_eq!(rehearsal.removed.len(), 2);
        assert!(rehearsal.removed[1].starts_with("-object sev-snp-guest,"));
    }
}
