//! `cloak kbs`: a key broker for one node and for tests, speaking Trustee's KBS protocol
//! (`cloak-kbs-protocol`). A pod authenticates, attests with its SNP report (verified here by
//! cloak's own verifier against AMD's roots, or the simulated TEE's root only when started with
//! allow-simulated), and then gets resources from a directory, each released only if the Rego
//! resource policy (regorus) admits the verified claims, and encrypted to the ephemeral key the
//! report binds. Pods point at a Trustee KBS instead by naming it in their init-data.

mod appraise;
mod error;
mod resource_policy;
mod resources;
mod server;
mod sessions;
mod tls;
mod token;

use std::path::PathBuf;
use std::time::Duration;

pub use appraise::Claims;
pub use error::BrokerError;
pub use resource_policy::DEFAULT_POLICY;
pub use server::serve;
pub use tls::acceptor as tls_acceptor;

use cloak_attestation::verify::MinimumTcb;

/// What a broker is started with.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Resources live at `<dir>/<repository>/<type>/<tag>`.
    pub resources_dir: PathBuf,
    /// Acceptable launch measurements (hex), from `cloak image build`'s reference values.
    pub measurements: Vec<String>,
    /// Acceptable HOST_DATA values (hex, 32 bytes): the init-data digests of the pods served.
    pub host_data: Vec<String>,
    pub minimum_tcb: MinimumTcb,
    /// The resource policy (Rego, package `cloak.kbs`, rule `allow` and set `violations`).
    pub policy: String,
    /// Accept reports under cloak's simulated TEE root: development and tests only.
    pub allow_simulated: bool,
    /// How long an attested session may fetch resources, and a challenge may wait.
    pub session_ttl: Duration,
}

/// A broker's state: its configuration, sessions, compiled policy and token key.
pub struct Broker {
    config: BrokerConfig,
    sessions: sessions::Sessions,
    policy: resource_policy::ResourcePolicy,
    token_key: token::TokenKey,
}

impl Broker {
    pub fn new(config: BrokerConfig) -> Result<Self, BrokerError> {
        let policy = resource_policy::ResourcePolicy::new(&config)?;
        if config.allow_simulated {
            tracing::warn!("this key broker accepts SIMULATED TEEs: what it releases is not protected by any hardware");
        }
        Ok(Self {
            sessions: sessions::Sessions::new(config.session_ttl),
            policy,
            token_key: token::TokenKey::generate(),
            config,
        })
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }
}
