//! The VMM's event loop: one thread waiting (poll(2)) on the host-side descriptors of the
//! virtio devices — a vsock muxer's listener and streams — and letting a device move what
//! arrived into the guest. Guest-side work (queue notifications) runs on the vCPU thread that
//! took the MMIO exit; it wakes this loop because a device's set of descriptors may change.

use std::os::fd::{AsRawFd as _, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::EventFd;

use crate::devices::virtio_mmio::MmioTransport;

/// How long one wait lasts at most: a stop request is also seen through the wake eventfd,
/// this only bounds the cost of a missed wake-up.
const POLL_TIMEOUT_MS: i32 = 500;

pub struct EventLoop {
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl EventLoop {
    /// Starts the loop over `transports`; `wake` is what their notifications write.
    pub fn spawn(
        transports: Vec<Arc<Mutex<MmioTransport>>>,
        wake: Arc<EventFd>,
        seccomp: crate::seccomp::SeccompLevel,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, wake) = (stop.clone(), wake.clone());
            std::thread::Builder::new()
                .name("event-loop".into())
                .spawn(move || {
                    match crate::seccomp::install(crate::seccomp::ThreadRole::EventLoop, seccomp) {
                        Ok(()) => run(&transports, &wake, &stop),
                        // The devices' host sides go unserved; the guest sees dead devices.
                        Err(err) => tracing::error!(error = %err, "event loop not started"),
                    }
                })?
        };
        Ok(Self {
            stop,
            wake,
            thread: Some(thread),
        })
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.write(1);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock(transport: &Mutex<MmioTransport>) -> std::sync::MutexGuard<'_, MmioTransport> {
    // A panic while a device held the lock leaves it as it was; carry on with it.
    transport
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn run(transports: &[Arc<Mutex<MmioTransport>>], wake: &EventFd, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let mut fds = vec![pollfd(wake.as_raw_fd())];
        let mut owners = vec![None];
        for (index, transport) in transports.iter().enumerate() {
            for fd in lock(transport).host_fds() {
                fds.push(pollfd(fd));
                owners.push(Some(index));
            }
        }
        // SAFETY: `fds` is a live, correctly sized array of pollfd for the call's duration.
        let ready =
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_TIMEOUT_MS) };
        if ready < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(error = %err, "event loop poll");
                return;
            }
            continue;
        }
        if fds[0].revents != 0 {
            let _ = wake.read();
        }
        let mut due = vec![false; transports.len()];
        for (fd, owner) in fds.iter().zip(&owners) {
            if let (Some(index), true) = (owner, fd.revents != 0) {
                due[*index] = true;
            }
        }
        for (transport, due) in transports.iter().zip(due) {
            if due {
                lock(transport).poll_host();
            }
        }
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::test_queues::{desc, memory, WRITE};
    use crate::devices::virtio_mmio::TransportWiring;
    use crate::devices::vsock::packet::{op, Header, HEADER_BYTES};
    use crate::devices::vsock::VsockDevice;
    use std::io::Write as _;
    use std::time::{Duration, Instant};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    const RX_BUFFER: u64 = 0x4000;

    fn wait_readable(fd: &EventFd, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if fd.read().is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// A host connecting to the vsock socket reaches the guest with no vCPU involved: the
    /// loop sees the connection, the device puts a REQUEST in the receive queue and the
    /// transport raises its interrupt line.
    #[test]
    fn a_host_connection_reaches_the_guest_queue_and_interrupts_it() {
        let memory = memory();
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("vm.vsock");
        let rx = MockSplitQueue::create(&memory, GuestAddress(0x8_0000), 16);
        let tx = MockSplitQueue::create(&memory, GuestAddress(0x9_0000), 16);
        rx.build_desc_chain(&[desc(RX_BUFFER, (HEADER_BYTES + 4096) as u32, WRITE)])
            .expect("rx buffer");
        let interrupt = Arc::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"));
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"));
        let mut transport = MmioTransport::with_memory(
            Box::new(VsockDevice::new(3, &socket).expect("vsock")),
            Some(memory.clone()),
        )
        .with_wiring(TransportWiring {
            interrupt: Some(interrupt.clone()),
            wake: Some(wake.clone()),
            encrypted_guest: false,
        });
        for (index, ring) in [(0, &rx), (1, &tx)] {
            transport.set_up_queue(
                index,
                16,
                ring.desc_table_addr().0,
                ring.avail_addr().0,
                ring.used_addr().0,
            );
        }
        let transport = Arc::new(Mutex::new(transport));
        let mut event_loop = EventLoop::spawn(
            vec![transport.clone()],
            wake,
            crate::seccomp::SeccompLevel::Kill,
        )
        .expect("loop");

        let mut host = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        host.write_all(b"CONNECT 1024\n").expect("handshake");
        assert!(
            wait_readable(&interrupt, Duration::from_secs(5)),
            "no interrupt for the host's connection"
        );
        let used_idx: u16 = memory
            .read_obj(GuestAddress(rx.used_addr().0 + 2))
            .expect("used idx");
        assert_eq!(used_idx, 1);
        let mut header = [0u8; HEADER_BYTES];
        memory
            .read_slice(&mut header, GuestAddress(RX_BUFFER))
            .expect("header");
        let header = Header::from_bytes(&header);
        assert_eq!(
            (header.op, header.dst_port, header.dst_cid),
            (op::REQUEST, 1024, 3)
        );
        assert_eq!(lock(&transport).interrupt_status(), 1);
        event_loop.stop();
    }
}
