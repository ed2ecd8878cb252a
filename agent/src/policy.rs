//! The agent's side of the agent policy (`cloak-policy`): the policy it loaded is kept in its
//! state, and `enforce` turns a decision into what every RPC answers — going on, or
//! PERMISSION_DENIED naming the request, logged.

use cloak_policy::Decision;
pub(crate) use cloak_policy::{input, AgentPolicy};

use crate::error::AgentError;

/// The policy's word on `rpc` ("CreateContainer") for `input`: what an allowing decision
/// recorded, or PERMISSION_DENIED with "<Rpc>Request is blocked by policy" and the rule's
/// reason, which the agent also logs.
pub(crate) fn enforce(
    policy: &AgentPolicy,
    rpc: &str,
    input: serde_json::Value,
) -> Result<Option<serde_json::Value>, AgentError> {
    let request = format!("{rpc}Request");
    match policy.decide(&request, input) {
        Decision::Allow { record } => Ok(record),
        Decision::Deny { reason } => {
            tracing::warn!(
                request,
                reason = reason.as_deref().unwrap_or(""),
                "blocked by policy"
            );
            Err(AgentError::PermissionDenied(match reason {
                Some(reason) => format!("{request} is blocked by policy: {reason}"),
                None => format!("{request} is blocked by policy"),
            }))
        }
    }
}
