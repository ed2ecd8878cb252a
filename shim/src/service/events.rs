//! Task events to containerd, through the publisher the shim library connects to containerd's
//! ttrpc address. Publishing only queues (the library retries); a failure is logged, never
//! returned to the Task API caller.

use std::time::{SystemTime, UNIX_EPOCH};

use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::publisher::RemotePublisher;

pub struct EventPublisher {
    namespace: String,
    publisher: RemotePublisher,
}

pub fn timestamp(at: SystemTime) -> Timestamp {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
        ..Default::default()
    }
}

/// A process exit as containerd sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub status: u32,
    pub at: SystemTime,
}

impl EventPublisher {
    pub fn new(namespace: &str, publisher: RemotePublisher) -> Self {
        Self {
            namespace: namespace.to_owned(),
            publisher,
        }
    }

    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(err) = self
            .publisher
            .publish(Context::default(), topic, &self.namespace, event)
            .await
        {
            tracing::warn!(topic, error = %err, "publishing an event");
        }
    }

    pub async fn created(
        &self,
        id: &str,
        bundle: &str,
        fifos: &super::fifo_io::FifoPaths,
        pid: u32,
    ) {
        let event = TaskCreate {
            container_id: id.to_owned(),
            bundle: bundle.to_owned(),
            io: Some(TaskIO {
                stdin: fifos.stdin.clone(),
                stdout: fifos.stdout.clone(),
                stderr: fifos.stderr.clone(),
                terminal: fifos.terminal,
                ..Default::default()
            })
            .into(),
            pid,
            ..Default::default()
        };
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(event))
            .await;
    }

    pub async fn started(&self, id: &str, pid: u32) {
        let event = TaskStart {
            container_id: id.to_owned(),
            pid,
            ..Default::default()
        };
        self.publish(topics::TASK_START_EVENT_TOPIC, Box::new(event))
            .await;
    }

    /// `exec_id` empty for the container's init process.
    pub async fn exited(&self, id: &str, exec_id: &str, pid: u32, exit: Exit) {
        let event = TaskExit {
            container_id: id.to_owned(),
            id: if exec_id.is_empty() { id } else { exec_id }.to_owned(),
            pid,
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        };
        self.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(event))
            .await;
    }

    pub async fn deleted(&self, id: &str, pid: u32, exit: Option<Exit>) {
        let event = TaskDelete {
            container_id: id.to_owned(),
            id: id.to_owned(),
            pid,
            exit_status: exit.map(|e| e.status).unwrap_or_default(),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        };
        self.publish(topics::TASK_DELETE_EVENT_TOPIC, Box::new(event))
            .await;
    }

    pub async fn exec_added(&self, id: &str, exec_id: &str) {
        let event = TaskExecAdded {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            ..Default::default()
        };
        self.publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(event))
            .await;
    }

    pub async fn exec_started(&self, id: &str, exec_id: &str, pid: u32) {
        let event = TaskExecStarted {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            pid,
            ..Default::default()
        };
        self.publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(event))
            .await;
    }

    pub async fn paused(&self, id: &str) {
        let event = TaskPaused {
            container_id: id.to_owned(),
            ..Default::default()
        };
        self.publish(topics::TASK_PAUSED_EVENT_TOPIC, Box::new(event))
            .await;
    }

    pub async fn resumed(&self, id: &str) {
        let event = TaskResumed {
            container_id: id.to_owned(),
            ..Default::default()
        };
        self.publish(topics::TASK_RESUMED_EVENT_TOPIC, Box::new(event))
            .await;
    }

    pub async fn oom(&self, id: &str) {
        let event = TaskOOM {
            container_id: id.to_owned(),
            ..Default::default()
        };
        self.publish(topics::TASK_OOM_EVENT_TOPIC, Box::new(event))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_split_seconds_and_nanos() {
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let stamp = timestamp(at);
        assert_eq!((stamp.seconds, stamp.nanos), (1_700_000_000, 123_456_789));
    }
}
