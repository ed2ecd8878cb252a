//! The pod slot: the one pod VM this shim serves. The first create boots it; creates count
//! themselves pending while they use it, so the last delete shuts it down only when no create
//! is in flight.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::super::bundle::PodRecord;
use super::super::errors::{TaskError, TaskResult};
use super::super::pod::Pod;
use super::{locked, Inner};

/// A create in flight on the pod: while one lives, the pod is not shut down. Dropping it —
/// the create finished or failed, or containerd gave up and its future was dropped — ends
/// the count, so no path can leak it.
pub(super) struct PendingCreate {
    inner: Arc<Inner>,
}

impl PendingCreate {
    fn new(inner: &Arc<Inner>) -> Self {
        inner.pending_creates.fetch_add(1, Ordering::SeqCst);
        Self {
            inner: inner.clone(),
        }
    }
}

impl Drop for PendingCreate {
    fn drop(&mut self) {
        self.inner.pending_creates.fetch_sub(1, Ordering::SeqCst);
    }
}
use cloak_host::config::Configuration;
use cloak_host::PodSetup;

impl Inner {
    pub(super) async fn current_pod(&self) -> TaskResult<Arc<Pod>> {
        let pod = self.pod.lock().await.clone();
        let pod =
            pod.ok_or_else(|| TaskError::FailedPrecondition("no pod VM is running".into()))?;
        if let Some(exit) = pod.died() {
            return Err(TaskError::FailedPrecondition(format!(
                "the pod VM is gone ({exit})"
            )));
        }
        Ok(pod)
    }

    /// The running pod, or a new one booted for `pod_id`, with the pending create that keeps it.
    pub(super) async fn pod_for_create(
        self: &Arc<Self>,
        config: &Configuration,
        pod_id: &str,
        setup: PodSetup,
    ) -> TaskResult<(Arc<Pod>, PendingCreate)> {
        let mut slot = self.pod.lock().await;
        if let Some(pod) = slot.as_ref() {
            if pod.record.pod_id != pod_id {
                return Err(TaskError::InvalidArgument(format!(
                    "this shim serves pod {}, not {pod_id}",
                    pod.record.pod_id
                )));
            }
            if let Some(exit) = pod.died() {
                return Err(TaskError::FailedPrecondition(format!(
                    "the pod VM is gone ({exit})"
                )));
            }
            return Ok((pod.clone(), PendingCreate::new(self)));
        }
        let record = PodRecord::new(pod_id, &config.runtime.run_dir);
        let pod = Arc::new(Pod::boot(config, record, setup).await?);
        tracing::info!(pod = %pod_id, vmm_pid = pod.vmm_pid(), "pod VM booted");
        self.watch_pod(&pod);
        *slot = Some(pod.clone());
        Ok((pod, PendingCreate::new(self)))
    }

    /// Shuts the pod down once it has no containers and no create in flight.
    pub(super) async fn release_pod_if_unused(&self) {
        let mut slot = self.pod.lock().await;
        let unused =
            locked(&self.containers).is_empty() && self.pending_creates.load(Ordering::SeqCst) == 0;
        if !unused {
            return;
        }
        if let Some(pod) = slot.take() {
            pod.shut_down().await;
        }
    }
}
