//! `cloak attest verify`: checks an SEV-SNP attestation report and prints one line per check;
//! exits 0 only when every check passed.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use cloak_attestation::reference_values::ReferenceValues;
use cloak_attestation::verify::{self, VerifyRequest};

#[derive(Subcommand)]
pub(crate) enum AttestCommand {
    /// Verify a report: AMD chain, signature, the VCEK's or VLEK's TCB and chip, then the expected values.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// The report: raw (1184 bytes) or hex text.
    #[arg(long)]
    report: PathBuf,
    /// The key that signed the report: VCEK or VLEK certificate, DER or PEM.
    #[arg(long, visible_alias = "vlek")]
    vcek: PathBuf,
    /// A PEM bundle with the ARK and the ASK (VCEK) or ASVK (VLEK), in any order, other
    /// certificates allowed; AMD's built-in roots when absent.
    #[arg(long)]
    chain: Option<PathBuf>,
    /// Reference values (JSON with `launch_digests`), e.g. from `cloak image build`.
    #[arg(long)]
    reference_values: Option<PathBuf>,
    /// Expected HOST_DATA, hex (32 bytes).
    #[arg(long, conflicts_with = "init_data")]
    host_data: Option<String>,
    /// The init-data the pod must have been launched with (its exact bytes): the HOST_DATA it
    /// binds is expected.
    #[arg(long)]
    init_data: Option<PathBuf>,
    /// Expected REPORT_DATA, hex (64 bytes).
    #[arg(long)]
    report_data: Option<String>,
    /// Accept a guest policy that allows debugging.
    #[arg(long)]
    allow_debug: bool,
    /// Minimum TCB as BOOTLOADER:TEE:SNP:MICROCODE.
    #[arg(long)]
    min_tcb: Option<String>,
    /// Accept a report of cloak's simulated TEE (tee = "sim"; development only, never
    /// confidential).
    #[arg(long)]
    allow_simulated: bool,
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn hex_arg(name: &str, value: Option<&String>) -> anyhow::Result<Option<Vec<u8>>> {
    value
        .map(|text| hex::decode(text.trim()).with_context(|| format!("--{name} is not hex")))
        .transpose()
}

/// Returns whether the report verified.
pub(crate) fn run(command: AttestCommand) -> anyhow::Result<bool> {
    let AttestCommand::Verify(args) = command;
    let measurements = match &args.reference_values {
        Some(path) => ReferenceValues::from_json(&read(path)?)?.digests()?,
        None => Vec::new(),
    };
    let request = VerifyRequest {
        report: verify::report_from_file_bytes(&read(&args.report)?),
        signing_key: read(&args.vcek)?,
        chain: args.chain.as_ref().map(read).transpose()?,
        measurements,
        host_data: match &args.init_data {
            Some(path) => Some(
                cloak_init_data::host_data_for(&read(path)?)
                    .with_context(|| format!("--init-data {}", path.display()))?
                    .to_vec(),
            ),
            None => hex_arg("host-data", args.host_data.as_ref())?,
        },
        report_data: hex_arg("report-data", args.report_data.as_ref())?,
        allow_debug: args.allow_debug,
        allow_simulated: args.allow_simulated,
        minimum_tcb: args
            .min_tcb
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|err| anyhow::anyhow!("--min-tcb {err}"))?,
    };
    let verdict = verify::verify(&request);
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for check in &verdict.checks {
        writeln!(out, "{check}")?;
    }
    let passed = verdict.passed();
    writeln!(out, "{}", if passed { "VERIFIED" } else { "NOT VERIFIED" })?;
    Ok(passed)
}
