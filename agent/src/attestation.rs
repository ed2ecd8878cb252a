//! Attestation reports from inside the guest, through configfs-tsm (Linux's TSM_REPORTS,
//! Documentation/ABI/testing/configfs-tsm-report): each request is an entry directory below
//! /sys/kernel/config/tsm/report. Writing REPORT_DATA to `inblob` makes the provider (the
//! sev-guest driver on SNP) fetch a report; `outblob` holds it, `auxblob` the certificates the
//! host supplied (if any), `provider` names the TEE, and `generation` counts writes so a read
//! that follows another writer's request is noticed and retried.

use std::path::{Path, PathBuf};

pub(crate) use cloak_snp_abi::REPORT_DATA_BYTES;
const TSM_REPORT_ROOT: &str = "/sys/kernel/config/tsm/report";
const RETRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReportError {
    #[error("REPORT_DATA is {0} bytes; at most {REPORT_DATA_BYTES}")]
    ReportDataTooLong(usize),
    #[error("no configfs-tsm report provider ({0})")]
    Unavailable(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("the report entry kept being rewritten by another requester")]
    Raced,
    #[error("the report request's thread failed: {0}")]
    Thread(String),
    #[error("no simulated AMD-SP on the host ({0})")]
    NoSimulatedPsp(String),
    #[error("the simulated AMD-SP: {0}")]
    Simulated(String),
}

/// An SNP report from this VM's configfs-tsm, off the async threads (configfs writes block
/// while the provider talks to the AMD-SP).
pub(crate) async fn fetch_report(report_data: Vec<u8>) -> Result<TsmReport, ReportError> {
    tokio::task::spawn_blocking(move || TsmReports::system()?.report(&report_data))
        .await
        .map_err(|err| ReportError::Thread(err.to_string()))?
}

/// This VM's report from its TEE: the AMD-SP through configfs-tsm on SNP, the host's simulated
/// AMD-SP on a simulated TEE; `None` without a TEE.
pub(crate) async fn fetch_from(
    tee: cloak_protocol::agent::TeeKind,
    report_data: Vec<u8>,
) -> Option<Result<TsmReport, ReportError>> {
    use cloak_protocol::agent::TeeKind;
    match tee {
        TeeKind::TEE_SNP => Some(fetch_report(report_data).await),
        TeeKind::TEE_SIM => Some(fetch_simulated_report(&report_data).await),
        TeeKind::TEE_NONE => None,
    }
}

/// How long the host's simulated AMD-SP may take to answer.
const SIMULATED_PSP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A report from the host's simulated AMD-SP (`tee = "sim"`, cloak_protocol::sim_psp). A VM
/// without one gets `NoSimulatedPsp`: nothing listens on the host's port.
pub(crate) async fn fetch_simulated_report(report_data: &[u8]) -> Result<TsmReport, ReportError> {
    use cloak_protocol::sim_psp::{SimPspResponse, MAX_RESPONSE_BYTES, SIM_PSP_VSOCK_PORT};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_vsock::{VsockAddr, VsockStream, VMADDR_CID_HOST};
    if report_data.len() > REPORT_DATA_BYTES {
        return Err(ReportError::ReportDataTooLong(report_data.len()));
    }
    let exchange = async {
        let mut stream = VsockStream::connect(VsockAddr::new(VMADDR_CID_HOST, SIM_PSP_VSOCK_PORT))
            .await
            .map_err(|err| ReportError::NoSimulatedPsp(err.to_string()))?;
        let simulated = |err: std::io::Error| ReportError::Simulated(err.to_string());
        let mut request = [0u8; REPORT_DATA_BYTES];
        request[..report_data.len()].copy_from_slice(report_data);
        stream.write_all(&request).await.map_err(simulated)?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE_BYTES as u64)
            .read_to_end(&mut answer)
            .await
            .map_err(simulated)?;
        Ok(answer)
    };
    let answer = tokio::time::timeout(SIMULATED_PSP_TIMEOUT, exchange)
        .await
        .map_err(|_| ReportError::Simulated("no answer in time".to_owned()))??;
    match SimPspResponse::decode(&answer).map_err(ReportError::Simulated)? {
        SimPspResponse::Report {
            report,
            certificates,
        } => Ok(TsmReport {
            provider: "cloak-simulated".to_owned(),
            report,
            certificates,
        }),
        SimPspResponse::Error(reason) => Err(ReportError::Simulated(reason)),
    }
}

/// The file operations a report request needs, so tests can play the kernel's part.
pub(crate) trait ConfigFs {
    fn create_dir(&self, path: &Path) -> std::io::Result<()>;
    fn remove_dir(&self, path: &Path) -> std::io::Result<()>;
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()>;
}

