//! A private containerd for tests and benchmarks: its own config, root, state and sockets
//! under a temporary directory, `containerd-shim-cloak-v2` first on its PATH, cloak's
//! configuration through `CLOAK_CONFIG`, and the busybox test images imported. Dropping it
//! stops containerd; what the shim leaves behind is for the tests to find.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::oci_image;
use crate::VmTestEnv;

pub const SHIM_BINARY: &str = "containerd-shim-cloak-v2";
pub const RUNTIME: &str = "io.containerd.cloak.v2";
pub const NAMESPACE: &str = "cloak-test";
/// Tag of the imported busybox images.
pub const IMAGE_TAG: &str = "test";

/// `docker.io/cloak/busybox:test` and the same image running as uid/gid 1000.
pub fn image() -> String {
    format!("docker.io/cloak/busybox:{IMAGE_TAG}")
}

pub fn user_image() -> String {
    format!("docker.io/cloak/busybox-user:{IMAGE_TAG}")
}

/// Three layers: busybox, then files, then a whiteout and an opaque directory.
pub fn layered_image() -> String {
    format!("docker.io/cloak/layered:{IMAGE_TAG}")
}

/// The CRI plugin's sandbox image: busybox waiting for a signal, built locally.
pub fn pause_image() -> String {
    format!("docker.io/cloak/pause:{IMAGE_TAG}")
}

/// containerd's namespace for CRI.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// The shim binary: `CLOAK_SHIM_BIN`, or the one cargo built beside this test binary.
pub fn shim_binary() -> Option<PathBuf> {
    crate::workspace_binary(SHIM_BINARY, "CLOAK_SHIM_BIN")
}

/// What a benchmark or the soak binary `program` runs against: the guest image and a private
/// containerd with the CRI plugin and cloak's shim; an error says what is missing.
pub fn cri_containerd_for(program: &str) -> anyhow::Result<(VmTestEnv, PrivateContainerd)> {
    let env = VmTestEnv::get(program).context("the guest image is needed")?;
    if let Some(reason) = crate::cri::cri_unavailable() {
        bail!("{reason}");
    }
    let shim =
        shim_binary().context("build containerd-shim-cloak-v2 first (cargo build --release)")?;
    let containerd = PrivateContainerd::start_with_cri(&env, &shim)?;
    Ok((env, containerd))
}

/// The shim binary, or `None` after saying why `test` cannot run.
pub fn shim_or_skip(test: &str) -> Option<PathBuf> {
    let found = shim_binary();
    if found.is_none() {
        crate::skip(
            test,
            "containerd-shim-cloak-v2 is not built (cargo build --release)",
        );
    }
    found
}

/// Directory holding the containerd to test (`containerd`, `ctr`, `containerd-shim-runc-v2`):
/// `CLOAK_CONTAINERD_DIR`, else the ones on PATH (Debian 12's containerd 1.6). `make test`
/// runs the CRI tests a second time with containerd 2.x from here.
pub const CONTAINERD_DIR_VARIABLE: &str = "CLOAK_CONTAINERD_DIR";

fn containerd_dir() -> Option<PathBuf> {
    std::env::var_os(CONTAINERD_DIR_VARIABLE).map(PathBuf::from)
}

