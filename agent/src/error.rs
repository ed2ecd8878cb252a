//! The failures of the agent's operations that the host caused or can act on. The operations
//! (containers, storage, sandbox) raise them; `rpc::to_ttrpc` alone maps them to ttrpc codes, so
//! every request reports a failure the same way and no operation depends on the transport.

/// A failure the caller caused or can act on; anything else maps to INTERNAL.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AgentError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The agent policy refused the request.
    #[error("{0}")]
    PermissionDenied(String),
}