/// The real configfs.
pub(crate) struct HostConfigFs;

impl ConfigFs for HostConfigFs {
    fn create_dir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir(path)
    }
    fn remove_dir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::write(path, bytes)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TsmReport {
    pub provider: String,
    pub report: Vec<u8>,
    pub certificates: Vec<u8>,
}

pub(crate) struct TsmReports<F: ConfigFs> {
    fs: F,
    root: PathBuf,
}

impl TsmReports<HostConfigFs> {
    /// The guest's configfs-tsm, mounting configfs first if needed.
    pub(crate) fn system() -> Result<Self, ReportError> {
        let config = Path::new("/sys/kernel/config");
        if !config.join("tsm").exists() {
            let mounted = nix::mount::mount(
                Some("configfs"),
                config,
                Some("configfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            );
            if let Err(err) = mounted {
                if err != nix::errno::Errno::EBUSY {
                    return Err(ReportError::Unavailable(format!(
                        "mounting configfs: {err}"
                    )));
                }
            }
        }
        let root = PathBuf::from(TSM_REPORT_ROOT);
        if !root.is_dir() {
            return Err(ReportError::Unavailable(format!(
                "{TSM_REPORT_ROOT} does not exist: the tsm module is not loaded or no TEE driver registered"
            )));
        }
        Ok(Self::new(HostConfigFs, root))
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ReportError + 'a {
    move |source| ReportError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

impl<F: ConfigFs> TsmReports<F> {
    pub(crate) fn new(fs: F, root: PathBuf) -> Self {
        Self { fs, root }
    }

    fn generation(&self, entry: &Path) -> Result<u64, ReportError> {
        let path = entry.join("generation");
        let text = self.fs.read(&path).map_err(io("reading", &path))?;
        String::from_utf8_lossy(&text)
            .trim()
            .parse()
            .map_err(|_| ReportError::Unavailable(format!("{} is not a number", path.display())))
    }

    /// A report binding `report_data` (zero-padded to 64 bytes).
    pub(crate) fn report(&self, report_data: &[u8]) -> Result<TsmReport, ReportError> {
        if report_data.len() > REPORT_DATA_BYTES {
            return Err(ReportError::ReportDataTooLong(report_data.len()));
        }
        let mut inblob = [0u8; REPORT_DATA_BYTES];
        inblob[..report_data.len()].copy_from_slice(report_data);
        let entry = self
            .root
            .join(format!("cloak-agent-{}", std::process::id()));
        self.fs.create_dir(&entry).map_err(io("creating", &entry))?;
        let result = self.request(&entry, &inblob);
        if let Err(err) = self.fs.remove_dir(&entry) {
            tracing::warn!(entry = %entry.display(), error = %err, "removing the report entry");
        }
        result
    }

    fn request(&self, entry: &Path, inblob: &[u8]) -> Result<TsmReport, ReportError> {
        for _ in 0..RETRIES {
            let before = self.generation(entry)?;
            let inblob_path = entry.join("inblob");
            self.fs
                .write(&inblob_path, inblob)
                .map_err(io("writing", &inblob_path))?;
            let outblob_path = entry.join("outblob");
            let report = self
                .fs
                .read(&outblob_path)
                .map_err(io("reading", &outblob_path))?;
            let auxblob_path = entry.join("auxblob");
            let certificates = match self.fs.read(&auxblob_path) {
                Ok(bytes) => bytes,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                // The provider had no certificates from the host.
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Vec::new(),
                Err(err) => return Err(io("reading", &auxblob_path)(err)),
            };
            if self.generation(entry)? != before + 1 {
                continue;
            }
            let provider_path = entry.join("provider");
            let provider = self
                .fs
                .read(&provider_path)
                .map_err(io("reading", &provider_path))?;
            return Ok(TsmReport {
                provider: String::from_utf8_lossy(&provider).trim().to_owned(),
                report,
                certificates,
            });
        }
        Err(ReportError::Raced)
    }
}

/// Why a pod's init-data is not the one its VM was launched with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InitDataError {
    #[error("the attestation report is {0} bytes, too short to hold HOST_DATA")]
    ShortReport(usize),
    #[error(transparent)]
    Invalid(#[from] cloak_init_data::InitDataError),
    #[error("the init-data's digest {init_data} is not the HOST_DATA {host_data} this VM was launched with")]
    Mismatch {
        /// Hex HOST_DATA the init-data the host handed over binds.
        init_data: String,
        /// Hex HOST_DATA of the VM's own report.
        host_data: String,
    },
}

/// Checks that the host launched this VM with `init_data`, byte for byte: the HOST_DATA it
/// binds (`cloak_init_data::host_data_for`) must be the one the AMD-SP put into the VM's own
/// report, which the host cannot change after launch.
pub(crate) fn check_init_data(init_data: &[u8], report: &[u8]) -> Result<(), InitDataError> {
    use cloak_snp_abi::{field, read};
    let host_data =
        read(report, field::HOST_DATA).ok_or(InitDataError::ShortReport(report.len()))?;
    let expected = cloak_init_data::host_data_for(init_data)?;
    if host_data == expected.as_slice() {
        Ok(())
    } else {
        Err(InitDataError::Mismatch {
            init_data: hex::encode(expected),
            host_data: hex::encode(host_data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// configfs-tsm as the kernel behaves: an entry's attributes exist once it is created, a
    /// write to inblob bumps generation and produces an outblob that embeds the REPORT_DATA.
    #[derive(Default)]
    struct FakeTsm {
        files: Mutex<HashMap<PathBuf, Vec<u8>>>,
        /// Extra generation bumps by "another requester" after each inblob write.
        interloper_writes: Mutex<usize>,
    }

    impl ConfigFs for FakeTsm {
        fn create_dir(&self, path: &Path) -> std::io::Result<()> {
            let mut files = self.files.lock().expect("lock");
            files.insert(path.join("generation"), b"0\n".to_vec());
            files.insert(path.join("provider"), b"sev_guest\n".to_vec());
            Ok(())
        }
        fn remove_dir(&self, path: &Path) -> std::io::Result<()> {
            self.files
                .lock()
                .expect("lock")
                .retain(|p, _| !p.starts_with(path));
            Ok(())
        }
        fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
            self.files
                .lock()
                .expect("lock")
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
        fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
            let entry = path.parent().expect("entry").to_owned();
            let mut files = self.files.lock().expect("lock");
            let generation: u64 = String::from_utf8_lossy(&files[&entry.join("generation")])
                .trim()
                .parse()
                .expect("number");
            let mut interlopers = self.interloper_writes.lock().expect("lock");
            let extra = if *interlopers > 0 {
                *interlopers -= 1;
                1
            } else {
                0
            };
            files.insert(
                entry.join("generation"),
                format!("{}\n", generation + 1 + extra).into_bytes(),
            );
            let mut report = vec![0u8; 1184];
            report[cloak_snp_abi::field::REPORT_DATA].copy_from_slice(bytes);
            files.insert(entry.join("outblob"), report);
            Ok(())
        }
    }

    #[test]
    fn a_report_binds_the_padded_report_data_and_the_entry_is_removed() {
        let fake = FakeTsm::default();
        let reports = TsmReports::new(fake, PathBuf::from("/tsm/report"));
        let report = reports.report(b"nonce").expect("report");
        assert_eq!(report.provider, "sev_guest");
        assert_eq!(
            &report.report[cloak_snp_abi::field::REPORT_DATA][..5],
            b"nonce"
        );
        assert!(report.report[0x55..0x90].iter().all(|b| *b == 0));
        assert!(report.certificates.is_empty());
        assert!(
            reports.fs.files.lock().expect("lock").is_empty(),
            "entry removed"
        );
    }

    #[test]
    fn init_data_must_hash_to_the_reports_host_data() {
        use sha2::{Digest, Sha256};
        let v1 = b"version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\nname = \"v1\"\n";
        let v2 = b"version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\nname = \"v2\"\n";
        let mut report = vec![0u8; 1184];
        report[cloak_snp_abi::field::HOST_DATA].copy_from_slice(&Sha256::digest(v1));
        assert!(check_init_data(v1, &report).is_ok());
        let err = check_init_data(v2, &report).expect_err("other init-data");
        assert!(err.to_string().contains("HOST_DATA"), "{err}");
        let err = check_init_data(b"policy: v1", &report).expect_err("not init-data");
        assert!(matches!(err, InitDataError::Invalid(_)), "{err}");
        // No init-data: only a launch without HOST_DATA matches.
        assert!(check_init_data(b"", &report).is_err());
        assert!(check_init_data(b"", &[0u8; 1184]).is_ok());
        assert!(check_init_data(b"", &report[..0x10]).is_err());
    }

    #[test]
    fn a_raced_request_is_retried_then_given_up() {
        let fake = FakeTsm::default();
        *fake.interloper_writes.lock().expect("lock") = 1;
        let reports = TsmReports::new(fake, PathBuf::from("/tsm/report"));
        assert!(reports.report(b"x").is_ok(), "one race, then a clean retry");
        *reports.fs.interloper_writes.lock().expect("lock") = RETRIES;
        assert!(matches!(reports.report(b"x"), Err(ReportError::Raced)));
        assert!(matches!(
            reports.report(&[0; 65]),
            Err(ReportError::ReportDataTooLong(65))
        ));
    }
}
