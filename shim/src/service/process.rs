//! What the shim remembers of each container and process: containerd's view (ids, bundle,
//! fifos, pid, status) plus the exit, which waiters and the exit publisher share through a
//! watch channel so that exactly one exit is recorded and published per process.

use std::collections::HashMap;
use std::path::PathBuf;

use containerd_shim::api::Status;
use tokio::sync::watch;

use super::events::Exit;
use super::fifo_io::{FifoPaths, OutputDrain, StdioBridge};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    Created,
    Running,
    Exited,
}

pub struct Process {
    pub exec_id: String,
    pub fifos: FifoPaths,
    /// Guest pid, 0 until known.
    pub pid: u32,
    pub state: ProcessState,
    /// The OCI process (JSON) of an exec that was added but not started yet.
    pub exec_spec: Option<Vec<u8>>,
    pub bridge: StdioBridge,
    /// Signals that the output copies reached containerd's fifos; the exit waiter takes it.
    pub drain: Option<OutputDrain>,
    exit: watch::Sender<Option<Exit>>,
}

impl Process {
    pub fn new(exec_id: &str, fifos: FifoPaths) -> Self {
        Self {
            exec_id: exec_id.to_owned(),
            fifos,
            pid: 0,
            state: ProcessState::Created,
            exec_spec: None,
            bridge: StdioBridge::default(),
            drain: None,
            exit: watch::channel(None).0,
        }
    }

    pub fn exit(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// Records the exit; true only for the first caller, who then publishes it.
    pub fn record_exit(&mut self, exit: Exit) -> bool {
        self.state = ProcessState::Exited;
        self.exit.send_if_modified(|slot| {
            if slot.is_some() {
                return false;
            }
            *slot = Some(exit);
            true
        })
    }

    pub fn exit_watch(&self) -> watch::Receiver<Option<Exit>> {
        self.exit.subscribe()
    }

    pub fn status(&self, paused: bool) -> Status {
        match self.state {
            ProcessState::Created => Status::CREATED,
            ProcessState::Running if paused => Status::PAUSED,
            ProcessState::Running => Status::RUNNING,
            ProcessState::Exited => Status::STOPPED,
        }
    }
}

pub struct Container {
    pub id: String,
    pub bundle: String,
    /// This container's part of the pod's shared directory on the host.
    pub host_dir: PathBuf,
    pub init: Process,
    pub execs: HashMap<String, Process>,
    pub paused: bool,
}

impl Container {
    pub fn process(&self, exec_id: &str) -> Option<&Process> {
        if exec_id.is_empty() {
            Some(&self.init)
        } else {
            self.execs.get(exec_id)
        }
    }

    pub fn process_mut(&mut self, exec_id: &str) -> Option<&mut Process> {
        if exec_id.is_empty() {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(exec_id)
        }
    }

    /// Every process that has not exited yet.
    pub fn live_processes_mut(&mut self) -> impl Iterator<Item = &mut Process> {
        std::iter::once(&mut self.init)
            .chain(self.execs.values_mut())
            .filter(|process| process.exit().is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[tokio::test]
    async fn the_first_exit_wins_and_wakes_waiters() {
        let mut process = Process::new("", FifoPaths::default());
        let mut waiter = process.exit_watch();
        assert_eq!(process.status(false), Status::CREATED);
        process.state = ProcessState::Running;
        assert_eq!(process.status(true), Status::PAUSED);
        let first = Exit {
            status: 3,
            at: SystemTime::now(),
        };
        assert!(process.record_exit(first));
        assert!(!process.record_exit(Exit {
            status: 255,
            at: SystemTime::now()
        }));
        let seen = waiter
            .wait_for(Option::is_some)
            .await
            .expect("sender alive");
        assert_eq!(*seen, Some(first));
        assert_eq!(process.status(false), Status::STOPPED);
    }
}
