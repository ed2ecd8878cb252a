//! `cloak kbs serve`: the embedded key broker for one node and for tests (`cloak-kbs`), and
//! `cloak kbs seal`: the sealed reference a Kubernetes Secret holds instead of the value.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub(crate) enum KbsCommand {
    /// Serve Trustee's KBS protocol: resources from a directory to attested pods.
    Serve(Box<ServeArgs>),
    /// Print the sealed-secret form naming a resource (kbs:///repository/type/tag).
    Seal { resource: String },
}

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0: any free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    address: String,
    /// Resources: <dir>/<repository>/<type>/<tag>.
    #[arg(long)]
    resources: PathBuf,
    /// Reference values `cloak image build` wrote (launch digests); repeatable.
    #[arg(long = "reference-values", required = true)]
    reference_values: Vec<PathBuf>,
    /// Init-data documents of the pods served: their HOST_DATA is accepted; repeatable.
    #[arg(long = "init-data")]
    init_data: Vec<PathBuf>,
    /// An accepted HOST_DATA (64 hex digits); repeatable.
    #[arg(long = "host-data")]
    host_data: Vec<String>,
    /// Minimum reported TCB, BOOTLOADER:TEE:SNP:MICROCODE.
    #[arg(long = "minimum-tcb", default_value = "0:0:0:0")]
    minimum_tcb: String,
    /// A resource policy of your own (Rego, package cloak.kbs) instead of the default.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Accept cloak's SIMULATED TEE (development and tests only: nothing is protected).
    #[arg(long)]
    allow_simulated: bool,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); pods trust its CA through
    /// their init-data's kbs_cert.
    #[arg(long = "tls-cert", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM).
    #[arg(long = "tls-key", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How long a challenge and an attested session last, in seconds.
    #[arg(long = "session-ttl", default_value_t = 300)]
    session_ttl: u64,
}

pub(crate) fn run(command: KbsCommand) -> anyhow::Result<()> {
    match command {
        KbsCommand::Seal { resource } => {
            let uri = cloak_kbs_protocol::resource::ResourceUri::parse(&resource)?;
            #[allow(clippy::print_stdout)] // the command's output
            {
                println!("{}", cloak_kbs_protocol::sealed::seal(&uri));
            }
            Ok(())
        }
        KbsCommand::Serve(args) => serve(*args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut measurements = Vec::new();
    for path in &args.reference_values {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let values = cloak_attestation::reference_values::ReferenceValues::from_json(&text)
            .with_context(|| format!("{}", path.display()))?;
        measurements.extend(values.launch_digests.into_iter().map(|d| d.digest));
    }
    let mut host_data = args.host_data.clone();
    for path in &args.init_data {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let host = cloak_init_data::host_data_for(&bytes)
            .with_context(|| format!("{}", path.display()))?;
        host_data.push(hex::encode(host));
    }
    for value in &host_data {
        anyhow::ensure!(
            value.len() == 64 && value.chars().all(|c| c.is_ascii_hexdigit()),
            "--host-data {value:?}: 64 hex digits"
        );
    }
    let policy = match &args.policy {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => cloak_kbs::DEFAULT_POLICY.to_owned(),
    };
    let config = cloak_kbs::BrokerConfig {
        resources_dir: args.resources.clone(),
        measurements,
        host_data,
        minimum_tcb: args.minimum_tcb.parse().map_err(anyhow::Error::msg)?,
        policy,
        allow_simulated: args.allow_simulated,
        session_ttl: std::time::Duration::from_secs(args.session_ttl),
    };
    let broker = Arc::new(cloak_kbs::Broker::new(config)?);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(cloak_kbs::tls_acceptor(
            &std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?,
            &std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
        )?),
        _ => None,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.address)
            .await
            .with_context(|| format!("listening on {}", args.address))?;
        let bound = listener.local_addr()?;
        #[allow(clippy::print_stdout)] // the address is the command's output
        {
            let scheme = if tls.is_some() { "https" } else { "http" };
            println!("cloak kbs listening on {bound} ({scheme})");
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        cloak_kbs::serve(listener, broker, tls).await?;
        Ok(())
    })
}
