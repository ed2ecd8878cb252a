//! The one place where Task API failures become ttrpc status codes. containerd acts on the
//! codes (NotFound on Kill/Delete of a finished process is expected), so each failure says
//! which kind it is.

use containerd_shim::protos::ttrpc::{self, Code};

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    /// An agent RPC failed: its own status code is kept, the context is prepended.
    #[error("{context}: {source}")]
    Agent {
        context: String,
        source: ttrpc::Error,
    },
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
}

pub type TaskResult<T> = Result<T, TaskError>;

impl TaskError {
    pub fn agent(context: impl Into<String>) -> impl FnOnce(ttrpc::Error) -> Self {
        let context = context.into();
        move |source| Self::Agent { context, source }
    }

    fn code(&self) -> Code {
        match self {
            Self::NotFound(_) => Code::NOT_FOUND,
            Self::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Self::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            Self::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Self::Unimplemented(_) => Code::UNIMPLEMENTED,
            Self::Agent { source, .. } => match source {
                ttrpc::Error::RpcStatus(status) => status.code(),
                ttrpc::Error::LocalClosed | ttrpc::Error::RemoteClosed => Code::UNAVAILABLE,
                _ => Code::INTERNAL,
            },
            Self::Internal(_) => Code::INTERNAL,
        }
    }
}

impl From<TaskError> for ttrpc::Error {
    fn from(err: TaskError) -> Self {
        let message = match &err {
            TaskError::Agent {
                context,
                source: ttrpc::Error::RpcStatus(status),
            } => format!("{context}: {}", status.message()),
            other => other.to_string(),
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(err.code(), message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(err: TaskError) -> (Code, String) {
        match ttrpc::Error::from(err) {
            ttrpc::Error::RpcStatus(status) => (status.code(), status.message().to_owned()),
            other => panic!("not a status: {other:?}"),
        }
    }

    #[test]
    fn agent_status_codes_and_messages_pass_through_with_context() {
        let agent = ttrpc::Error::RpcStatus(ttrpc::get_status(Code::NOT_FOUND, "no such exec"));
        let (code, message) = status_of(TaskError::agent("signalling x")(agent));
        assert_eq!(code, Code::NOT_FOUND);
        assert_eq!(message, "signalling x: no such exec");
    }

    #[test]
    fn a_closed_agent_connection_is_unavailable() {
        let (code, _) = status_of(TaskError::agent("waiting")(ttrpc::Error::RemoteClosed));
        assert_eq!(code, Code::UNAVAILABLE);
    }

    #[test]
    fn local_kinds_map_to_their_codes() {
        assert_eq!(
            status_of(TaskError::NotFound("x".into())).0,
            Code::NOT_FOUND
        );
        assert_eq!(
            status_of(TaskError::Unimplemented("checkpoint".into())).0,
            Code::UNIMPLEMENTED
        );
        let (code, message) = status_of(TaskError::Internal(anyhow::anyhow!("boom")));
        assert_eq!((code, message.as_str()), (Code::INTERNAL, "boom"));
    }
}
