//! virtio-fs (device type 26) served by a vhost-user backend (`virtiofsd`): the VMM is only
//! the frontend. It negotiates features with the backend, shares guest RAM with it (the
//! memfd regions, by descriptor), hands over each ring's addresses, and relays the two
//! notification directions: a guest kick on QueueNotify becomes a write to the ring's kick
//! eventfd; the backend's call eventfd, watched by the event loop, becomes the transport's
//! used-buffer interrupt.
//!
//! References: virtio spec 1.2 section 5.11 (file system device: config = tag[36] +
//! num_request_queues; queue 0 hiprio, then request queues), the vhost-user protocol
//! (SET_OWNER, GET/SET_FEATURES, GET/SET_PROTOCOL_FEATURES, SET_MEM_TABLE, SET_VRING_*).

use std::os::fd::{AsRawFd as _, RawFd};
use std::path::Path;

use vhost::vhost_user::{Frontend, VhostUserFrontend as _, VhostUserProtocolFeatures};
use vhost::{VhostBackend as _, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::Queue;
use vm_memory::{GuestAddress, GuestMemoryBackend as _, GuestMemoryMmap, GuestMemoryRegion as _};
use vmm_sys_util::eventfd::EventFd;

use super::virtio_mmio::{device_type, QueueConfig, VirtioDevice};

/// VHOST_USER_F_PROTOCOL_FEATURES: a vhost-user feature bit, never offered to the guest.
const PROTOCOL_FEATURES_BIT: u64 = 1 << 30;
/// virtio-fs tags are at most 36 bytes (not NUL-terminated when 36 long).
pub const TAG_BYTES: usize = 36;
const QUEUE_SIZE: u16 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum VhostUserFsError {
    #[error("connecting to the vhost-user backend at {path}: {source}")]
    Connect { path: String, source: vhost::Error },
    #[error("vhost-user {step}: {source}")]
    Protocol {
        step: &'static str,
        source: vhost::Error,
    },
    #[error("the tag {0:?} is longer than 36 bytes")]
    Tag(String),
    #[error("guest memory region at {0:#x} is not backed by a file a backend could map")]
    MemoryNotShared(u64),
    #[error("notification eventfd: {0}")]
    EventFd(std::io::Error),
}

fn protocol(step: &'static str) -> impl Fn(vhost::Error) -> VhostUserFsError {
    move |source| VhostUserFsError::Protocol { step, source }
}

pub struct VhostUserFs {
    frontend: Frontend,
    tag: String,
    /// What the backend offers (the guest sees it without the protocol-features bit).
    backend_features: u64,
    protocol_negotiated: bool,
    queue_sizes: Vec<u16>,
    kicks: Vec<EventFd>,
    calls: Vec<EventFd>,
    active: bool,
}

impl VhostUserFs {
    /// Connects to the backend at `socket` and negotiates what does not depend on the guest.
    pub fn connect(socket: &Path, tag: &str) -> Result<Self, VhostUserFsError> {
        if tag.len() > TAG_BYTES {
            return Err(VhostUserFsError::Tag(tag.to_owned()));
        }
        // The hiprio queue and one request queue.
        let queues = 2;
        let mut frontend = Frontend::connect(socket, queues as u64).map_err(|source| {
            VhostUserFsError::Connect {
                path: socket.display().to_string(),
                source,
            }
        })?;
        frontend.set_owner().map_err(protocol("SET_OWNER"))?;
        let backend_features = frontend.get_features().map_err(protocol("GET_FEATURES"))?;
        let protocol_negotiated = backend_features & PROTOCOL_FEATURES_BIT != 0;
        if protocol_negotiated {
            let offered = frontend
                .get_protocol_features()
                .map_err(protocol("GET_PROTOCOL_FEATURES"))?;
            let wanted = VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK;
            frontend
                .set_protocol_features(offered & wanted)
                .map_err(protocol("SET_PROTOCOL_FEATURES"))?;
        }
        let eventfds = || {
            (0..queues)
                .map(|_| EventFd::new(libc::EFD_NONBLOCK).map_err(VhostUserFsError::EventFd))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            frontend,
            tag: tag.to_owned(),
            backend_features,
            protocol_negotiated,
            queue_sizes: vec![QUEUE_SIZE; queues],
            kicks: eventfds()?,
            calls: eventfds()?,
            active: false,
        })
    }

    /// Hands the backend guest RAM and every ready ring once the driver is done setting up.
    fn set_up_backend(
        &mut self,
        queues: &[QueueConfig],
        driver_features: u64,
        memory: &GuestMemoryMmap,
    ) -> Result<(), VhostUserFsError> {
        let protocol_bit = if self.protocol_negotiated {
            PROTOCOL_FEATURES_BIT
        } else {
            0
        };
        self.frontend
            .set_features(driver_features | protocol_bit)
            .map_err(protocol("SET_FEATURES"))?;
        let regions = memory
            .iter()
            .map(|region| {
                let start = region.start_addr().0;
                let file = region
                    .file_offset()
                    .ok_or(VhostUserFsError::MemoryNotShared(start))?;
                Ok(VhostUserMemoryRegionInfo {
                    guest_phys_addr: start,
                    memory_size: region.len(),
                    userspace_addr: region.as_ptr() as u64,
                    mmap_offset: file.start(),
                    mmap_handle: file.file().as_raw_fd(),
                })
            })
            .collect::<Result<Vec<_>, VhostUserFsError>>()?;
        self.frontend
            .set_mem_table(&regions)
            .map_err(protocol("SET_MEM_TABLE"))?;
        // The backend maps guest RAM at its own addresses; ring addresses are given as ours
        // and it translates them through the table above.
        let host_address = |gpa: u64| {
            memory
                .get_host_address(GuestAddress(gpa))
                .map(|ptr| ptr as u64)
                .unwrap_or(0)
        };
        for (index, queue) in queues.iter().enumerate().filter(|(_, q)| q.ready) {
            let max = self.queue_sizes.get(index).copied().unwrap_or(0);
            let ring = VringConfigData {
                queue_max_size: max,
                queue_size: queue.size,
                flags: 0,
                desc_table_addr: host_address(queue.desc),
                used_ring_addr: host_address(queue.device),
                avail_ring_addr: host_address(queue.driver),
                log_addr: None,
            };
            self.frontend
                .set_vring_num(index, queue.size)
                .map_err(protocol("SET_VRING_NUM"))?;
            self.frontend
                .set_vring_addr(index, &ring)
                .map_err(protocol("SET_VRING_ADDR"))?;
            self.frontend
                .set_vring_base(index, 0)
                .map_err(protocol("SET_VRING_BASE"))?;
            self.frontend
                .set_vring_call(index, &self.calls[index])
                .map_err(protocol("SET_VRING_CALL"))?;
            self.frontend
                .set_vring_kick(index, &self.kicks[index])
                .map_err(protocol("SET_VRING_KICK"))?;
            if self.protocol_negotiated {
                self.frontend
                    .set_vring_enable(index, true)
                    .map_err(protocol("SET_VRING_ENABLE"))?;
            }
        }
        Ok(())
    }
}

