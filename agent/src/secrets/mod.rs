//! Secrets released to this pod after attestation: the key broker named in the pod's measured
//! init-data (`cdh.toml` `[kbc] url`) gets this VM's report, whose REPORT_DATA binds the
//! broker's nonce and an ephemeral key made here, and answers with resources encrypted to that
//! key. One attested session serves every container of the pod (a refused resource after the
//! session expired attests again, once). The host relays ciphertext only; plaintext exists
//! only in guest memory (`/run/cloak/unsealed`, `/run/cloak/secrets`: the initramfs, RAM).

mod unseal;

use std::path::PathBuf;

use cloak_kbs_protocol::client::{ClientError, KbsClient, Session};
use cloak_kbs_protocol::evidence::SnpEvidence;
use cloak_kbs_protocol::resource::ResourceUri;
use cloak_protocol::agent::TeeKind;

pub(crate) use unseal::{unseal_container, unseal_exec};

/// Where a container's unsealed files are kept (removed with the container).
pub(crate) fn unsealed_dir(container_id: &str) -> PathBuf {
    PathBuf::from("/run/cloak/unsealed").join(container_id)
}

/// Where the init-data's resources appear, in the guest and in every container.
pub(crate) const SECRETS_DIR: &str = "/run/cloak/secrets";

#[derive(Debug, thiserror::Error)]
pub(crate) enum SecretError {
    #[error(
        "this pod's init-data names no key broker (cdh.toml: [kbc] url), so {0} cannot be unsealed"
    )]
    NoBroker(String),
    #[error("the init-data's key broker settings: {0}")]
    Settings(String),
    #[error("this VM has no TEE: secrets are released only to attested pods")]
    NoTee,
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{what}: {reason}")]
    Io { what: String, reason: String },
}

/// The pod's key broker and its attested session.
pub(crate) struct Secrets {
    settings: Result<Option<cloak_init_data::KbsSettings>, String>,
    files: Vec<String>,
    init_data: Option<String>,
    session: tokio::sync::Mutex<Option<Session>>,
    /// Resources already released, by name: the pod's execs and later containers reuse them
    /// (guest memory, like every unsealed copy).
    released: std::sync::Mutex<std::collections::HashMap<ResourceUri, Vec<u8>>>,
    files_placed: tokio::sync::OnceCell<()>,
}

impl Secrets {
    /// From the pod's (checked) init-data.
    pub(crate) fn of_init_data(init_data: &[u8]) -> Self {
        let parsed = cloak_init_data::InitData::parse(init_data).ok();
        Self {
            settings: match &parsed {
                Some(document) => document.kbs().map_err(|err| err.to_string()),
                None => Ok(None),
            },
            files: parsed
                .as_ref()
                .map(|document| {
                    document
                        .secret_files()
                        .into_iter()
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            init_data: parsed
                .and_then(|document| String::from_utf8(document.bytes().to_vec()).ok()),
            session: tokio::sync::Mutex::new(None),
            released: Default::default(),
            files_placed: tokio::sync::OnceCell::new(),
        }
    }

    fn client(&self, wanted: &str) -> Result<KbsClient, SecretError> {
        match &self.settings {
            Ok(Some(settings)) => Ok(KbsClient::new(&settings.url, settings.cert.as_deref())?),
            Ok(None) => Err(SecretError::NoBroker(wanted.to_owned())),
            Err(err) => Err(SecretError::Settings(err.clone())),
        }
    }

    /// One resource, attesting first if this pod has no live session.
    pub(crate) async fn fetch(
        &self,
        tee: TeeKind,
        uri: &ResourceUri,
    ) -> Result<Vec<u8>, SecretError> {
        if let Some(plaintext) = self.released().get(uri) {
            return Ok(plaintext.clone());
        }
        let plaintext = self.fetch_from_broker(tee, uri).await?;
        self.released().insert(uri.clone(), plaintext.clone());
        Ok(plaintext)
    }

    fn released(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<ResourceUri, Vec<u8>>> {
        self.released
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn fetch_from_broker(
        &self,
        tee: TeeKind,
        uri: &ResourceUri,
    ) -> Result<Vec<u8>, SecretError> {
        let client = self.client(&format!("kbs:///{uri}"))?;
        let mut session = self.session.lock().await;
        let (current, fresh) = match session.take() {
            Some(current) => (current, false),
            None => (self.attest(&client, tee).await?, true),
        };
        let (current, answer) = match client.resource(&current, uri).await {
            // The session expired: attest once more.
            Err(ClientError::Refused { status: 401, .. }) if !fresh => {
                let renewed = self.attest(&client, tee).await?;
                let answer = client.resource(&renewed, uri).await;
                (renewed, answer)
            }
            answer => (current, answer),
        };
        *session = Some(current);
        Ok(answer?)
    }

    async fn attest(&self, client: &KbsClient, tee: TeeKind) -> Result<Session, SecretError> {
        if tee == TeeKind::TEE_NONE {
            return Err(SecretError::NoTee);
        }
        let started = std::time::Instant::now();
        let session = client
            .attest(self.init_data.as_deref(), |report_data| async move {
                match crate::attestation::fetch_from(tee, report_data.to_vec()).await {
                    Some(Ok(report)) => Ok(SnpEvidence::new(&report.report, &report.certificates)),
                    Some(Err(err)) => Err(err.to_string()),
                    None => Err("no TEE".to_owned()),
                }
            })
            .await?;
        if session.simulated {
            tracing::warn!(
                "the key broker accepts SIMULATED TEEs: the secrets it releases are not protected"
            );
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "attested to the key broker"
        );
        Ok(session)
    }

    /// The init-data's resources as files below `/run/cloak/secrets` (fetched once); whether
    /// there are any.
    pub(crate) async fn ensure_files(&self, tee: TeeKind) -> Result<bool, SecretError> {
        if self.files.is_empty() {
            return Ok(false);
        }
        self.files_placed
            .get_or_try_init(|| self.place_files(tee))
            .await?;
        Ok(true)
    }

    async fn place_files(&self, tee: TeeKind) -> Result<(), SecretError> {
        for name in &self.files {
            let uri = ResourceUri::parse(name).map_err(|err| {
                SecretError::Settings(format!("{}: {err}", cloak_init_data::SECRETS_KEY))
            })?;
            let plaintext = self.fetch(tee, &uri).await?;
            let path = PathBuf::from(SECRETS_DIR)
                .join(&uri.repository)
                .join(&uri.kind)
                .join(&uri.tag);
            unseal::write_private(&path, &plaintext, 0o444)?;
            tracing::info!(resource = %uri, "init-data resource placed");
        }
        Ok(())
    }
}
