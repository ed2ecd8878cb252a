//! The broker end to end over HTTP on loopback, with the guest's real client and reports signed
//! by the simulated AMD-SP (`cloak_attestation::simulated_psp`, whose inputs the test chooses:
//! these tests check the protocol, not a measurement). Every refusal the issue lists is a
//! case: a replayed nonce, a swapped tee-pubkey, a stale or unknown cookie, a resource the
//! policy does not grant, a measurement or HOST_DATA not among the reference values, a debug
//! policy, and a simulated report at a broker not told to accept one.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use cloak_attestation::simulated_psp::{ReportInputs, SimulatedPsp};
use cloak_kbs::{Broker, BrokerConfig};
use cloak_kbs_protocol::client::{ClientError, KbsClient};
use cloak_kbs_protocol::evidence::SnpEvidence;
use cloak_kbs_protocol::http;
use cloak_kbs_protocol::jwe::TeeKeyPair;
use cloak_kbs_protocol::resource::ResourceUri;

const MEASUREMENT: [u8; 48] = [0x5a; 48];
const INIT_DATA: &str =
    "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"note\" = \"kbs test\"\n";
const SECRET: &[u8] = b"s3cret value";
/// Guest policy with SMT allowed and the reserved bit 17 set; bit 19 is debug.
const POLICY: u64 = 0x30000;
const DEBUG_POLICY: u64 = 0x30000 | (1 << 19);

struct Fixture {
    url: String,
    psp: Arc<SimulatedPsp>,
    _resources: tempfile::TempDir,
}

fn host_data_of(init_data: &str) -> [u8; 32] {
    cloak_init_data::host_data_for(init_data.as_bytes()).unwrap()
}

async fn broker(adjust: impl FnOnce(&mut BrokerConfig)) -> Fixture {
    broker_over(adjust, None).await
}

/// A broker on loopback, over TLS with `tls`.
async fn broker_over(
    adjust: impl FnOnce(&mut BrokerConfig),
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Fixture {
    let resources = tempfile::tempdir().unwrap();
    let dir = resources.path().join("default/secret");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("db"), SECRET).unwrap();
    std::fs::write(dir.join("other"), b"other").unwrap();
    let mut config = BrokerConfig {
        resources_dir: resources.path().to_owned(),
        measurements: vec![hex::encode(MEASUREMENT)],
        host_data: vec![hex::encode(host_data_of(INIT_DATA))],
        minimum_tcb: Default::default(),
        policy: cloak_kbs::DEFAULT_POLICY.to_owned(),
        allow_simulated: true,
        session_ttl: Duration::from_secs(60),
    };
    adjust(&mut config);
    let broker = Arc::new(Broker::new(config).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr().unwrap());
    tokio::spawn(cloak_kbs::serve(listener, broker, tls));
    Fixture {
        url,
        psp: Arc::new(SimulatedPsp::generate().unwrap()),
        _resources: resources,
    }
}

/// Evidence as a guest launched with `measurement`, `init_data` and `policy` gets it.
fn evidence_for(
    psp: &SimulatedPsp,
    measurement: [u8; 48],
    init_data: &str,
    policy: u64,
    report_data: [u8; 64],
) -> SnpEvidence {
    let report = psp
        .report(&ReportInputs {
            measurement,
            host_data: host_data_of(init_data),
            report_data,
            policy,
        })
        .unwrap();
    SnpEvidence::new(&report, &psp.certificates_pem().unwrap())
}

fn db() -> ResourceUri {
    ResourceUri::parse("kbs:///default/secret/db").unwrap()
}

async fn attest_as(
    fixture: &Fixture,
    measurement: [u8; 48],
    init_data: &str,
    policy: u64,
) -> Result<Vec<u8>, ClientError> {
    let client = KbsClient::new(&fixture.url, None).unwrap();
    let psp = fixture.psp.clone();
    let sent = init_data.to_owned();
    let launched = init_data.to_owned();
    let session = client
        .attest(Some(&sent), move |report_data| async move {
            Ok(evidence_for(
                &psp,
                measurement,
                &launched,
                policy,
                report_data,
            ))
        })
        .await?;
    client.resource(&session, &db()).await
}

