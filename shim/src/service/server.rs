//! The shim server: what `containerd_shim::spawn` starts with `-socket`. It serves the Task
//! API under both service names containerd uses — `containerd.task.v2.Task` (containerd 1.6
//! to 2.x with a bare start address) and `containerd.task.v3.Task` (the name the generated
//! code carries; the messages are the same) — until Shutdown (or SIGTERM) finds no container
//! left.
//!
//! The shim library's own `run` serves v3 only and answers `start` in a form containerd 1.6
//! rejects, so cloak drives its building blocks (spawn, publisher, generated service) itself.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use containerd_shim::protos::shim_async::create_task;
use containerd_shim::protos::ttrpc::r#async::transport::Listener;
use containerd_shim::protos::ttrpc::r#async::{Server, Service};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, Flags, Task};
use std::collections::HashMap;

use super::events::EventPublisher;
use super::task::TaskService;

/// The pod the server serves, passed by `start` (the server's `-id` is the container that
/// happened to start it).
pub(super) const POD_ID_VARIABLE: &str = "CLOAK_POD_ID";

const TASK_SERVICE_V3: &str = "containerd.task.v3.Task";
const TASK_SERVICE_V2: &str = "containerd.task.v2.Task";

/// The task service registered under both names.
fn task_services(task: Arc<dyn Task + Send + Sync>) -> HashMap<String, Service> {
    let mut services = create_task(task.clone());
    for (name, service) in create_task(task) {
        if name == TASK_SERVICE_V3 {
            services.insert(TASK_SERVICE_V2.to_owned(), service);
        }
    }
    services
}

/// The file system path of a `unix://` shim address.
pub(super) fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

/// Binds the pod's socket. `None` when another server of the same pod already serves it
/// (a later container of the pod started a second server, which then leaves).
async fn bind(address: &str) -> anyhow::Result<Option<UnixListener>> {
    let path = Path::new(socket_path(address));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match UnixListener::bind(path) {
        Ok(listener) => Ok(Some(listener)),
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Ok(None);
            }
            // A stale socket of a dead server.
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale {}", path.display()))?;
            Ok(Some(
                UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?,
            ))
        }
        Err(err) => Err(err).with_context(|| format!("binding {}", path.display())),
    }
}

/// The `start` process waits for our stdout to close before it answers containerd: point
/// stdout at stderr (containerd's log pipe) once the socket serves.
fn signal_serving() {
    // SAFETY: dup2 on the process's own standard descriptors; no Rust object owns fd 1.
    let result = unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) };
    if result < 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "closing the start pipe");
    }
}

pub async fn serve(flags: Flags) -> anyhow::Result<()> {
    super::logging::init(flags.debug);
    let Some(listener) = bind(&flags.socket).await? else {
        tracing::info!(socket = %flags.socket, "the pod's shim already serves");
        signal_serving();
        return Ok(());
    };
    let ttrpc_address =
        std::env::var("TTRPC_ADDRESS").context("TTRPC_ADDRESS is not set (run by containerd?)")?;
    let publisher = RemotePublisher::new(&ttrpc_address)
        .await
        .with_context(|| format!("connecting to containerd at {ttrpc_address}"))?;
    let exit = Arc::new(ExitSignal::default());
    // Every line of the pod's work carries its id: the Task handlers run in this span, and
    // what they spawn inherits it.
    let pod_id = std::env::var(POD_ID_VARIABLE).unwrap_or_else(|_| flags.id.clone());
    let pod_span = tracing::info_span!("pod", id = %pod_id);
    let task = Arc::new(TaskService::new(
        EventPublisher::new(&flags.namespace, publisher),
        exit.clone(),
        pod_span.clone(),
    ));
    let listener = Listener::try_from(listener).context("a ttrpc listener")?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(task_services(task.clone()));
    server.start().await.context("starting the ttrpc server")?;
    signal_serving();
    pod_span.in_scope(|| {
        tracing::info!(container = %flags.id, namespace = %flags.namespace, socket = %flags.socket, "shim serving");
    });

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    loop {
        tokio::select! {
            () = exit.wait() => break,
            // containerd ends a shim with Shutdown. A termination signal ends an idle shim
            // (one whose containerd went away, say) but must not orphan running pod VMs.
            _ = terminate.recv() => {
                if !task.shut_down_if_idle().await {
                    tracing::info!("SIGTERM ignored: containers still run; containerd shuts the shim down");
                }
            }
            _ = interrupt.recv() => tracing::info!("SIGINT ignored"),
        }
    }
    if let Err(err) = server.shutdown().await {
        tracing::warn!(error = %err, "stopping the ttrpc server");
    }
    let _ = std::fs::remove_file(socket_path(&flags.socket));
    tracing::info!("shim exited");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_lose_their_scheme() {
        assert_eq!(
            socket_path("unix:///run/containerd/s/ab"),
            "/run/containerd/s/ab"
        );
        assert_eq!(socket_path("/plain"), "/plain");
    }

    #[tokio::test]
    async fn a_serving_socket_is_left_alone_and_a_stale_one_replaced() {
        let dir = tempfile::tempdir().expect("temp dir");
        let address = format!("unix://{}/s/pod", dir.path().display());
        let first = bind(&address)
            .await
            .expect("bind")
            .expect("first server binds");
        first.set_nonblocking(true).expect("nonblocking");
        let _accepting = tokio::net::UnixListener::from_std(first).expect("tokio listener");
        assert!(
            bind(&address).await.expect("bind").is_none(),
            "second server leaves"
        );
        drop(_accepting);
        assert!(
            bind(&address).await.expect("bind").is_some(),
            "stale socket replaced"
        );
    }
}