impl VirtioDevice for VhostUserFs {
    fn device_type(&self) -> u32 {
        device_type::FS
    }

    fn features(&self) -> u64 {
        self.backend_features & !PROTOCOL_FEATURES_BIT
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; TAG_BYTES + 4];
        config[..self.tag.len()].copy_from_slice(self.tag.as_bytes());
        let request_queues = (self.queue_sizes.len() - 1) as u32;
        config[TAG_BYTES..].copy_from_slice(&request_queues.to_le_bytes());
        for (index, byte) in data.iter_mut().enumerate() {
            *byte = config.get(offset as usize + index).copied().unwrap_or(0);
        }
    }

    fn activate(
        &mut self,
        queues: &[QueueConfig],
        driver_features: u64,
        memory: &GuestMemoryMmap,
    ) -> Result<(), String> {
        self.set_up_backend(queues, driver_features, memory)
            .map_err(|err| err.to_string())?;
        self.active = true;
        Ok(())
    }

    fn process_queue(
        &mut self,
        index: u32,
        _queues: &mut [Option<Queue>],
        _memory: &GuestMemoryMmap,
    ) -> bool {
        if let Some(kick) = self.kicks.get(index as usize) {
            if let Err(err) = kick.write(1) {
                tracing::warn!(error = %err, index, "virtio-fs kick");
            }
        }
        // The backend uses the buffers; its call eventfd says when.
        false
    }

    fn serves_host_side(&self) -> bool {
        true
    }

    fn host_fds(&self) -> Vec<RawFd> {
        if !self.active {
            return Vec::new();
        }
        self.calls.iter().map(|call| call.as_raw_fd()).collect()
    }

    fn poll_host(&mut self, _queues: &mut [Option<Queue>], _memory: &GuestMemoryMmap) -> bool {
        let mut called = false;
        for call in &self.calls {
            called |= call.read().is_ok();
        }
        called
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::test_queues::{desc, WRITE};
    use crate::memory::GuestRam;
    use std::time::{Duration, Instant};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::Bytes as _;

    /// virtiofsd serving a temporary directory; None (with the reason printed) without it.
    struct Virtiofsd {
        child: std::process::Child,
        socket: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Virtiofsd {
        fn start(test: &str) -> Option<Self> {
            let Some(binary) = find_on_path("virtiofsd") else {
                eprintln!(
                    "skipping {test}: virtiofsd is not on PATH (scripts/setup-host.sh installs it)"
                );
                return None;
            };
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::create_dir(dir.path().join("shared")).expect("shared dir");
            std::fs::write(dir.path().join("shared/hello"), b"hi").expect("file");
            let socket = dir.path().join("fs.sock");
            let child = std::process::Command::new(binary)
                .arg("--socket-path")
                .arg(&socket)
                .arg("--shared-dir")
                .arg(dir.path().join("shared"))
                .arg("--sandbox=none")
                .arg("--log-level=error")
                .spawn()
                .expect("virtiofsd starts");
            let deadline = Instant::now() + Duration::from_secs(5);
            while !socket.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            Some(Self {
                child,
                socket,
                _dir: dir,
            })
        }
    }

    impl Drop for Virtiofsd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|dir| Path::new(dir).join(name))
            .chain([Path::new(&std::env::var("HOME").unwrap_or_default())
                .join(".cargo/bin")
                .join(name)])
            .find(|path| path.is_file())
    }

    const FUSE_INIT: u32 = 26;
    const REQUEST: u64 = 0x2000;
    const REPLY: u64 = 0x3000;

    /// FUSE_INIT (fuse_in_header + fuse_init_in, protocol 7.31).
    fn fuse_init_request() -> Vec<u8> {
        let mut request = Vec::new();
        let total = 40 + 64u32;
        request.extend(total.to_le_bytes());
        request.extend(FUSE_INIT.to_le_bytes());
        request.extend(1u64.to_le_bytes()); // unique
        request.extend(0u64.to_le_bytes()); // nodeid
        request.extend([0u8; 16]); // uid, gid, pid, total_extlen, padding
        request.extend(7u32.to_le_bytes()); // major
        request.extend(31u32.to_le_bytes()); // minor
        request.extend(0u32.to_le_bytes()); // max_readahead
        request.extend(0u32.to_le_bytes()); // flags
        request.extend([0u8; 48]); // flags2, unused
        request
    }

    /// The frontend against the real virtiofsd, with no guest: guest RAM in a memfd, a
    /// FUSE_INIT in the request queue, a kick — the backend answers in guest memory and
    /// calls, and the device reports it as used buffers.
    #[test]
    fn virtiofsd_answers_a_request_the_frontend_relays() {
        let Some(backend) = Virtiofsd::start("virtiofsd_answers_a_request_the_frontend_relays")
        else {
            return;
        };
        let ram = GuestRam::new(2).expect("guest ram");
        let memory = &ram.memory;
        let mut device = VhostUserFs::connect(&backend.socket, "cloak").expect("connect");
        assert_ne!(
            device.features() & (1 << 32),
            0,
            "VIRTIO_F_VERSION_1 offered"
        );
        assert_eq!(device.features() & PROTOCOL_FEATURES_BIT, 0);
        let mut tag = [0u8; 6];
        device.read_config(0, &mut tag[..5]);
        device.read_config(TAG_BYTES as u64, &mut tag[5..6]);
        assert_eq!(&tag, b"cloak\x01");

        let hiprio = MockSplitQueue::create(memory, GuestAddress(0x4_0000), 16);
        let requests = MockSplitQueue::create(memory, GuestAddress(0x5_0000), 16);
        let queue_config = |ring: &MockSplitQueue<GuestMemoryMmap>| QueueConfig {
            size: 16,
            ready: true,
            desc: ring.desc_table_addr().0,
            driver: ring.avail_addr().0,
            device: ring.used_addr().0,
        };
        let request = fuse_init_request();
        memory
            .write_slice(&request, GuestAddress(REQUEST))
            .expect("request");
        requests
            .build_desc_chain(&[
                desc(REQUEST, request.len() as u32, 0),
                desc(REPLY, 0x1000, WRITE),
            ])
            .expect("chain");
        device
            .activate(
                &[queue_config(&hiprio), queue_config(&requests)],
                device.features(),
                memory,
            )
            .expect("backend set up");
        assert_eq!(device.host_fds().len(), 2);
        let mut no_queues: Vec<Option<Queue>> = vec![None, None];
        assert!(!device.process_queue(1, &mut no_queues, memory));

        let deadline = Instant::now() + Duration::from_secs(5);
        while !device.poll_host(&mut no_queues, memory) {
            assert!(Instant::now() < deadline, "virtiofsd never called");
            std::thread::sleep(Duration::from_millis(10));
        }
        let used_idx: u16 = memory
            .read_obj(GuestAddress(requests.used_addr().0 + 2))
            .expect("used idx");
        assert_eq!(used_idx, 1);
        let mut reply = [0u8; 24];
        memory
            .read_slice(&mut reply, GuestAddress(REPLY))
            .expect("reply");
        let error = i32::from_le_bytes(reply[4..8].try_into().expect("4"));
        let unique = u64::from_le_bytes(reply[8..16].try_into().expect("8"));
        let major = u32::from_le_bytes(reply[16..20].try_into().expect("4"));
        assert_eq!((error, unique, major), (0, 1, 7), "FUSE_INIT reply");
    }
}
