//! Sessions, by the cookie `/kbs/v0/auth` sets: a challenge (the nonce) that one attestation
//! may answer — answered or failed, the nonce is spent, so a replayed attestation finds no
//! challenge — and then the attested claims and the guest's key, valid for the session's
//! time to live. Expired sessions are dropped as new ones arrive.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kbs_types::TeePubKey;
use rand_core::{OsRng, RngCore};

use crate::appraise::Claims;
use crate::BrokerError;

#[derive(Debug, Clone)]
pub(crate) enum State {
    Challenged { nonce: String },
    Attested { claims: Box<Claims>, key: TeePubKey },
}

struct Entry {
    state: State,
    expires: Instant,
}

pub(crate) struct Sessions {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

fn random_b64(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buffer);
    cloak_kbs_protocol::b64url(&buffer)
}

impl Sessions {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new session and its challenge: (session id, nonce).
    pub(crate) fn challenge(&self) -> (String, String) {
        let id = random_b64(24);
        let nonce = random_b64(32);
        let now = Instant::now();
        let mut entries = self.lock();
        entries.retain(|_, entry| entry.expires > now);
        entries.insert(
            id.clone(),
            Entry {
                state: State::Challenged {
                    nonce: nonce.clone(),
                },
                expires: now + self.ttl,
            },
        );
        (id, nonce)
    }

    /// Takes the session's nonce: it answers one attestation at most.
    pub(crate) fn take_nonce(&self, id: &str) -> Result<String, BrokerError> {
        let mut entries = self.lock();
        let entry = entries.remove(id).ok_or_else(|| {
            BrokerError::Unauthorized(
                "no such session (unknown, expired or already used cookie): authenticate again"
                    .to_owned(),
            )
        })?;
        if entry.expires <= Instant::now() {
            return Err(BrokerError::Unauthorized(
                "the session's challenge expired: authenticate again".to_owned(),
            ));
        }
        match entry.state {
            State::Challenged { nonce } => Ok(nonce),
            State::Attested { .. } => Err(BrokerError::Unauthorized(
                "this session already attested; its challenge cannot be answered twice".to_owned(),
            )),
        }
    }

    pub(crate) fn attested(&self, id: &str, claims: Claims, key: TeePubKey) {
        self.lock().insert(
            id.to_owned(),
            Entry {
                state: State::Attested {
                    claims: Box::new(claims),
                    key,
                },
                expires: Instant::now() + self.ttl,
            },
        );
    }

    /// The claims and key of an attested, unexpired session.
    pub(crate) fn of(&self, id: &str) -> Result<(Claims, TeePubKey), BrokerError> {
        let entries = self.lock();
        match entries.get(id) {
            Some(entry) if entry.expires <= Instant::now() => Err(BrokerError::Unauthorized(
                "the session expired: attest again".to_owned(),
            )),
            Some(Entry {
                state: State::Attested { claims, key },
                ..
            }) => Ok(((**claims).clone(), key.clone())),
            Some(_) => Err(BrokerError::Unauthorized(
                "the session has not attested".to_owned(),
            )),
            None => Err(BrokerError::Unauthorized(
                "no such session (unknown or expired cookie): attest first".to_owned(),
            )),
        }
    }
}