/// Attests as a guest launched with MEASUREMENT, INIT_DATA and POLICY that sends `claimed`
/// as its init-data.
async fn attest_claiming(
    fixture: &Fixture,
    claimed: &str,
) -> Result<cloak_kbs_protocol::client::Session, ClientError> {
    let client = KbsClient::new(&fixture.url, None).unwrap();
    attest_through(&client, fixture.psp.clone(), claimed).await
}

/// The same, through `client`.
async fn attest_through(
    client: &KbsClient,
    psp: Arc<SimulatedPsp>,
    claimed: &str,
) -> Result<cloak_kbs_protocol::client::Session, ClientError> {
    client
        .attest(Some(claimed), move |report_data| async move {
            Ok(evidence_for(
                &psp,
                MEASUREMENT,
                INIT_DATA,
                POLICY,
                report_data,
            ))
        })
        .await
}

fn refusal(result: Result<Vec<u8>, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Refused { status, detail, .. }) => (status, detail),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn an_attested_pod_gets_the_resource_decrypted_with_its_key() {
    let fixture = broker(|_| {}).await;
    let plaintext = attest_as(&fixture, MEASUREMENT, INIT_DATA, POLICY)
        .await
        .unwrap();
    assert_eq!(plaintext, SECRET);
}

#[tokio::test]
async fn a_measurement_not_among_the_reference_values_is_refused() {
    let fixture = broker(|_| {}).await;
    let (status, detail) = refusal(attest_as(&fixture, [0x5b; 48], INIT_DATA, POLICY).await);
    assert_eq!(status, 403, "{detail}");
    assert!(detail.contains("launch measurement 5b5b"), "{detail}");
}

#[tokio::test]
async fn other_init_data_than_the_policy_requires_is_refused() {
    let fixture = broker(|_| {}).await;
    let other = INIT_DATA.replace("kbs test", "another pod");
    let (status, detail) = refusal(attest_as(&fixture, MEASUREMENT, &other, POLICY).await);
    assert_eq!(status, 403, "{detail}");
    assert!(detail.contains("HOST_DATA"), "{detail}");
}

#[tokio::test]
async fn init_data_that_is_not_what_host_data_binds_is_refused_at_attest() {
    let fixture = broker(|_| {}).await;
    // Launched with INIT_DATA, but claims other init-data.
    let result = attest_claiming(&fixture, &INIT_DATA.replace("kbs test", "claimed")).await;
    let Err(ClientError::Refused {
        status,
        detail,
        step,
    }) = result
    else {
        panic!("{result:?}");
    };
    assert_eq!((status, step), (401, "attest"));
    assert!(detail.contains("host-data"), "{detail}");
}

#[tokio::test]
async fn a_debug_policy_is_refused() {
    let fixture = broker(|_| {}).await;
    let (status, detail) = refusal(attest_as(&fixture, MEASUREMENT, INIT_DATA, DEBUG_POLICY).await);
    assert_eq!(status, 403, "{detail}");
    assert!(detail.contains("debugging"), "{detail}");
}

#[tokio::test]
async fn a_simulated_report_is_refused_unless_allowed() {
    let fixture = broker(|config| config.allow_simulated = false).await;
    let result = attest_claiming(&fixture, INIT_DATA).await;
    let Err(ClientError::Refused { status, detail, .. }) = result else {
        panic!("{result:?}");
    };
    assert_eq!(status, 401);
    assert!(detail.contains("SIMULATED"), "{detail}");
    // Allowed, every answer says so.
    let fixture = broker(|_| {}).await;
    let raw = Raw::of(&fixture);
    let answer = raw.auth_answer().await;
    assert_eq!(
        answer.header(cloak_kbs_protocol::SIMULATED_HEADER).next(),
        Some("true")
    );
}

/// Hand-made protocol steps for the cases the client never produces.
struct Raw {
    endpoint: http::Endpoint,
}

impl Raw {
    fn of(fixture: &Fixture) -> Self {
        Self {
            endpoint: http::Endpoint::parse(&fixture.url).unwrap(),
        }
    }

    /// A session that attested with a fresh key: the key, the cookie and the attestation sent.
    async fn attested(&self, psp: &SimulatedPsp) -> (TeeKeyPair, String, Vec<u8>) {
        let key = TeeKeyPair::generate();
        let (cookie, nonce) = self.auth().await;
        let body = attestation(psp, &nonce, &key, &key);
        assert_eq!(
            self.post("/kbs/v0/attest", &cookie, &body).await.status,
            200
        );
        (key, cookie, body)
    }

