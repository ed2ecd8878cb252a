//! AgentService: each RPC delegates to a `do_*` handler returning `anyhow::Result`.

use std::path::Path;
use std::sync::Arc;

use cloak_protocol::agent::*;
use cloak_protocol::agent_ttrpc::AgentService;
use ttrpc::asynchronous::TtrpcContext;

use super::{to_ttrpc, AgentState};
use crate::guest_details;

pub struct AgentRpc {
    state: Arc<AgentState>,
}

impl AgentRpc {
    pub fn new(state: Arc<AgentState>) -> Self {
        Self { state }
    }

    async fn do_get_guest_details(&self) -> anyhow::Result<GuestDetailsResponse> {
        Ok(GuestDetailsResponse {
            kernel_release: guest_details::kernel_release(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            online_vcpus: guest_details::online_vcpus(),
            memory_total_bytes: guest_details::memory_total_bytes(),
            tee: guest_details::detect_tee(Path::new("/"), self.state.tee_hint.as_deref()).into(),
            loaded_modules: self.state.loaded_modules.clone(),
            agent_ready_ms: self
                .state
                .ready_at_ms
                .load(std::sync::atomic::Ordering::Relaxed),
            ..Default::default()
        })
    }

    async fn do_destroy_sandbox(&self, req: DestroySandboxRequest) -> anyhow::Result<Empty> {
        tracing::info!(power_off = req.power_off, "destroying sandbox");
        if req.power_off {
            // notify_one keeps the permit if serve() is not waiting yet.
            self.state.shutdown.notify_one();
        }
        Ok(Empty::default())
    }
}

#[async_trait::async_trait]
impl AgentService for AgentRpc {
    async fn get_guest_details(
        &self,
        _ctx: &TtrpcContext,
        _req: GuestDetailsRequest,
    ) -> ttrpc::Result<GuestDetailsResponse> {
        to_ttrpc("GetGuestDetails", self.do_get_guest_details().await)
    }

    async fn destroy_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: DestroySandboxRequest,
    ) -> ttrpc::Result<Empty> {
        to_ttrpc("DestroySandbox", self.do_destroy_sandbox(req).await)
    }
}
