//! The pod this shim serves: one VM, booted for the pod's first container, with the agent
//! client the Task API uses and the host directories of the pod. A watcher notices a VM that
//! exits by itself; the VM is shut down when the pod's last container is deleted.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use cloak_protocol::agent_ttrpc::AgentServiceClient;
use tokio::sync::Mutex;

use super::bundle::PodRecord;
use cloak_host::config::Configuration;
use cloak_host::host_mounts;
use cloak_host::hypervisor::VmExit;
use cloak_host::phase_timeline::PhaseTimeline;
use cloak_host::{AgentClient, PodSetup, PodVm};

/// Exit status reported for every process of a pod whose VM died under it: not a status a
/// process inside gives itself by dying from a signal (128 + n).
pub const VM_DIED_EXIT_STATUS: u32 = 255;

/// How often new guest console lines are forwarded to the shim log.
const CONSOLE_FORWARD_INTERVAL: Duration = Duration::from_millis(500);

/// Reads what was appended to a growing file since the last call, in whole lines.
#[derive(Debug, Default)]
struct ConsoleFollower {
    offset: u64,
    partial: Vec<u8>,
}

impl ConsoleFollower {
    fn new_lines(&mut self, path: &std::path::Path) -> Vec<String> {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(path) else {
            return Vec::new();
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut fresh = Vec::new();
        if file.read_to_end(&mut fresh).is_err() {
            return Vec::new();
        }
        self.offset += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        let mut lines = Vec::new();
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            if !text.is_empty() {
                lines.push(text);
            }
        }
        lines
    }
}

/// How often the watcher looks at the VMM process.
const VM_WATCH_INTERVAL: Duration = Duration::from_millis(200);

pub struct Pod {
    pub record: PodRecord,
    /// The layers the pod's policy pins per container, and the node's cache of their images.
    pub layer_pins: super::layers::LayerPins,
    pub layer_cache: cloak_host::layer_cache::LayerCache,
    /// A clone of the VM's, usable without taking the VM's lock.
    client: AgentClient,
    vmm_pid: u32,
    /// `None` once the pod was shut down.
    vm: Mutex<Option<PodVm>>,
    /// Set once the VM exited without being asked to.
    died: StdMutex<Option<VmExit>>,
    /// The agent liveness probe (interval, misses that declare the pod dead).
    liveness: Option<(Duration, u32)>,
    /// The lock that tells other shims' sweeps this pod directory is live.
    _owner: cloak_host::run_dir_sweep::PodDirOwner,
    /// The phases of the pod's start, logged once its first container started.
    start_timeline: StdMutex<Option<PhaseTimeline>>,
}

/// Counts probes without an answer; a pod is dead after `misses` in a row.
#[derive(Debug)]
struct Liveness {
    misses: u32,
    missed: u32,
}

impl Liveness {
    fn new(misses: u32) -> Self {
        Self { misses, missed: 0 }
    }

    /// Records one probe; true once the pod is to be declared dead.
    fn record(&mut self, answered: bool) -> bool {
        self.missed = if answered { 0 } else { self.missed + 1 };
        self.missed >= self.misses
    }
}