    async fn auth_answer(&self) -> http::Response {
        http::request(
            &self.endpoint,
            "POST",
            "/kbs/v0/auth",
            &[],
            br#"{"version":"0.4.0","tee":"snp","extra-params":{}}"#,
        )
        .await
        .unwrap()
    }

    async fn auth(&self) -> (String, String) {
        let answer = self.auth_answer().await;
        assert_eq!(answer.status, 200);
        let cookie = cloak_kbs_protocol::client::session_cookie(&answer).unwrap();
        let challenge: kbs_types::Challenge = serde_json::from_slice(&answer.body).unwrap();
        (cookie, challenge.nonce)
    }

    async fn post(&self, path: &str, cookie: &str, body: &[u8]) -> http::Response {
        let cookie = format!("kbs-session-id={cookie}");
        http::request(&self.endpoint, "POST", path, &[("Cookie", &cookie)], body)
            .await
            .unwrap()
    }

    async fn get(&self, path: &str, cookie: &str) -> http::Response {
        let cookie = format!("kbs-session-id={cookie}");
        http::request(&self.endpoint, "GET", path, &[("Cookie", &cookie)], &[])
            .await
            .unwrap()
    }
}

/// An Attestation for `nonce`: the report binds `bound_key`, the runtime data names `sent_key`.
fn attestation(
    psp: &SimulatedPsp,
    nonce: &str,
    bound_key: &TeeKeyPair,
    sent_key: &TeeKeyPair,
) -> Vec<u8> {
    let bound = kbs_types::RuntimeData {
        nonce: nonce.to_owned(),
        tee_pubkey: bound_key.public_jwk(),
    };
    let report_data = cloak_kbs_protocol::binding::report_data_for(&bound).unwrap();
    let evidence = evidence_for(psp, MEASUREMENT, INIT_DATA, POLICY, report_data);
    serde_json::to_vec(&serde_json::json!({
        "init-data": {"format": "toml", "body": INIT_DATA},
        "runtime-data": {"nonce": nonce, "tee-pubkey": sent_key.public_jwk()},
        "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
    }))
    .unwrap()
}

