//! Health: answers as soon as the server runs.

use cloak_protocol::health::{health_check_response::ServingStatus, *};
use cloak_protocol::health_ttrpc::Health;
use ttrpc::asynchronous::TtrpcContext;

pub(super) struct HealthRpc;

#[async_trait::async_trait]
impl Health for HealthRpc {
    async fn check(
        &self,
        _ctx: &TtrpcContext,
        _req: CheckRequest,
    ) -> ttrpc::Result<HealthCheckResponse> {
        Ok(HealthCheckResponse {
            status: ServingStatus::SERVING.into(),
            ..Default::default()
        })
    }

    async fn version(
        &self,
        _ctx: &TtrpcContext,
        _req: CheckRequest,
    ) -> ttrpc::Result<VersionCheckResponse> {
        Ok(VersionCheckResponse {
            protocol_version: cloak_protocol::PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
    }
}
