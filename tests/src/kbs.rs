//! A `cloak kbs serve` broker for tests and benchmarks: started on a free port of every
//! address (the pods reach it on the CNI bridge), killed on drop; the init-data naming it.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;

use crate::cri::BRIDGE_ADDRESS;

/// A broker process, killed on drop.
pub struct BrokerProcess {
    child: Child,
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on every address now (the broker binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("0.0.0.0:0")?
        .local_addr()?
        .port())
}

/// `cloak kbs serve --allow-simulated` on `port`, serving `resources` to pods launched as
/// `reference_values` say with `init_data`; returns once it listens.
pub fn start_broker(
    cloak: &Path,
    resources: &Path,
    reference_values: &Path,
    init_data: &Path,
    port: u16,
) -> anyhow::Result<BrokerProcess> {
    let mut child = Command::new(cloak)
        .args(["kbs", "serve", "--allow-simulated", "--address"])
        .arg(format!("0.0.0.0:{port}"))
        .arg("--resources")
        .arg(resources)
        .arg("--reference-values")
        .arg(reference_values)
        .arg("--init-data")
        .arg(init_data)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cloak kbs serve")?;
    let stdout = child.stdout.take().context("the broker's stdout")?;
    let broker = BrokerProcess { child };
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    anyhow::ensure!(
        line.contains("listening on"),
        "cloak kbs serve said {line:?}"
    );
    Ok(broker)
}

/// A pod's init-data naming the broker on `port`, with an init-data resource
/// (`default/secret/config`), the shared rootfs (test images are not pinned layers) and no
/// policy of its own; `note` makes other documents.
pub fn init_data_for(port: u16, note: &str) -> String {
    format!(
        "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"cloak.rootfs\" = \"shared\"\n\"cloak.secrets\" = \"kbs:///default/secret/config\"\n\"note\" = \"{note}\"\n\"cdh.toml\" = '''\n[kbc]\nname = \"cc_kbc\"\nurl = \"http://{BRIDGE_ADDRESS}:{port}\"\n'''\n"
    )
}

/// `cloak kbs seal uri`: the sealed reference a Secret holds.
pub fn sealed(cloak: &Path, uri: &str) -> anyhow::Result<String> {
    let out = Command::new(cloak).args(["kbs", "seal", uri]).output()?;
    anyhow::ensure!(out.status.success(), "cloak kbs seal {uri} failed");
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}