impl Pod {
    /// Boots the pod VM; on failure nothing of it stays but its console log.
    pub async fn boot(
        config: &Configuration,
        record: PodRecord,
        mut setup: PodSetup,
    ) -> anyhow::Result<Self> {
        let mut timeline = PhaseTimeline::new();
        let manifest = cloak_image::Manifest::load(&config.guest.image_dir)?;
        // What a reboot or a lost cleanup left of other pods goes before this one starts.
        let run_root = config.runtime.run_dir.clone();
        tokio::task::spawn_blocking(move || {
            cloak_host::run_dir_sweep::sweep(&run_root, std::time::SystemTime::now())
        })
        .await?;
        timeline.phase("run-dir sweep");
        let owner = cloak_host::run_dir_sweep::PodDirOwner::take(&record.pod_dir)?;
        let shared = record.shared_dir();
        host_mounts::make_shared_mount_point(&shared)?;
        setup.shared_dir = shared.clone();
        timeline.phase("host prepare");
        let booted = PodVm::create_pod(config, &manifest, &record.pod_id, &setup).await;
        let vm = match booted {
            Ok(vm) => vm,
            Err(err) => {
                if let Err(cleanup) = host_mounts::unmount_and_remove(&shared) {
                    tracing::warn!(pod = %record.pod_id, error = %cleanup, "removing the shared directory");
                }
                let _ = std::fs::remove_file(
                    record.pod_dir.join(cloak_host::run_dir_sweep::OWNER_LOCK),
                );
                return Err(err.into());
            }
        };
        timeline.append(vm.timeline());
        let vmm_pid = vm.process_ids().first().copied().unwrap_or(0);
        Ok(Self {
            layer_pins: super::layers::LayerPins::of_init_data(&setup.init_data),
            layer_cache: cloak_host::layer_cache::LayerCache::new(
                &config.layers.cache_dir,
                &config.layers.content_dir,
            ),
            client: vm.agent().clone(),
            vmm_pid,
            record,
            vm: Mutex::new(Some(vm)),
            died: StdMutex::new(None),
            liveness: config.liveness(),
            _owner: owner,
            start_timeline: StdMutex::new(Some(timeline)),
        })
    }

    /// Ends phase `name` of the pod's start (until its first container started).
    pub fn start_phase(&self, name: &'static str) {
        let mut timeline = self
            .start_timeline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(timeline) = timeline.as_mut() {
            timeline.phase(name);
        }
    }