/// The containerd program `name` under test.
pub fn containerd_program(name: &str) -> PathBuf {
    match containerd_dir() {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

/// The major version of the containerd under test (`containerd --version` prints e.g.
/// `containerd github.com/containerd/containerd 1.6.20~ds1` or `... /v2 2.1.9+unknown`).
pub fn containerd_major_version() -> anyhow::Result<u32> {
    let output = Command::new(containerd_program("containerd"))
        .arg("--version")
        .output()
        .context("running containerd --version (scripts/setup-host.sh installs containerd)")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split_whitespace()
        .nth(2)
        .and_then(|version| version.trim_start_matches('v').split('.').next())
        .and_then(|major| major.parse().ok())
        .with_context(|| format!("no version in {text:?}"))
}

/// Adds the cloak runtimes to a private containerd's configuration, which has the CRI plugin
/// and runc but no cloak runtime yet (given the containerd's directory); returns the result.
pub type RuntimeInstaller<'a> = &'a dyn Fn(&Path, String) -> anyhow::Result<String>;

pub struct PrivateContainerd {
    dir: tempfile::TempDir,
    child: Child,
    pub address: PathBuf,
    /// cloak's run directory (one subdirectory per pod VM).
    pub run_dir: PathBuf,
    /// containerd's root and state.
    pub root: PathBuf,
    pub state: PathBuf,
    /// The CNI bridge of a CRI-enabled containerd, removed on drop.
    pub cni_bridge: Option<String>,
    /// How containerd was started, to start it again (`restart`).
    launch: ContainerdLaunch,
}

/// containerd's command line and environment.
struct ContainerdLaunch {
    config: PathBuf,
    path: String,
    cloak_config: PathBuf,
}

impl ContainerdLaunch {
    /// Starts containerd, its output appended to `log`.
    fn spawn(&self, log: &Path) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        Command::new(containerd_program("containerd"))
            .arg("--config")
            .arg(&self.config)
            .env("PATH", &self.path)
            .env("CLOAK_CONFIG", &self.cloak_config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd (scripts/setup-host.sh installs it)")
    }
}

impl PrivateContainerd {
    /// Starts containerd (its CRI plugin disabled) and imports the busybox images.
    pub fn start(env: &VmTestEnv, shim: &Path) -> anyhow::Result<Self> {
        Self::start_with(env, shim, false)
    }

    /// Starts containerd with its CRI plugin: cloak as runtime handler `cloak` (runc the
    /// default), a CNI bridge network, the images imported into `k8s.io` too.
    pub fn start_with_cri(env: &VmTestEnv, shim: &Path) -> anyhow::Result<Self> {
        Self::start_with(env, shim, true)
    }

    /// Starts containerd with its CRI plugin, the cloak runtimes put into its configuration
    /// by `install` (as `cloak install` does on a node) instead of the tests' own tables.
    pub fn start_with_cri_installed_by(
        env: &VmTestEnv,
        shim: &Path,
        install: RuntimeInstaller<'_>,
    ) -> anyhow::Result<Self> {
        Self::start_configured(env, shim, true, false, Some(install), &|_| {})
    }

    /// Starts containerd with its CRI plugin and cloak's configuration changed by `adjust`
    /// (e.g. `tee = "sim"`).
    pub fn start_with_cri_configured(
        env: &VmTestEnv,
        shim: &Path,
        adjust: &dyn Fn(&mut cloak_host::Configuration),
    ) -> anyhow::Result<Self> {
        Self::start_configured(env, shim, true, false, None, adjust)
    }

    /// Starts containerd with its CRI plugin on a dual-stack CNI network: each pod gets an
    /// IPv4 and an IPv6 address, and routes of both families.
    pub fn start_with_cri_dual_stack(env: &VmTestEnv, shim: &Path) -> anyhow::Result<Self> {
        Self::start_configured(env, shim, true, true, None, &|_| {})
    }

    fn start_with(env: &VmTestEnv, shim: &Path, cri: bool) -> anyhow::Result<Self> {
        Self::start_configured(env, shim, cri, false, None, &|_| {})
    }

    /// The OCI archive the test images were imported from (`ctr images import`).
    pub fn image_archive(&self) -> PathBuf {
        self.dir.path().join("busybox-oci.tar")
    }

    fn start_configured(
        env: &VmTestEnv,
        shim: &Path,
        cri: bool,
        dual_stack: bool,
        install: Option<RuntimeInstaller<'_>>,
        adjust: &dyn Fn(&mut cloak_host::Configuration),
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("cloak-ctrd-").tempdir()?;
        let major = containerd_major_version()?;
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let run_dir = dir.path().join("run");
        let address = dir.path().join("containerd.sock");
        std::fs::create_dir_all(&run_dir)?;
        let config_path = dir.path().join("containerd.toml");
        // containerd 2.x reads config version 3 (the CRI plugin split into images and
        // runtime plugins); 1.6 reads version 2.
        let config_version = if major >= 2 { 3 } else { 2 };
        let mut config = format!(
            "version = {config_version}\nroot = \"{root}\"\nstate = \"{state}\"\n\
             [grpc]\n  address = \"{address}\"\n\
             [ttrpc]\n  address = \"{address}.ttrpc\"\n\
             [debug]\n  level = \"debug\"\n",
            root = root.display(),
            state = state.display(),
            address = address.display(),
        );
        if major >= 2 {
            config.push_str(&format!(
                "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{}\"\n",
                dir.path().join("opt").display()
            ));
        }
        let cni_bridge = if cri {
            let conf_dir = dir.path().join("cni/net.d");
            crate::cri::remove_stale_bridges();
            let bridge = crate::cri::bridge_name();
            crate::cri::write_cni_config(
                &conf_dir,
                &dir.path().join("cni/ipam"),
                &bridge,
                dual_stack,
            )?;
            let with_cloak = install.is_none();
            config.push_str(&crate::cri::cri_plugin_config(
                config_version,
                &pause_image(),
                &conf_dir,
                with_cloak,
            ));
            Some(bridge)
        } else {
            config.insert_str(0, "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n");
            None
        };
        let cloak_config = dir.path().join("cloak.toml");
        let mut configuration = env.configuration(&run_dir);
        configuration.layers.cache_dir = dir.path().join("layer-cache");
        configuration.layers.content_dir = root.join("io.containerd.content.v1.content");
        adjust(&mut configuration);
        std::fs::write(&cloak_config, toml_of(&configuration)?)?;
        let config = match install {
            Some(install) => install(dir.path(), config)?,
            None => config,
        };
        std::fs::write(&config_path, config)?;
        let shim_dir = shim.parent().context("the shim binary has a directory")?;
        let mut path = format!("{}:", shim_dir.display());
        // The containerd under test finds its own runc shim first.
        if let Some(containerd_dir) = containerd_dir() {
            path.push_str(&format!("{}:", containerd_dir.display()));
        }
        path.push_str(&std::env::var("PATH").unwrap_or_default());
        let launch = ContainerdLaunch {
            config: config_path,
            path,
            cloak_config,
        };
        let child = launch.spawn(&dir.path().join("containerd.log"))?;
        let mut containerd = Self {
            dir,
            child,
            address,
            run_dir,
            root,
            state,
            cni_bridge,
            launch,
        };
        containerd.wait_until_serving()?;
        containerd.import_busybox(cri)?;
        Ok(containerd)
    }

    /// containerd's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops containerd with SIGTERM, as a node's service manager does on restart (its shims
    /// and their pods keep running), and starts it again on the same state; returns once it
    /// serves.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.terminate();
        self.child = self.launch.spawn(&self.dir.path().join("containerd.log"))?;
        self.wait_until_serving()
    }

    /// SIGTERM, then SIGKILL after 10 s.
    fn terminate(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_until_serving(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("containerd exited ({status}):\n{}", self.log_tail(40));
            }
            if self.address.exists() && self.ctr(&["version"]).output()?.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("containerd not serving after 30 s:\n{}", self.log_tail(40));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn import_busybox(&self, cri: bool) -> anyhow::Result<()> {
        let rootfs = self.dir.path().join("busybox-rootfs");
        crate::rootfs::build_busybox_rootfs(&rootfs)?;
        let archive = self.dir.path().join("busybox-oci.tar");
        let mut images = oci_image::busybox_images(IMAGE_TAG);
        images.push(oci_image::pause_image(&pause_image()));
        images.push(oci_image::layered_image(&layered_image())?);
        oci_image::write_archive(&rootfs, &images, &archive)?;
        std::fs::remove_dir_all(&rootfs)?;
        let namespaces: &[&str] = if cri {
            &[NAMESPACE, CRI_NAMESPACE]
        } else {
            &[NAMESPACE]
        };
        for namespace in namespaces {
            let output = self
                .ctr_in(namespace, &["images", "import"])
                .arg(&archive)
                .output()?;
            if !output.status.success() {
                bail!(
                    "ctr -n {namespace} images import failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
        Ok(())
    }

    /// `ctr` against this containerd in the test namespace, under a time limit.
    pub fn ctr(&self, args: &[&str]) -> Command {
        self.ctr_in(NAMESPACE, args)
    }

    /// `ctr` in containerd namespace `namespace`.
    pub fn ctr_in(&self, namespace: &str, args: &[&str]) -> Command {
        let mut command = Command::new("timeout");
        command
            .arg("--kill-after=10")
            .arg("300")
            .arg(containerd_program("ctr"))
            .arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(namespace)
            .args(args);
        command
    }

    /// Runs `ctr args`, feeding `stdin`; returns its output.
    pub fn ctr_with_input(&self, args: &[&str], stdin: &[u8]) -> anyhow::Result<Output> {
        let mut child = self
            .ctr(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut input = child.stdin.take().context("stdin is piped")?;
        input.write_all(stdin)?;
        drop(input);
        Ok(child.wait_with_output()?)
    }

    /// `ctr run --rm --runtime cloak IMAGE ID ARGS...` with extra ctr flags before the image.
    pub fn run(
        &self,
        flags: &[&str],
        image: &str,
        id: &str,
        args: &[&str],
    ) -> anyhow::Result<Output> {
        let mut all = vec!["run", "--rm", "--runtime", RUNTIME];
        all.extend_from_slice(flags);
        all.push(image);
        all.push(id);
        all.extend_from_slice(args);
        Ok(self.ctr(&all).stdin(Stdio::null()).output()?)
    }

    /// Runs `ctr args` with a `rows`x`columns` pseudo-terminal as its stdin, stdout and stderr
    /// (what `-t` needs); returns what it wrote and its exit code.
    pub fn ctr_on_terminal(
        &self,
        args: &[&str],
        rows: u16,
        columns: u16,
    ) -> anyhow::Result<(String, Option<i32>)> {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None)?;
        let mut command = self.ctr(args);
        command
            .stdin(Stdio::from(pty.slave.try_clone()?))
            .stdout(Stdio::from(pty.slave.try_clone()?))
            .stderr(Stdio::from(pty.slave));
        let mut child = command.spawn()?;
        // Drop our copy of the slave (moved into the command) so EOF arrives when ctr exits.
        drop(command);
        let mut master = std::fs::File::from(pty.master);
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut buffer = [0u8; 4096];
            // EIO on the master means every slave fd is closed.
            while let Ok(n) = std::io::Read::read(&mut master, &mut buffer) {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buffer[..n]);
            }
            out
        });
        let status = child.wait()?;
        let out = reader
            .join()
            .map_err(|_| anyhow::anyhow!("pty reader panicked"))?;
        Ok((String::from_utf8_lossy(&out).into_owned(), status.code()))
    }

    /// Polls `ctr task ls` until `id`'s status is `status` ("GONE": the task is gone), for up
    /// to `timeout`; the last listing.
    pub fn wait_for_task_status(
        &self,
        id: &str,
        status: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            let output = self.ctr(&["task", "ls"]).output()?;
            last = String::from_utf8_lossy(&output.stdout).into_owned();
            let line = last
                .lines()
                .find(|l| l.split_whitespace().next() == Some(id));
            match (line, status) {
                (None, "GONE") => return Ok(last),
                (Some(line), _) if line.split_whitespace().nth(2) == Some(status) => {
                    return Ok(last)
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        bail!(
            "task {id} never reached {status}; last `ctr task ls`:\n{last}\n{}",
            self.log_tail(60)
        )
    }

    /// `ctr run -d` of a cloak container `id` running `args`; returns once it is RUNNING.
    pub fn run_detached(&self, id: &str, args: &[&str]) -> anyhow::Result<()> {
        let image = image();
        let mut all = vec!["run", "-d", "--runtime", RUNTIME, image.as_str(), id];
        all.extend_from_slice(args);
        let output = self.ctr(&all).output()?;
        if !output.status.success() {
            bail!(
                "ctr run -d {id}: {}\n{}",
                String::from_utf8_lossy(&output.stderr),
                self.log_tail(60)
            );
        }
        self.wait_for_task_status(id, "RUNNING", Duration::from_secs(60))?;
        Ok(())
    }

    /// `ctr task rm` then `ctr container rm`; both must succeed.
    pub fn remove_stopped(&self, id: &str) -> anyhow::Result<()> {
        for args in [["task", "rm", id], ["container", "rm", id]] {
            let output = self.ctr(&args).output()?;
            if !output.status.success() {
                bail!(
                    "ctr {args:?}: {}\n{}",
                    String::from_utf8_lossy(&output.stderr),
                    self.log_tail(60)
                );
            }
        }
        Ok(())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Shim server processes started by this containerd.
    pub fn shim_processes(&self) -> Vec<String> {
        crate::processes_mentioning(&self.address)
            .into_iter()
            .filter(|line| line.contains(SHIM_BINARY))
            .collect()
    }

    /// Mount points below this containerd's directories or cloak's run directory, deepest
    /// first.
    pub fn mounts_left(&self) -> Vec<String> {
        cloak_host::host_mounts::mounts_below(self.dir.path())
            .iter()
            .map(|point| point.display().to_string())
            .collect()
    }

    /// Everything a finished container may have left: processes, mounts, sockets, pod
    /// directories (apart from kept console logs when `allow_console_logs`).
    pub fn leftovers(&self, allow_console_logs: bool) -> Vec<String> {
        let mut found: Vec<String> = crate::processes_mentioning(&self.run_dir)
            .into_iter()
            .map(|p| format!("process {p}"))
            .collect();
        found.extend(
            self.shim_processes()
                .into_iter()
                .map(|p| format!("shim {p}")),
        );
        found.extend(self.mounts_left().into_iter().map(|m| format!("mount {m}")));
        found.extend(
            crate::sockets_below(&self.run_dir)
                .into_iter()
                .map(|s| format!("socket {}", s.display())),
        );
        for entry in std::fs::read_dir(&self.run_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let pod_dir = entry.path();
            let only_console = std::fs::read_dir(&pod_dir)
                .map(|entries| entries.flatten().all(|e| e.file_name() == "console.log"))
                .unwrap_or(false);
            if !(allow_console_logs && only_console) {
                let mut names: Vec<String> = std::fs::read_dir(&pod_dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                found.push(format!(
                    "pod directory {} ({})",
                    pod_dir.display(),
                    names.join(" ")
                ));
            }
        }
        found
    }

    /// Waits until nothing is left (containerd cleans up asynchronously after a task exits).
    pub fn wait_for_no_leftovers(&self, allow_console_logs: bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = self.leftovers(allow_console_logs);
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts recording containerd's event stream (`ctr events`).
    pub fn record_events(&self) -> anyhow::Result<EventLog> {
        let path = self
            .dir
            .path()
            .join(format!("events-{}.log", std::process::id()));
        let file = std::fs::File::create(&path)?;
        let child = self
            .ctr(&["events"])
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()?;
        // `ctr events` subscribes asynchronously: give it a moment before events happen.
        std::thread::sleep(Duration::from_millis(300));
        Ok(EventLog { child, path })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// containerd's events as `ctr events` prints them: `<time> <namespace> <topic> <json>`.
pub struct EventLog {
    child: Child,
    path: PathBuf,
}

impl EventLog {
    /// The events seen so far on `topic` for container `id`, as JSON.
    pub fn events(&self, topic: &str, id: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        // The time stamp has spaces of its own: find the topic as a word, the event at `{`.
        text.lines()
            .filter(|line| line.split_whitespace().any(|word| word == topic))
            .filter_map(|line| serde_json::from_str(&line[line.find('{')?..]).ok())
            .filter(|event: &serde_json::Value| event["container_id"] == id)
            .collect()
    }

    /// Waits for the first TaskExit of container `id`'s init process; its exit status.
    pub fn wait_for_exit(&self, id: &str) -> Option<u64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(event) = self
                .events("/tasks/exit", id)
                .into_iter()
                .find(|event| event["id"] == id)
            {
                // protobuf JSON leaves zero values out.
                return Some(event["exit_status"].as_u64().unwrap_or(0));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn toml_of(config: &cloak_host::Configuration) -> anyhow::Result<String> {
    Ok(toml::to_string(config)?)
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        self.terminate();
        // A test that failed half-way leaves shims and VMs running without containerd: they
        // would load the host under every later test. Each names this directory.
        for pid in cloak_host::run_dir_sweep::processes_mentioning(self.dir.path()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Undo what a failed test may have left mounted, so the temp dir can go.
        for point in self.mounts_left() {
            let _ = nix::mount::umount2(Path::new(&point), nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some(bridge) = &self.cni_bridge {
            let _ = Command::new("ip").args(["link", "del", bridge]).output();
        }
    }
}
