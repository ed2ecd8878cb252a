//! containerd's Task API for the pod this shim serves, one file per job: runtime options,
//! the pod slot (which pod VM serves the shim, booted by the first create, shut down with the
//! last container), exit waiters and the VM watcher, and the `do_*` handlers grouped by what
//! they do (create, start, delete, control, query). Each request is a `do_*` method returning
//! `TaskResult`; `api.rs` implements containerd's `Task` trait by calling them and converting
//! errors (errors.rs).
//!
//! Processes are containerd's view of the agent's: Create/Start/Exec map to the agent's
//! requests, a waiter per started process turns the agent's WaitProcess into the TaskExit
//! event (after the process's output is drained), and a VM watcher reports every process of
//! a pod whose VM died.

mod api;
mod control;
mod create;
mod delete;
mod exits;
mod pod_slot;
mod query;
mod runtime_options;
mod start;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use containerd_shim::api::DeleteResponse;
use containerd_shim::ExitSignal;
use tokio::sync::Mutex;

use super::errors::TaskError;
use super::events::{timestamp, EventPublisher};
use super::fifo_io::FifoPaths;
use super::pod::Pod;
use super::process::{Container, Process};

/// How long an exit waits for the process's output to reach containerd's fifos.
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(30);

pub struct TaskService {
    inner: Arc<Inner>,
    /// The pod's span: every handler runs in it.
    span: tracing::Span,
}

struct Inner {
    events: EventPublisher,
    exit_signal: Arc<ExitSignal>,
    pod: Mutex<Option<Arc<Pod>>>,
    /// Creates between choosing the pod and recording the container: the pod must not be
    /// shut down under them.
    pending_creates: AtomicUsize,
    containers: StdMutex<HashMap<String, Container>>,
}

impl TaskService {
    /// Ends the shim if it serves no container (what a termination signal asks); returns
    /// whether it did.
    pub async fn shut_down_if_idle(&self) -> bool {
        if !locked(&self.inner.containers).is_empty() {
            return false;
        }
        self.inner.do_shutdown().await;
        true
    }

    pub fn new(events: EventPublisher, exit_signal: Arc<ExitSignal>, span: tracing::Span) -> Self {
        Self {
            span,
            inner: Arc::new(Inner {
                events,
                exit_signal,
                pod: Mutex::new(None),
                pending_creates: AtomicUsize::new(0),
                containers: StdMutex::new(HashMap::new()),
            }),
        }
    }
}

fn locked<T>(mutex: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .expect("shim state lock is never poisoned: no panics under it")
}

fn not_found(id: &str, exec_id: &str) -> TaskError {
    if exec_id.is_empty() {
        TaskError::NotFound(format!("container {id} not found"))
    } else {
        TaskError::NotFound(format!("exec {exec_id} of container {id} not found"))
    }
}

fn fifos_of(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> FifoPaths {
    FifoPaths {
        stdin: stdin.to_owned(),
        stdout: stdout.to_owned(),
        stderr: stderr.to_owned(),
        terminal,
    }
}

fn delete_response(process: &Process) -> DeleteResponse {
    let exit = process.exit();
    DeleteResponse {
        pid: process.pid,
        exit_status: exit.map(|e| e.status).unwrap_or_default(),
        exited_at: exit.map(|e| timestamp(e.at)).into(),
        ..Default::default()
    }
}