    /// Ends the last phase of the pod's start, `name`, and logs the timeline (once).
    pub fn finish_start(&self, name: &'static str) {
        let timeline = self
            .start_timeline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut timeline) = timeline {
            timeline.phase(name);
            timeline.log(
                &self.record.pod_id,
                cloak_host::phase_timeline::START_MESSAGE,
            );
        }
    }

    pub fn agent(&self) -> &AgentServiceClient {
        self.client.agent()
    }

    /// The agent client with the pod's stdio streams (`open_stdio`).
    pub fn client(&self) -> &AgentClient {
        &self.client
    }

    /// Context for an ordinary agent request.
    pub fn context(&self) -> ttrpc::context::Context {
        self.client.context()
    }

    pub fn vmm_pid(&self) -> u32 {
        self.vmm_pid
    }

    /// How the VM died, if it did.
    pub fn died(&self) -> Option<VmExit> {
        self.died
            .lock()
            .expect("died lock is never poisoned")
            .clone()
    }

    /// Waits until the VM exits by itself (then stops its backends and returns how it ended)
    /// or the pod is shut down (then returns `None`). Meanwhile probes the agent: a guest
    /// that stops answering is killed, and then reported like any VM that died.
    pub async fn watch_vm(&self) -> Option<VmExit> {
        let mut liveness = self.liveness.map(|(interval, misses)| {
            (
                interval,
                Liveness::new(misses),
                tokio::time::Instant::now() + interval,
            )
        });
        loop {
            tokio::time::sleep(VM_WATCH_INTERVAL).await;
            {
                let mut guard = self.vm.lock().await;
                let vm = guard.as_mut()?;
                if let Some(exit) = vm.try_exit() {
                    let console_log = vm.console_log();
                    tracing::error!(
                        pod = %self.record.pod_id,
                        exit = %exit,
                        console_log = %console_log.display(),
                        console_tail = %cloak_host::console::tail(&console_log, 20),
                        "the pod VM exited unexpectedly"
                    );
                    *self.died.lock().expect("died lock is never poisoned") = Some(exit.clone());
                    vm.stop_exited().await;
                    return Some(exit);
                }
            }
            if let Some((interval, counter, next)) = liveness.as_mut() {
                if tokio::time::Instant::now() >= *next {
                    *next = tokio::time::Instant::now() + *interval;
                    self.probe(*interval, counter).await;
                }
            }
        }
    }

    /// One liveness probe: Check within `interval`; the VMM is killed once too many in a row
    /// went unanswered (the watcher then sees it exit).
    async fn probe(&self, interval: Duration, liveness: &mut Liveness) {
        let answer = tokio::time::timeout(interval, self.client.check()).await;
        let answered = matches!(answer, Ok(Ok(())));
        if !liveness.record(answered) {
            if !answered {
                tracing::warn!(pod = %self.record.pod_id, missed = liveness.missed, "the agent did not answer a liveness probe");
            }
            return;
        }
        let mut guard = self.vm.lock().await;
        if let Some(vm) = guard.as_mut() {
            tracing::error!(
                pod = %self.record.pod_id,
                missed = liveness.missed,
                interval_ms = interval.as_millis() as u64,
                "the agent stopped answering: the guest hangs, killing its VMM"
            );
            vm.kill();
        }
    }

    /// Follows the guest console into the shim's log at debug level while the pod runs (the
    /// file itself stays the full record).
    pub fn forward_console(pod: &Arc<Self>) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let weak = Arc::downgrade(pod);
        let path = cloak_host::run_dir::console_log(&pod.record.pod_dir);
        let pod_id = pod.record.pod_id.clone();
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            let mut follower = ConsoleFollower::default();
            loop {
                tokio::time::sleep(CONSOLE_FORWARD_INTERVAL).await;
                let running = match weak.upgrade() {
                    Some(pod) => pod.vm.lock().await.is_some(),
                    None => false,
                };
                for line in follower.new_lines(&path) {
                    tracing::debug!(pod = %pod_id, console = %line, "guest");
                }
                if !running {
                    break;
                }
            }
        }));
    }

    /// Powers the VM off and removes the pod's host directories. After a VM death the
    /// console log is kept for the post-mortem.
    pub async fn shut_down(&self) {
        let Some(mut vm) = self.vm.lock().await.take() else {
            return;
        };
        // A VM that is gone before we asked it to stop died on its own, even if the watcher
        // (which polls) has not noticed yet: the failed agent wait of its processes can bring
        // the last Delete here first.
        if self.died().is_none() {
            if let Some(exit) = vm.try_exit() {
                tracing::error!(pod = %self.record.pod_id, exit = %exit, "the pod VM exited unexpectedly");
                *self.died.lock().expect("died lock is never poisoned") = Some(exit);
            }
        }
        let console_log = vm.console_log();
        vm.shutdown().await;
        let to_remove = if self.died().is_some() {
            tracing::info!(pod = %self.record.pod_id, console_log = %console_log.display(), "console log kept");
            let _ = std::fs::remove_file(
                self.record
                    .pod_dir
                    .join(cloak_host::run_dir_sweep::OWNER_LOCK),
            );
            self.record.shared_dir()
        } else {
            self.record.pod_dir.clone()
        };
        if let Err(err) = host_mounts::unmount_and_remove(&to_remove) {
            tracing::warn!(pod = %self.record.pod_id, error = %err, "removing the pod's directories");
        }
        tracing::info!(pod = %self.record.pod_id, "pod VM shut down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_pod_is_dead_only_after_enough_misses_in_a_row() {
        let mut liveness = Liveness::new(3);
        assert!(!liveness.record(false));
        assert!(!liveness.record(false));
        // An answer starts the count again.
        assert!(!liveness.record(true));
        assert!(!liveness.record(false));
        assert!(!liveness.record(false));
        assert!(liveness.record(false));
    }

    #[test]
    fn the_follower_returns_only_new_whole_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("console.log");
        let mut file = std::fs::File::create(&path).expect("create");
        let mut follower = ConsoleFollower::default();
        assert!(follower.new_lines(&path).is_empty());
        file.write_all(b"[    0.1] one\r\n[    0.2] tw")
            .expect("write");
        assert_eq!(follower.new_lines(&path), vec!["[    0.1] one"]);
        file.write_all(b"o\n\n").expect("write");
        assert_eq!(follower.new_lines(&path), vec!["[    0.2] two"]);
        assert!(follower.new_lines(&path).is_empty());
    }
}