#[tokio::test]
async fn a_replayed_attestation_is_refused() {
    let fixture = broker(|_| {}).await;
    let raw = Raw::of(&fixture);
    let (_, cookie, body) = raw.attested(&fixture.psp).await;
    // The same attestation again, in the same session: its challenge is spent.
    let again = raw.post("/kbs/v0/attest", &cookie, &body).await;
    assert_eq!(
        again.status,
        401,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    // In a new session: the nonce is not that session's.
    let (fresh, _) = raw.auth().await;
    let replayed = raw.post("/kbs/v0/attest", &fresh, &body).await;
    assert_eq!(replayed.status, 401);
    assert!(String::from_utf8_lossy(&replayed.body).contains("nonce"));
}

#[tokio::test]
async fn a_swapped_tee_pubkey_is_refused() {
    let fixture = broker(|_| {}).await;
    let raw = Raw::of(&fixture);
    let (cookie, nonce) = raw.auth().await;
    let guest = TeeKeyPair::generate();
    let attacker = TeeKeyPair::generate();
    let body = attestation(&fixture.psp, &nonce, &guest, &attacker);
    let answer = raw.post("/kbs/v0/attest", &cookie, &body).await;
    assert_eq!(answer.status, 401);
    let text = String::from_utf8_lossy(&answer.body);
    assert!(text.contains("report-data"), "{text}");
    // Nothing is released on that session.
    assert_eq!(raw.get(&db().path(), &cookie).await.status, 401);
}

#[tokio::test]
async fn a_stale_or_unknown_cookie_is_refused() {
    let fixture = broker(|config| config.session_ttl = Duration::from_secs(1)).await;
    let raw = Raw::of(&fixture);
    let (key, cookie, _) = raw.attested(&fixture.psp).await;
    let fresh = raw.get(&db().path(), &cookie).await;
    assert_eq!(fresh.status, 200);
    assert_eq!(key.decrypt(&fresh.body).unwrap(), SECRET);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let stale = raw.get(&db().path(), &cookie).await;
    assert_eq!(
        stale.status,
        401,
        "{}",
        String::from_utf8_lossy(&stale.body)
    );
    assert!(String::from_utf8_lossy(&stale.body).contains("expired"));
    assert_eq!(raw.get(&db().path(), "no-such-session").await.status, 401);
}

#[tokio::test]
async fn a_resource_the_policy_does_not_grant_is_forbidden() {
    // Withholds default/secret/other, on top of the default checks.
    let policy = format!(
        "{}\nviolations contains \"default/secret/other is not granted to this pod\" if {{\n\tinput.resource.tag == \"other\"\n}}\n",
        cloak_kbs::DEFAULT_POLICY
    );
    let fixture = broker(|config| config.policy = policy).await;
    let raw = Raw::of(&fixture);
    let (_, cookie, _) = raw.attested(&fixture.psp).await;
    assert_eq!(raw.get(&db().path(), &cookie).await.status, 200);
    let other = raw
        .get("/kbs/v0/resource/default/secret/other", &cookie)
        .await;
    assert_eq!(other.status, 403);
    assert!(String::from_utf8_lossy(&other.body).contains("is not granted to this pod"));
    assert_eq!(
        raw.get("/kbs/v0/resource/default/secret/missing", &cookie)
            .await
            .status,
        404
    );
    assert_eq!(
        raw.get("/kbs/v0/resource/default/../db", &cookie)
            .await
            .status,
        400
    );
}

/// A CA and a certificate it signs for 127.0.0.1: (CA PEM, leaf chain PEM, leaf key PEM).
fn test_pki(common_name: &str) -> (String, Vec<u8>, Vec<u8>) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
    use openssl::x509::{X509Builder, X509NameBuilder};
    let name = |cn: &str| {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        name.build()
    };
    let key = || {
        PKey::from_ec_key(
            openssl::ec::EcKey::generate(
                &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap()
    };
    let (ca_key, leaf_key) = (key(), key());
    let certificate =
        |subject: &str, issuer: &str, public: &PKey<openssl::pkey::Private>, ca: bool| {
            let mut builder = X509Builder::new().unwrap();
            builder.set_version(2).unwrap();
            builder
                .set_serial_number(
                    &BigNum::from_u32(if ca { 1 } else { 2 })
                        .unwrap()
                        .to_asn1_integer()
                        .unwrap(),
                )
                .unwrap();
            builder.set_subject_name(&name(subject)).unwrap();
            builder.set_issuer_name(&name(issuer)).unwrap();
            builder.set_pubkey(public).unwrap();
            builder
                .set_not_before(&Asn1Time::days_from_now(0).unwrap())
                .unwrap();
            builder
                .set_not_after(&Asn1Time::days_from_now(1).unwrap())
                .unwrap();
            if ca {
                builder
                    .append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                    .unwrap();
            } else {
                let san = SubjectAlternativeName::new()
                    .ip("127.0.0.1")
                    .build(&builder.x509v3_context(None, None))
                    .unwrap();
                builder.append_extension(san).unwrap();
            }
            builder.sign(&ca_key, MessageDigest::sha256()).unwrap();
            builder.build()
        };
    let ca = certificate(common_name, common_name, &ca_key, true);
    let leaf = certificate("127.0.0.1", common_name, &leaf_key, false);
    (
        String::from_utf8(ca.to_pem().unwrap()).unwrap(),
        leaf.to_pem().unwrap(),
        leaf_key.private_key_to_pem_pkcs8().unwrap(),
    )
}

#[tokio::test]
async fn an_https_broker_is_trusted_only_through_the_init_data_ca() {
    let (ca, chain, key) = test_pki("cloak kbs test CA");
    let tls = cloak_kbs::tls_acceptor(&chain, &key).unwrap();
    let fixture = broker_over(|_| {}, Some(tls)).await;
    let (url, psp) = (fixture.url.clone(), fixture.psp.clone());

    let client = KbsClient::new(&url, Some(&ca)).unwrap();
    let session = attest_through(&client, psp.clone(), INIT_DATA)
        .await
        .unwrap();
    assert_eq!(client.resource(&session, &db()).await.unwrap(), SECRET);

    // A broker whose certificate another CA signed (the host's, say) is not talked to.
    let (other_ca, _, _) = test_pki("another CA");
    let client = KbsClient::new(&url, Some(&other_ca)).unwrap();
    let result = attest_through(&client, psp, INIT_DATA).await;
    let Err(ClientError::Http(http::HttpError::Tls { .. })) = result else {
        panic!("{result:?}");
    };
}
