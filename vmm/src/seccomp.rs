//! Seccomp filters per thread, as Firecracker installs them: each thread of cloak-vmm, before it
//! runs guest code or serves a device, confines itself to the syscalls its job makes. A guest
//! that takes over a vCPU thread (through a device emulation bug, say) then cannot open files,
//! create sockets, exec or ptrace; any syscall outside the list kills the whole VMM.
//!
//! The lists are allowlists: a vCPU thread and the device event loop share what device work
//! needs (KVM ioctls, reads and writes on descriptors opened before the start, eventfds,
//! vhost-user messages, the host side of vsock connections — a queue notification on a vCPU
//! thread may accept or dial one — and the allocator), the event loop adds waiting on its
//! descriptors, and the supervising main thread only waits, kicks the vCPUs and tears down.
//! Opening files, exec, fork, ptrace, mounts and privilege changes are in no list.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

/// Whose filter: each thread kind has its own list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadRole {
    /// Runs KVM_RUN and the devices' register accesses.
    Vcpu,
    /// Serves the devices' queues and host-side connections.
    EventLoop,
    /// The main thread once the VM runs: waits, stops the VM, exits.
    Supervisor,
}

/// What a syscall outside the list does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SeccompLevel {
    /// The VMM is killed (SIGSYS).
    #[default]
    Kill,
    /// The syscall is allowed and the kernel logs it (to find what a list lacks).
    Log,
    /// No filter.
    Off,
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the {role:?} seccomp filter: {source}")]
    Build {
        role: ThreadRole,
        source: seccompiler::BackendError,
    },
    #[error("installing the {role:?} seccomp filter: {source}")]
    Install {
        role: ThreadRole,
        source: seccompiler::Error,
    },
}

/// Device work, on a vCPU thread (MMIO register writes activate devices and notify queues)
/// or on the event loop.
const DEVICE_WORK: &[libc::c_long] = &[
    libc::SYS_ioctl,
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_eventfd2,
    libc::SYS_epoll_ctl,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_accept4,
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getrandom,
    // A device dropped on the thread that held it last removes its listening socket.
    libc::SYS_unlink,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_gettimeofday,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_brk,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// What the event loop adds: waiting on its descriptors.
const EVENT_LOOP_EXTRA: &[libc::c_long] = &[
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_poll,
    libc::SYS_ppoll,
];

/// The supervising main thread: waits, kicks vCPU threads out of KVM_RUN, joins them, drops
/// the VM and exits.
const SUPERVISOR: &[libc::c_long] = &[
    libc::SYS_futex,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_sched_yield,
    libc::SYS_tgkill,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_read,
    libc::SYS_close,
    libc::SYS_ioctl,
    libc::SYS_epoll_ctl,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_brk,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// The syscalls `role` may make.
pub fn allowed(role: ThreadRole) -> Vec<libc::c_long> {
    match role {
        ThreadRole::Vcpu => DEVICE_WORK.to_vec(),
        ThreadRole::EventLoop => [DEVICE_WORK, EVENT_LOOP_EXTRA].concat(),
        ThreadRole::Supervisor => SUPERVISOR.to_vec(),
    }
}

/// The compiled filter of `role` at `level` (`None` for `Off`).
pub fn filter(role: ThreadRole, level: SeccompLevel) -> Result<Option<BpfProgram>, SeccompError> {
    let mismatch = match level {
        SeccompLevel::Kill => SeccompAction::KillProcess,
        SeccompLevel::Log => SeccompAction::Log,
        SeccompLevel::Off => return Ok(None),
    };
    let rules: BTreeMap<i64, Vec<SeccompRule>> = allowed(role)
        .into_iter()
        .map(|syscall| (syscall, Vec::new()))
        .collect();
    let build = |source| SeccompError::Build { role, source };
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(build)?;
    BpfProgram::try_from(filter).map(Some).map_err(build)
}

/// Confines the calling thread to `role`'s list (no_new_privs is set on the way).
pub fn install(role: ThreadRole, level: SeccompLevel) -> Result<(), SeccompError> {
    let Some(program) = filter(role, level)? else {
        return Ok(());
    };
    seccompiler::apply_filter(&program).map_err(|source| SeccompError::Install { role, source })?;
    tracing::debug!(?role, ?level, "seccomp filter installed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_thread_may_open_files_exec_or_trace() {
        for role in [
            ThreadRole::Vcpu,
            ThreadRole::EventLoop,
            ThreadRole::Supervisor,
        ] {
            let allowed = allowed(role);
            for forbidden in [
                libc::SYS_open,
                libc::SYS_openat,
                libc::SYS_execve,
                libc::SYS_execveat,
                libc::SYS_fork,
                libc::SYS_clone,
                libc::SYS_clone3,
                libc::SYS_ptrace,
                libc::SYS_mount,
                libc::SYS_setuid,
                libc::SYS_init_module,
            ] {
                assert!(!allowed.contains(&forbidden), "{role:?} allows {forbidden}");
            }
        }
        // Only the event loop waits on descriptors; only device threads touch sockets.
        assert!(allowed(ThreadRole::EventLoop).contains(&libc::SYS_poll));
        assert!(!allowed(ThreadRole::Vcpu).contains(&libc::SYS_poll));
        assert!(!allowed(ThreadRole::Supervisor).contains(&libc::SYS_socket));
    }

    #[test]
    fn every_level_but_off_compiles_a_filter() {
        for role in [
            ThreadRole::Vcpu,
            ThreadRole::EventLoop,
            ThreadRole::Supervisor,
        ] {
            assert!(filter(role, SeccompLevel::Kill).expect("builds").is_some());
            assert!(filter(role, SeccompLevel::Log).expect("builds").is_some());
            assert!(filter(role, SeccompLevel::Off).expect("builds").is_none());
        }
    }
}
