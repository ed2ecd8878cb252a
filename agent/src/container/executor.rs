//! The last steps inside a container's process, between libcontainer's set-up (namespaces,
//! mounts, user, capabilities, rlimits) and the exec of the payload, for container inits and
//! exec'd processes alike:
//! - signal dispositions and the signal mask go back to the defaults. The agent is a Rust
//!   program, whose runtime ignores SIGPIPE; an ignored signal survives exec, so without this
//!   `yes | head` never ends. runc's processes start with nothing ignored or blocked.
//! - an exec'd process gets its container's seccomp filter. libcontainer's tenant path (exec
//!   into a running container) rebuilds the spec's `linux` section without `seccomp`, so exec'd
//!   processes would run unfiltered; this applies the filter the container's init has.

use caps::{CapSet, Capability};
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::{Capability as SpecCapability, LinuxSeccomp, Process, Spec};

/// What the payload's process does right before exec.
#[derive(Clone, Default)]
pub(super) struct PayloadExecutor {
    /// The filter to install (exec'd processes only: libcontainer installs the init's).
    seccomp: Option<LinuxSeccomp>,
    /// Capabilities lent to the process only to install the filter (see `lend_capabilities`).
    lent: Vec<Capability>,
}

impl PayloadExecutor {
    /// For a container's init: libcontainer applies its seccomp filter itself.
    pub(super) fn for_init() -> Self {
        Self::default()
    }

    /// For a process exec'd into a container whose spec has `seccomp`. Without
    /// no_new_privileges, installing a filter needs CAP_SYS_ADMIN, which the process may not
    /// have once libcontainer dropped its capabilities: runc installs it before that drop. Here
    /// the process is given what it lacks (CAP_SYS_ADMIN, and CAP_SETPCAP to give it back from
    /// the bounding set), and `exec` takes it away again right after the filter is in — the
    /// payload starts with exactly the capabilities it asked for, under the filter. A process
    /// spec without capabilities keeps all of them (libcontainer drops nothing), so it needs
    /// no loan.
    pub(super) fn for_exec(seccomp: Option<LinuxSeccomp>, process: &mut Process) -> Self {
        let needs_loan = seccomp.is_some()
            && process.no_new_privileges() != Some(true)
            && process.capabilities().is_some();
        let lent = if needs_loan {
            lend_capabilities(process)
        } else {
            Vec::new()
        };
        Self { seccomp, lent }
    }
}

/// Adds CAP_SYS_ADMIN and CAP_SETPCAP where `process` lacks them (bounding, effective,
/// permitted); returns the ones added.
fn lend_capabilities(process: &mut Process) -> Vec<Capability> {
    let mut capabilities = process.capabilities().clone().unwrap_or_default();
    let effective = capabilities.effective().clone().unwrap_or_default();
    let mut lent = Vec::new();
    for (spec_capability, capability) in [
        (SpecCapability::SysAdmin, Capability::CAP_SYS_ADMIN),
        (SpecCapability::Setpcap, Capability::CAP_SETPCAP),
    ] {
        if effective.contains(&spec_capability) {
            continue;
        }
        lent.push(capability);
        let grown = |set: &Option<oci_spec::runtime::Capabilities>| {
            let mut set = set.clone().unwrap_or_default();
            set.insert(spec_capability);
            Some(set)
        };
        let (bounding, effective, permitted) = (
            grown(capabilities.bounding()),
            grown(capabilities.effective()),
            grown(capabilities.permitted()),
        );
        capabilities
            .set_bounding(bounding)
            .set_effective(effective)
            .set_permitted(permitted);
    }
    process.set_capabilities(Some(capabilities));
    lent
}

impl Executor for PayloadExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        reset_signals();
        if let Some(seccomp) = &self.seccomp {
            // A notifying filter needs a listener the agent does not run; create/exec refuse
            // such profiles before a process exists, so a notify fd here is unexpected.
            let notify_fd = libcontainer::seccomp::initialize_seccomp(seccomp)
                .map_err(|err| ExecutorError::Other(format!("installing seccomp: {err}")))?;
            if notify_fd.is_some() {
                return Err(ExecutorError::Other(
                    "seccomp notify profiles are not supported".to_owned(),
                ));
            }
        }
        give_back(&self.lent)?;
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Drops `lent` from the bounding, effective and permitted sets (bounding first: that needs
/// CAP_SETPCAP, which may itself be lent).
fn give_back(lent: &[Capability]) -> Result<(), ExecutorError> {
    let failed = |err: caps::errors::CapsError| {
        ExecutorError::Other(format!("dropping capabilities lent for seccomp: {err}"))
    };
    for &capability in lent {
        caps::drop(None, CapSet::Bounding, capability).map_err(failed)?;
    }
    for &capability in lent {
        caps::drop(None, CapSet::Effective, capability).map_err(failed)?;
        caps::drop(None, CapSet::Permitted, capability).map_err(failed)?;
    }
    Ok(())
}

/// Every signal back to its default disposition, none blocked.
fn reset_signals() {
    // Signal numbers 1..=64 on Linux; SIGKILL and SIGSTOP (and glibc's reserved real-time
    // signals) refuse a change, which is harmless.
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: setting a disposition to SIG_DFL installs no handler and touches no memory
        // of ours; this process is single-threaded here (libcontainer's forked child).
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(json: &str) -> Process {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn an_exec_without_no_new_privileges_borrows_what_the_filter_needs() {
        let mut exec = process(
            r#"{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0},
                "capabilities":{"bounding":["CAP_CHOWN"],"effective":["CAP_CHOWN"],
                                "permitted":["CAP_CHOWN"]}}"#,
        );
        let executor = PayloadExecutor::for_exec(Some(LinuxSeccomp::default()), &mut exec);
        assert_eq!(
            executor.lent,
            vec![Capability::CAP_SYS_ADMIN, Capability::CAP_SETPCAP]
        );
        let caps = exec.capabilities().as_ref().unwrap();
        for set in [caps.bounding(), caps.effective(), caps.permitted()] {
            let set = set.as_ref().unwrap();
            assert!(set.contains(&SpecCapability::SysAdmin));
            assert!(set.contains(&SpecCapability::Setpcap));
            assert!(set.contains(&SpecCapability::Chown));
        }
        assert!(
            caps.inheritable().is_none(),
            "nothing lent to exec'd children"
        );
    }

    #[test]
    fn nothing_is_lent_without_a_filter_with_no_new_privileges_or_when_held() {
        let json = r#"{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0},
            "capabilities":{"effective":["CAP_SYS_ADMIN","CAP_SETPCAP"]}}"#;
        let mut exec = process(json);
        assert!(PayloadExecutor::for_exec(None, &mut exec).lent.is_empty());
        assert!(
            PayloadExecutor::for_exec(Some(LinuxSeccomp::default()), &mut exec)
                .lent
                .is_empty(),
            "already held"
        );
        let mut exec =
            process(r#"{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0},"noNewPrivileges":true}"#);
        assert!(
            PayloadExecutor::for_exec(Some(LinuxSeccomp::default()), &mut exec)
                .lent
                .is_empty(),
            "no_new_privileges lets anyone install a filter"
        );
        assert!(exec.capabilities().is_none());

        // Without a capabilities section libcontainer drops nothing: no loan, and the spec
        // stays without one (a loan would turn "all capabilities" into "none").
        let mut exec = process(r#"{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}}"#);
        assert!(
            PayloadExecutor::for_exec(Some(LinuxSeccomp::default()), &mut exec)
                .lent
                .is_empty()
        );
        assert!(exec.capabilities().is_none());
    }
}
