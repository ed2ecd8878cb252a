//! The broker's refusals, each with the HTTP status the protocol gives it (one mapping, used
//! by every route) and the Problem Details `detail` the guest shows as its reason.

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("{0}")]
    BadRequest(String),
    /// No session, an expired or spent one, or attestation that failed.
    #[error("{0}")]
    Unauthorized(String),
    /// Attested, but the resource policy does not grant this resource.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the resource policy: {0}")]
    Policy(String),
    #[error("{0}")]
    Internal(String),
}

impl BrokerError {
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Unauthorized(_) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::Policy(_) | Self::Internal(_) => 500,
        }
    }

    /// The Problem Details type name (RFC 7807), as Trustee's errors name theirs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "BadRequest",
            Self::Unauthorized(_) => "Unauthorized",
            Self::Forbidden(_) => "PolicyDeny",
            Self::NotFound(_) => "ResourceNotFound",
            Self::Policy(_) => "PolicyEngineError",
            Self::Internal(_) => "InternalError",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BrokerError;

    #[test]
    fn each_refusal_has_the_protocol_status() {
        let cases = [
            (BrokerError::BadRequest(String::new()), 400),
            (BrokerError::Unauthorized(String::new()), 401),
            (BrokerError::Forbidden(String::new()), 403),
            (BrokerError::NotFound(String::new()), 404),
            (BrokerError::Policy(String::new()), 500),
            (BrokerError::Internal(String::new()), 500),
        ];
        for (error, status) in cases {
            assert_eq!(error.status(), status, "{error:?}");
        }
    }
}
