//! What every request handler of the agent shares: the containers, the pod's sandbox, the
//! reaper, the TEE. Operations take it from here; the transport (`rpc/`) only hands it to them.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::container::ContainerRuntime;
use crate::reaper::Reaper;
use crate::sandbox::Sandbox;

/// State shared by every RPC handler.
pub(crate) struct AgentState {
    pub reaper: Arc<Reaper>,
    pub containers: ContainerRuntime,
    pub sandbox: tokio::sync::Mutex<Sandbox>,
    pub loaded_modules: Vec<String>,
    /// Signalled by DestroySandbox: the server stops and the VM powers off.
    pub shutdown: Notify,
    /// Set with `shutdown`: long-polling requests (GetOOMEvent) answer at once, so the
    /// server's stop waits for no request that would only end with the VM.
    pub powering_off: tokio::sync::watch::Sender<bool>,
    /// The TEE, decided at its first use (it may ask the host for a simulated one), and the
    /// report that question brought back, if any: its HOST_DATA serves the init-data check.
    pub tee: tokio::sync::OnceCell<(cloak_protocol::agent::TeeKind, Option<Vec<u8>>)>,
    pub ready_at_ms: std::sync::atomic::AtomicU64,
    /// The agent policy, loaded once at CreateSandbox and never replaced.
    pub policy: std::sync::OnceLock<crate::policy::AgentPolicy>,
    /// Whether containers may run from a directory the host shares: always without a TEE; in
    /// a TEE only where the init-data says so. Decided at CreateSandbox.
    pub shared_rootfs: std::sync::OnceLock<bool>,
    /// The pod's key broker (from its init-data) and attested session. Set at CreateSandbox.
    pub secrets: std::sync::OnceLock<crate::secrets::Secrets>,
}

impl AgentState {
    pub(crate) fn new(loaded_modules: Vec<String>) -> Self {
        let reaper = Reaper::new();
        Self {
            containers: ContainerRuntime::new(reaper.clone()),
            sandbox: tokio::sync::Mutex::new(Sandbox::default()),
            reaper,
            loaded_modules,
            shutdown: Notify::new(),
            powering_off: tokio::sync::watch::Sender::new(false),
            tee: tokio::sync::OnceCell::new(),
            ready_at_ms: std::sync::atomic::AtomicU64::new(0),
            policy: std::sync::OnceLock::new(),
            shared_rootfs: std::sync::OnceLock::new(),
            secrets: std::sync::OnceLock::new(),
        }
    }
}
