//! The digests are checked against coreutils' sha256sum/sha384sum/sha512sum over the same file:
//! another implementation of the hash, so what is tested is that the exact bytes are hashed
//! with the named algorithm and cut or padded to HOST_DATA as the specification says.

use super::*;

const DOCUMENT: &str = r#"version = "0.1.0"
algorithm = "sha384"

[data]
"policy.rego" = '''
package agent_policy
default CreateContainerRequest := false
'''
"cloak.toml" = "log_level = 'debug'"
"#;

/// `<tool>` (sha256sum...) of `bytes`, as bytes.
fn coreutils_digest(tool: &str, bytes: &[u8]) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("cloak-init-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join(format!("{tool}.toml"));
    std::fs::write(&file, bytes).expect("write");
    let output = std::process::Command::new(tool)
        .arg(&file)
        .output()
        .expect("coreutils on PATH");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let hex = text.split_whitespace().next().expect("a digest");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn with_algorithm(name: &str) -> String {
    DOCUMENT.replace("\"sha384\"", &format!("\"{name}\""))
}

#[test]
fn host_data_is_the_digest_of_the_exact_bytes_cut_or_padded_to_32() {
    for (name, tool) in [
        ("sha256", "sha256sum"),
        ("sha384", "sha384sum"),
        ("sha512", "sha512sum"),
    ] {
        let document = with_algorithm(name);
        let parsed = InitData::parse(document.as_bytes()).expect("valid");
        assert_eq!(parsed.algorithm().name(), name);
        let expected = coreutils_digest(tool, document.as_bytes());
        assert_eq!(parsed.digest(), expected, "{name}");
        assert_eq!(parsed.host_data().as_slice(), &expected[..32], "{name}");
        assert_eq!(
            host_data_for(document.as_bytes()).expect("valid"),
            parsed.host_data()
        );
    }
}

#[test]
fn the_same_document_written_differently_binds_other_host_data() {
    let original = InitData::parse(DOCUMENT.as_bytes()).expect("valid");
    let reformatted = DOCUMENT.replace("version = \"0.1.0\"", "version =  \"0.1.0\"");
    let reformatted = InitData::parse(reformatted.as_bytes()).expect("still valid");
    assert_eq!(original.policy(), reformatted.policy());
    assert_ne!(original.host_data(), reformatted.host_data());
}

#[test]
fn a_pod_without_init_data_has_zero_host_data() {
    assert_eq!(host_data_for(b"").expect("no init-data"), [0u8; 32]);
}

#[test]
fn entries_are_read_by_name() {
    let parsed = InitData::parse(DOCUMENT.as_bytes()).expect("valid");
    let policy = parsed.policy().expect("a policy");
    assert!(policy.starts_with("package agent_policy\n"), "{policy}");
    assert_eq!(parsed.get("cloak.toml"), Some("log_level = 'debug'"));
    assert_eq!(
        parsed.keys().collect::<Vec<_>>(),
        ["cloak.toml", "policy.rego"]
    );
    assert_eq!(parsed.bytes(), DOCUMENT.as_bytes());
}

#[test]
fn what_is_not_init_data_0_1_0_is_refused_with_the_reason() {
    let cases: [(&[u8], &str); 6] = [
        (b"policy: allow-all\n", "not an initdata TOML"),
        (b"\xff\xfe", "not UTF-8"),
        (
            b"version = \"0.2.0\"\nalgorithm = \"sha256\"\n",
            "version \"0.2.0\"",
        ),
        (
            b"version = \"0.1.0\"\nalgorithm = \"md5\"\n",
            "algorithm \"md5\"",
        ),
        (
            b"version = \"0.1.0\"\nalgorithm = \"sha256\"\nextra = 1\n",
            "unknown field",
        ),
        (
            b"version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\nn = 1\n",
            "not an initdata TOML",
        ),
    ];
    for (document, reason) in cases {
        let err = InitData::parse(document).expect_err("refused");
        assert!(err.to_string().contains(reason), "{err} lacks {reason:?}");
        assert!(host_data_for(document).is_err());
    }
}

#[test]
fn annotations_decode_to_the_exact_document_compressed_or_not() {
    use base64::Engine as _;
    let plain = base64::engine::general_purpose::STANDARD.encode(DOCUMENT);
    assert_eq!(
        decode_annotation(&plain).expect("plain"),
        DOCUMENT.as_bytes()
    );
    let compressed = encode_annotation(DOCUMENT.as_bytes()).expect("encode");
    assert_ne!(compressed, plain);
    assert_eq!(
        decode_annotation(&compressed).expect("gzip"),
        DOCUMENT.as_bytes()
    );
    let folded: String = compressed
        .as_bytes()
        .chunks(20)
        .map(|chunk| format!("{}\n  ", String::from_utf8_lossy(chunk)))
        .collect();
    assert_eq!(
        decode_annotation(&folded).expect("folded"),
        DOCUMENT.as_bytes()
    );
    let err = decode_annotation("not base64!").expect_err("refused");
    assert!(err.to_string().contains("not base64"), "{err}");
}

#[test]
fn a_compressed_annotation_may_not_expand_past_the_limit() {
    let bomb = vec![b' '; MAX_INIT_DATA_BYTES + 1];
    let annotation = encode_annotation(&bomb).expect("encode");
    assert!(annotation.len() < 10_000, "compresses well");
    let err = decode_annotation(&annotation).expect_err("too large");
    assert!(matches!(err, InitDataError::TooLarge { .. }), "{err}");
    assert!(matches!(
        InitData::parse(&bomb),
        Err(InitDataError::TooLarge { .. })
    ));
}

#[test]
fn the_key_broker_and_secret_files_come_from_the_document() {
    let document = InitData::parse(
        b"version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"cdh.toml\" = '''\n[kbc]\nname = \"cc_kbc\"\nurl = \"http://10.0.0.5:8080\"\nkbs_cert = \"\"\n'''\n\"cloak.secrets\" = \"\"\"\nkbs:///default/a/b\n# a comment\n\nkbs:///default/c/d\n\"\"\"\n",
    )
    .unwrap();
    assert_eq!(
        document.kbs().unwrap(),
        Some(crate::KbsSettings {
            url: "http://10.0.0.5:8080".to_owned(),
            cert: None
        })
    );
    assert_eq!(
        document.secret_files(),
        vec!["kbs:///default/a/b", "kbs:///default/c/d"]
    );
    // Another KBC is refused by name; no cdh.toml is no broker.
    let other = InitData::parse(
        b"version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"cdh.toml\" = \"[kbc]\\nname = \\\"offline_fs_kbc\\\"\\nurl = \\\"x\\\"\\n\"\n",
    )
    .unwrap();
    assert!(other
        .kbs()
        .unwrap_err()
        .to_string()
        .contains("offline_fs_kbc"));
    let none = InitData::parse(b"version = \"0.1.0\"\nalgorithm = \"sha256\"\n").unwrap();
    assert_eq!(none.kbs().unwrap(), None);
    assert!(none.secret_files().is_empty());
}
