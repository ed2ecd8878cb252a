//! AgentService: each RPC is first put to the agent policy (`gate`), then delegates to a
//! `do_*` handler returning `anyhow::Result`; `to_ttrpc` maps the errors.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cloak_protocol::agent::*;
use cloak_protocol::agent_ttrpc::AgentService;
use ttrpc::asynchronous::TtrpcContext;

use super::to_ttrpc;
use crate::error::AgentError;
use crate::guest_details;
use crate::state::AgentState;

pub(super) struct AgentRpc {
    state: Arc<AgentState>,
}

impl AgentRpc {
    pub(super) fn new(state: Arc<AgentState>) -> Self {
        Self { state }
    }

    /// The TEE this VM runs in: hardware if the guest has an SNP driver, else a simulated one
    /// if the host's simulated AMD-SP answers, else none. Decided once.
    async fn tee(&self) -> TeeKind {
        self.tee_and_probe_report().await.0
    }

    async fn tee_and_probe_report(&self) -> &(TeeKind, Option<Vec<u8>>) {
        self.state
            .tee
            .get_or_init(|| async {
                let root = Path::new("/");
                let simulated_report = if guest_details::has_snp_guest_driver(root) {
                    None
                } else {
                    match crate::attestation::fetch_simulated_report(&[]).await {
                        Ok(report) => Some(report.report),
                        Err(err) => {
                            tracing::debug!(reason = %err, "no simulated TEE");
                            None
                        }
                    }
                };
                let tee = guest_details::detect_tee(root, simulated_report.is_some());
                tracing::info!(tee = ?tee, "TEE detected");
                (tee, simulated_report)
            })
            .await
    }

