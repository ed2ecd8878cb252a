//! The shim<->agent protocol of cloak: protobuf messages and async ttrpc services generated
//! from `protos/agent.proto` and `protos/health.proto` by `build.rs`.

#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::undocumented_unsafe_blocks,
    missing_docs,
    unused_qualifications,
    non_camel_case_types,
    unused_results
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/modules.rs"));
}

pub use generated::*;

pub mod line;
pub mod port_forward;
pub mod sim_psp;

/// vsock port the agent serves ttrpc on.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// vsock port on the host (CID 2) the agent connects to once it serves, to say it is ready.
pub const READY_VSOCK_PORT: u32 = 1025;

/// vsock port of the agent that the host connects process stdio streams to, before the request
/// that uses them. Each connection starts with a header line (`StreamHeader`) naming the
/// process and the stream.
pub const STDIO_VSOCK_PORT: u32 = 1026;

/// virtio-fs tag of the pod's shared directory (container root filesystems, volumes).
pub const SHARED_FS_TAG: &str = "cloak-shared";

/// Where the agent mounts the shared directory in the guest.
pub const SHARED_DIR_IN_GUEST: &str = "/run/cloak/shared";

/// Incompatible protocol changes bump this; Health.Version reports it.
pub const PROTOCOL_VERSION: u32 = 1;

/// CRI annotation naming the pod (sandbox) a container belongs to: the shim groups a pod's
/// containers by it, the agent joins the sandbox's namespaces through it.
pub const CRI_SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
/// CRI annotation saying whether a container is a pod's sandbox or one of its containers.
pub const CRI_CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";

/// What the agent writes on the readiness connection before closing it.
pub const READY_MESSAGE: &[u8] = b"READY\n";

/// Which stdio stream a vsock stream connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Stdin,
    Stdout,
    Stderr,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Stdin => "stdin",
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
        }
    }
}

/// The first line the host writes on a stdio stream connection:
/// `STREAM <container_id> <exec_id or -> <stdin|stdout|stderr>\n`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamHeader {
    pub container_id: String,
    /// Empty for the container's init process.
    pub exec_id: String,
    pub kind: StreamKind,
}

impl StreamHeader {
    /// Longest header line accepted by `parse`.
    pub const MAX_LEN: usize = 512;

    pub fn to_line(&self) -> String {
        let exec = if self.exec_id.is_empty() {
            "-"
        } else {
            &self.exec_id
        };
        format!(
            "STREAM {} {} {}\n",
            self.container_id,
            exec,
            self.kind.as_str()
        )
    }

    /// Parses a header line (without or with its newline).
    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.trim_end_matches('\n').split(' ');
        if words.next()? != "STREAM" {
            return None;
        }
        let container_id = words.next()?.to_owned();
        let exec = words.next()?;
        let kind = match words.next()? {
            "stdin" => StreamKind::Stdin,
            "stdout" => StreamKind::Stdout,
            "stderr" => StreamKind::Stderr,
            _ => return None,
        };
        if words.next().is_some() || container_id.is_empty() || exec.is_empty() {
            return None;
        }
        Some(Self {
            container_id,
            exec_id: if exec == "-" {
                String::new()
            } else {
                exec.to_owned()
            },
            kind,
        })
    }
}

/// True for ids that can travel in a stream header (and in paths): no whitespace, no slash.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
        && id != "."
        && id != ".."
        && id != "-"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_headers_round_trip() {
        for exec_id in ["", "exec-1"] {
            let header = StreamHeader {
                container_id: "c1".into(),
                exec_id: exec_id.into(),
                kind: StreamKind::Stderr,
            };
            assert_eq!(StreamHeader::parse(&header.to_line()), Some(header));
        }
        assert_eq!(StreamHeader::parse("STREAM c1 - stdlog\n"), None);
        assert_eq!(StreamHeader::parse("STREAM c1 stdout\n"), None);
        assert_eq!(StreamHeader::parse("HELLO c1 - stdout\n"), None);
    }

    #[test]
    fn ids() {
        assert!(is_valid_id("abc-123_x.y"));
        for bad in ["", "a b", "a/b", "..", "-", "é"] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }
}