    async fn do_get_guest_details(&self) -> anyhow::Result<GuestDetailsResponse> {
        Ok(GuestDetailsResponse {
            kernel_release: guest_details::kernel_release(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            online_vcpus: guest_details::online_vcpus(),
            memory_total_bytes: guest_details::memory_total_bytes(),
            tee: self.tee().await.into(),
            loaded_modules: self.state.loaded_modules.clone(),
            agent_ready_ms: self
                .state
                .ready_at_ms
                .load(std::sync::atomic::Ordering::Relaxed),
            ..Default::default()
        })
    }

    async fn do_get_attestation_report(
        &self,
        req: AttestationReportRequest,
    ) -> anyhow::Result<AttestationReportResponse> {
        use crate::attestation::{fetch_from, ReportError, REPORT_DATA_BYTES};
        if req.report_data.len() > REPORT_DATA_BYTES {
            return Err(AgentError::InvalidArgument(format!(
                "report_data is {} bytes; at most {REPORT_DATA_BYTES}",
                req.report_data.len()
            ))
            .into());
        }
        let tee = self.tee().await;
        let report = match fetch_from(tee, req.report_data).await {
            None => {
                return Err(AgentError::FailedPrecondition(
                    "this pod VM has no TEE: no SEV-SNP guest driver or configfs-tsm provider"
                        .to_owned(),
                )
                .into())
            }
            Some(Err(ReportError::Unavailable(reason))) => {
                return Err(AgentError::FailedPrecondition(reason).into())
            }
            Some(report) => report?,
        };
        tracing::info!(provider = %report.provider, bytes = report.report.len(), "attestation report");
        Ok(AttestationReportResponse {
            tee: tee.into(),
            report: report.report,
            certificates: report.certificates,
            ..Default::default()
        })
    }

    async fn do_update_interface(&self, req: UpdateInterfaceRequest) -> anyhow::Result<Interface> {
        let wanted = req.interface.into_option().ok_or_else(|| {
            AgentError::InvalidArgument("UpdateInterface names no interface".to_owned())
        })?;
        tokio::task::spawn_blocking(move || crate::network::update_interface(&wanted)).await?
    }

    async fn do_update_routes(&self, req: UpdateRoutesRequest) -> anyhow::Result<Routes> {
        let routes =
            tokio::task::spawn_blocking(move || crate::network::update_routes(&req.routes))
                .await??;
        Ok(Routes {
            routes,
            ..Default::default()
        })
    }

    async fn do_list_interfaces(&self) -> anyhow::Result<Interfaces> {
        let interfaces = tokio::task::spawn_blocking(crate::network::list_interfaces).await??;
        Ok(Interfaces {
            interfaces,
            ..Default::default()
        })
    }

    /// The policy's word on request `rpc`: what an allowing decision recorded, or why not.
    /// Before CreateSandbox has loaded a policy only what a VM needs before it is a pod
    /// (GetGuestDetails, DestroySandbox) is served.
    async fn gate(
        &self,
        rpc: &'static str,
        req: &impl protobuf::MessageFull,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        const BEFORE_THE_POD: [&str; 2] = ["GetGuestDetails", "DestroySandbox"];
        let Some(policy) = self.state.policy.get() else {
            if BEFORE_THE_POD.contains(&rpc) {
                return Ok(None);
            }
            let refusal = self.state.sandbox.lock().await.refusal.clone();
            return Err(AgentError::FailedPrecondition(match refusal {
                Some(reason) => format!("this pod runs no containers: {reason}"),
                None => format!("{rpc}: the pod is not created yet (CreateSandbox comes first)"),
            })
            .into());
        };
        Ok(crate::policy::enforce(
            policy,
            rpc,
            crate::policy::input::of_message(req),
        )?)
    }

    /// Checks the init-data against the launch, loads the policy it carries (once), puts the
    /// request itself to that policy, then sets the sandbox up.
    async fn do_create_sandbox(&self, req: CreateSandboxRequest) -> anyhow::Result<Empty> {
        let refusal = self.init_data_refusal(&req.init_data).await;
        if refusal.is_none() && self.state.policy.get().is_none() {
            let policy = crate::policy::AgentPolicy::of_init_data(&req.init_data)
                .map_err(|err| AgentError::FailedPrecondition(err.to_string()))?;
            tracing::info!(own = !req.init_data.is_empty(), "agent policy loaded");
            // A concurrent CreateSandbox may have won: the first policy stays.
            let _ = self.state.policy.set(policy);
            let _ = self
                .state
                .shared_rootfs
                .set(self.shared_rootfs_allowed(&req.init_data).await);
            let _ = self
                .state
                .secrets
                .set(crate::secrets::Secrets::of_init_data(&req.init_data));
        }
        if let Some(policy) = self.state.policy.get() {
            crate::policy::enforce(
                policy,
                "CreateSandbox",
                crate::policy::input::of_message(&req),
            )?;
        }
        self.state.sandbox.lock().await.create(&req, refusal)?;
        Ok(Empty::default())
    }

    /// Whether this pod's containers may run from a host-shared directory: without a TEE
    /// yes; in one only if its (checked) init-data says `"cloak.rootfs" = "shared"`.
    async fn shared_rootfs_allowed(&self, init_data: &[u8]) -> bool {
        let (tee, _) = self.tee_and_probe_report().await;
        if *tee == cloak_protocol::agent::TeeKind::TEE_NONE {
            return true;
        }
        let allowed = cloak_init_data::InitData::parse(init_data)
            .ok()
            .is_some_and(|document| document.get(cloak_init_data::ROOTFS_KEY) == Some("shared"));
        if allowed {
            tracing::warn!("this pod in a TEE may run containers from host-shared directories (init-data cloak.rootfs = \"shared\"): the host chooses their files");
        }
        allowed
    }

    /// In a TEE the init-data must be what the VM was launched with (its SHA-256 is the
    /// report's HOST_DATA); otherwise the reason containers will be refused. Without a TEE
    /// there is no launch-bound value to check against.
    async fn init_data_refusal(&self, init_data: &[u8]) -> Option<String> {
        use crate::attestation::{check_init_data, fetch_from};
        let (tee, probe_report) = self.tee_and_probe_report().await;
        // HOST_DATA is fixed at launch: the report that found the TEE tells it as well.
        if let Some(report) = probe_report {
            return check_init_data(init_data, report)
                .err()
                .map(|err| err.to_string());
        }
        match fetch_from(*tee, Vec::new()).await? {
            Ok(report) => check_init_data(init_data, &report.report)
                .err()
                .map(|err| err.to_string()),
            Err(err) => Some(format!("cannot read this VM's HOST_DATA: {err}")),
        }
    }

    /// Creates the container the policy admitted; what the decision recorded is kept for the
    /// container's later requests.
    async fn do_create_container(
        &self,
        req: CreateContainerRequest,
        record: Option<serde_json::Value>,
    ) -> anyhow::Result<()> {
        if let Some(reason) = self.state.sandbox.lock().await.refusal.clone() {
            return Err(AgentError::FailedPrecondition(format!(
                "this pod runs no containers: {reason}"
            ))
            .into());
        }
        let shared = req
            .rootfs
            .as_ref()
            .is_some_and(|rootfs| rootfs.driver != crate::layers::LAYERS_DRIVER);
        if shared && self.state.shared_rootfs.get() != Some(&true) {
            return Err(AgentError::PermissionDenied(
                "a pod in a TEE runs containers only from verified layers, not from a host-shared directory (init-data cloak.rootfs = \"shared\" allows it, for development)".to_owned(),
            )
            .into());
        }
        let id = req.container_id.clone();
        // The layers' root hashes come from the policy's record, never from the host, where
        // the policy pins them.
        let pinned_layers = record
            .as_ref()
            .and_then(|record| record.get("layers"))
            .and_then(|layers| serde_json::from_value::<Vec<String>>(layers.clone()).ok());
        // Admitted first, so the stream decisions can see what was recorded.
        if let Some(policy) = self.state.policy.get() {
            policy.admit(&id, record);
        }
        let grants = self.stream_grants(&id, "");
        let created = async {
            // After the policy saw the request as the host sent it (sealed), before anything
            // runs.
            let mut req = req;
            if let Some(secrets) = self.state.secrets.get() {
                let tee = self.tee().await;
                match crate::secrets::unseal_container(secrets, tee, &id, &req.oci_spec_json).await
                {
                    Ok(Some(spec)) => req.oci_spec_json = spec,
                    Ok(None) => {}
                    Err(err) => {
                        return Err(AgentError::FailedPrecondition(format!(
                            "container {id} refused: {err}"
                        ))
                        .into())
                    }
                }
            }
            self.state
                .containers
                .create(req, grants, pinned_layers)
                .await
        }
        .await;
        if created.is_err() {
            let _ = std::fs::remove_dir_all(crate::secrets::unsealed_dir(&id));
            if let Some(policy) = self.state.policy.get() {
                policy.forget(&id);
            }
        }
        created
    }

    /// Which streams of process `exec_id` of container `container_id` the policy lets reach
    /// the host (the rules of ReadStdout, ReadStderr and WriteStdin).
    fn stream_grants(&self, container_id: &str, exec_id: &str) -> crate::container::StreamGrants {
        let Some(policy) = self.state.policy.get() else {
            return crate::container::StreamGrants::ALL;
        };
        let allowed = |rpc| {
            let input = crate::policy::input::of_stream(container_id, exec_id);
            crate::policy::enforce(policy, rpc, input).is_ok()
        };
        crate::container::StreamGrants {
            stdin: allowed("WriteStdin"),
            stdout: allowed("ReadStdout"),
            stderr: allowed("ReadStderr"),
        }
    }

    async fn do_destroy_sandbox(&self, req: DestroySandboxRequest) -> anyhow::Result<Empty> {
        tracing::info!(power_off = req.power_off, "destroying sandbox");
        self.state
            .sandbox
            .lock()
            .await
            .destroy(&self.state.containers)
            .await;
        if req.power_off {
            self.state.powering_off.send_replace(true);
            // notify_one keeps the permit if serve() is not waiting yet.
            self.state.shutdown.notify_one();
        }
        Ok(Empty::default())
    }

    async fn do_wait_process(&self, req: ProcessRequest) -> anyhow::Result<WaitProcessResponse> {
        let exit = self
            .state
            .containers
            .wait(&req.container_id, &req.exec_id)
            .await?;
        Ok(WaitProcessResponse {
            exit_status: exit.code,
            exited_at_unix_nanos: exit.at_unix_nanos,
            ..Default::default()
        })
    }

    async fn do_list_processes(
        &self,
        req: ContainerRequest,
    ) -> anyhow::Result<ListProcessesResponse> {
        let processes = self
            .state
            .containers
            .list_processes(&req.container_id)
            .await?;
        Ok(ListProcessesResponse {
            processes: processes
                .into_iter()
                .map(|(pid, exec_id, command)| ProcessInfo {
                    pid: pid as u32,
                    exec_id,
                    command,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn do_get_oom_event(&self) -> anyhow::Result<OOMEvent> {
        let mut powering_off = self.state.powering_off.subscribe();
        let container_id = tokio::select! {
            event = self.state.containers.next_oom_event() => event?,
            _ = powering_off.wait_for(|off| *off) => {
                return Err(AgentError::FailedPrecondition(
                    "the pod VM is powering off: no more OOM events".into(),
                )
                .into());
            }
        };
        Ok(OOMEvent {
            container_id,
            ..Default::default()
        })
    }
}

fn empty(result: anyhow::Result<()>) -> anyhow::Result<Empty> {
    result.map(|()| Empty::default())
}

#[async_trait::async_trait]
impl AgentService for AgentRpc {
    async fn get_guest_details(
        &self,
        _ctx: &TtrpcContext,
        req: GuestDetailsRequest,
    ) -> ttrpc::Result<GuestDetailsResponse> {
        if let Err(err) = self.gate("GetGuestDetails", &req).await {
            return to_ttrpc("GetGuestDetails", Err(err));
        }
        to_ttrpc("GetGuestDetails", self.do_get_guest_details().await)
    }

    async fn create_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: CreateSandboxRequest,
    ) -> ttrpc::Result<Empty> {
        to_ttrpc("CreateSandbox", self.do_create_sandbox(req).await)
    }

    async fn destroy_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: DestroySandboxRequest,
    ) -> ttrpc::Result<Empty> {
        if let Err(err) = self.gate("DestroySandbox", &req).await {
            return to_ttrpc("DestroySandbox", Err(err));
        }
        to_ttrpc("DestroySandbox", self.do_destroy_sandbox(req).await)
    }

    async fn create_container(
        &self,
        _ctx: &TtrpcContext,
        req: CreateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let record = match self.gate("CreateContainer", &req).await {
            Ok(record) => record,
            Err(err) => {
                // The host's streams for it end now, not when they expire.
                self.state.containers.streams.forget(&req.container_id, "");
                return to_ttrpc("CreateContainer", Err(err));
            }
        };
        to_ttrpc(
            "CreateContainer",
            empty(self.do_create_container(req, record).await),
        )
    }

    async fn start_container(
        &self,
        _ctx: &TtrpcContext,
        req: ContainerRequest,
    ) -> ttrpc::Result<Empty> {
        if let Err(err) = self.gate("StartContainer", &req).await {
            return to_ttrpc("StartContainer", Err(err));
        }
        to_ttrpc(
            "StartContainer",
            empty(self.state.containers.start(&req.container_id).await),
        )
    }

    async fn remove_container(
        &self,
        _ctx: &TtrpcContext,
        req: RemoveContainerRequest,
    ) -> ttrpc::Result<Empty> {
        if let Err(err) = self.gate("RemoveContainer", &req).await {
            return to_ttrpc("RemoveContainer", Err(err));
        }
        let timeout = Duration::from_secs(u64::from(req.timeout_secs));
        let removed = self
            .state
            .containers
            .remove(&req.container_id, timeout)
            .await;
        if removed.is_ok() {
            if let Some(policy) = self.state.policy.get() {
                policy.forget(&req.container_id);
            }
        }
        to_ttrpc("RemoveContainer", empty(removed))
    }

    async fn exec_process(
        &self,
        _ctx: &TtrpcContext,
        req: ExecProcessRequest,
    ) -> ttrpc::Result<Empty> {
        if let Err(err) = self.gate("ExecProcess", &req).await {
            // The host's streams (a terminal, say) end now instead of hanging until they expire.
            self.state
                .containers
                .streams
                .forget(&req.container_id, &req.exec_id);
            return to_ttrpc("ExecProcess", Err(err));
        }
        let mut req = req;
        if let Some(secrets) = self.state.secrets.get() {
            let tee = self.tee().await;
            match crate::secrets::unseal_exec(secrets, tee, &req.container_id, &req.process_json)
                .await
            {
                Ok(Some(process)) => req.process_json = process,
                Ok(None) => {}
                Err(err) => {
                    self.state
                        .containers
                        .streams
                        .forget(&req.container_id, &req.exec_id);
                    return to_ttrpc(
                        "ExecProcess",
                        Err(AgentError::FailedPrecondition(format!("exec refused: {err}")).into()),
                    );
                }
            }
        }
        let grants = self.stream_grants(&req.container_id, &req.exec_id);
        to_ttrpc(
            "ExecProcess",
            empty(self.state.containers.exec(req, grants).await),
        )
    }

    async fn signal_process(
        &self,
        _ctx: &TtrpcContext,
        req: SignalProcessRequest,
    ) -> ttrpc::Result<Empty> {
        if let Err(err) = self.gate("SignalProcess", &req).await {
            return to_ttrpc("SignalProcess", Err(err));
        }
        let result = self
            .state
            .containers
            .signal(&req.container_id, &req.exec_id, req.signal, req.all)
            .await;
        to_ttrpc("SignalProcess", empty(result))
    }

    async fn wait_process(
        &self,
        _ctx: &TtrpcContext,
        req: ProcessRequest,
    ) -> ttrpc::Result<WaitProcessResponse> {
        if let Err(err) = self.gate("WaitProcess", &req).await {
            return to_ttrpc("WaitProcess", Err(err));
        }
        to_ttrpc("WaitProcess", self.do_wait_process(req).await)
    }

    async fn list_processes(
        &self,
        _ctx: &TtrpcContext,
        req: ContainerRequest,
    ) -> ttrpc::Result<ListProcessesResponse> {
        if let Err(err) = self.gate("ListProcesses", &req).await {
            return to_ttrpc("ListProcesses", Err(err));
        }
        to_ttrpc("ListProcesses", self.do_list_processes(req).await)
    }

    async fn pause_container(
        &self,
        _ctx: &TtrpcContext,
        req: ContainerRequest,
    ) -> ttrpc::Result<Empty> {
        if let Err(err) = self.gate("PauseContainer", &req).await {
            return to_ttrpc("PauseContainer", Err(err));
        }
        to_ttrpc(
            "PauseContainer",
            empty(self.state.containers.pause(&req.container_id).await),
        )
    }

    async fn resume_container(
        &self,
        _ctx: &TtrpcContext,
        req: ContainerRequest,
    ) -> ttrpc::Result<Empty> {
        if let Err(err) = self.gate("ResumeContainer", &req).await {
            return to_ttrpc("ResumeContainer", Err(err));
        }
        to_ttrpc(
            "ResumeContainer",
            empty(self.state.containers.resume(&req.container_id).await),
        )
    }

    async fn update_container(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        if let Err(err) = self.gate("UpdateContainer", &req).await {
            return to_ttrpc("UpdateContainer", Err(err));
        }
        let result = self
            .state
            .containers
            .update(&req.container_id, &req.resources_json)
            .await;
        to_ttrpc("UpdateContainer", empty(result))
    }

    async fn stats_container(
        &self,
        _ctx: &TtrpcContext,
        req: ContainerRequest,
    ) -> ttrpc::Result<StatsContainerResponse> {
        if let Err(err) = self.gate("StatsContainer", &req).await {
            return to_ttrpc("StatsContainer", Err(err));
        }
        to_ttrpc(
            "StatsContainer",
            self.state.containers.stats(&req.container_id).await,
        )
    }

    async fn get_oom_event(
        &self,
        _ctx: &TtrpcContext,
        req: GetOOMEventRequest,
    ) -> ttrpc::Result<OOMEvent> {
        if let Err(err) = self.gate("GetOOMEvent", &req).await {
            return to_ttrpc("GetOOMEvent", Err(err));
        }
        to_ttrpc("GetOOMEvent", self.do_get_oom_event().await)
    }

    async fn close_stdin(&self, _ctx: &TtrpcContext, req: ProcessRequest) -> ttrpc::Result<Empty> {
        if let Err(err) = self.gate("CloseStdin", &req).await {
            return to_ttrpc("CloseStdin", Err(err));
        }
        let result = self
            .state
            .containers
            .close_stdin(&req.container_id, &req.exec_id)
            .await;
        to_ttrpc("CloseStdin", empty(result))
    }

    async fn get_attestation_report(
        &self,
        _ctx: &TtrpcContext,
        req: AttestationReportRequest,
    ) -> ttrpc::Result<AttestationReportResponse> {
        if let Err(err) = self.gate("GetAttestationReport", &req).await {
            return to_ttrpc("GetAttestationReport", Err(err));
        }
        to_ttrpc(
            "GetAttestationReport",
            self.do_get_attestation_report(req).await,
        )
    }

    async fn update_interface(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateInterfaceRequest,
    ) -> ttrpc::Result<Interface> {
        if let Err(err) = self.gate("UpdateInterface", &req).await {
            return to_ttrpc("UpdateInterface", Err(err));
        }
        to_ttrpc("UpdateInterface", self.do_update_interface(req).await)
    }

    async fn update_routes(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateRoutesRequest,
    ) -> ttrpc::Result<Routes> {
        if let Err(err) = self.gate("UpdateRoutes", &req).await {
            return to_ttrpc("UpdateRoutes", Err(err));
        }
        to_ttrpc("UpdateRoutes", self.do_update_routes(req).await)
    }

    async fn list_interfaces(&self, _ctx: &TtrpcContext, req: Empty) -> ttrpc::Result<Interfaces> {
        if let Err(err) = self.gate("ListInterfaces", &req).await {
            return to_ttrpc("ListInterfaces", Err(err));
        }
        to_ttrpc("ListInterfaces", self.do_list_interfaces().await)
    }

    async fn tty_win_resize(
        &self,
        _ctx: &TtrpcContext,
        req: TtyWinResizeRequest,
    ) -> ttrpc::Result<Empty> {
        if let Err(err) = self.gate("TtyWinResize", &req).await {
            return to_ttrpc("TtyWinResize", Err(err));
        }
        let result = self
            .state
            .containers
            .resize_tty(&req.container_id, &req.exec_id, req.rows, req.columns)
            .await;
        to_ttrpc("TtyWinResize", empty(result))
    }
}
