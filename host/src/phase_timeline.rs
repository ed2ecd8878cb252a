//! A pod start crosses the network setup, the VMM and its helpers, the guest's boot, the
//! agent's requests and the shim's own staging; when a start gets slower, the question is
//! which of these did. A `PhaseTimeline` records each named phase as it ends and logs the
//! whole at debug level as one line, `pod start timeline` with `phases="name=ms ..."`, that
//! a benchmark reads back (`parse_phases`) to print each phase's median. A pod's stop (the
//! tail of every `ctr run --rm`) is timed the same way, as `pod stop timeline`.

use std::time::{Duration, Instant};

/// The message a start's timeline is logged under (benchmarks look for it).
pub const START_MESSAGE: &str = "pod start timeline";
/// The message a stop's timeline is logged under.
pub const STOP_MESSAGE: &str = "pod stop timeline";

#[derive(Debug, Clone)]
pub struct PhaseTimeline {
    started: Instant,
    last: Instant,
    phases: Vec<(&'static str, Duration)>,
}

impl Default for PhaseTimeline {
    fn default() -> Self {
        Self::new()
    }
}

impl PhaseTimeline {
    pub fn new() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            last: now,
            phases: Vec::new(),
        }
    }

    /// Ends phase `name`: the time since the previous phase ended (or the timeline began).
    pub fn phase(&mut self, name: &'static str) {
        let now = Instant::now();
        self.phases.push((name, now.duration_since(self.last)));
        self.last = now;
    }

    /// Appends the phases of `part` (a stretch of the start timed on its own, just ended):
    /// the next phase is timed from now.
    pub fn append(&mut self, part: &PhaseTimeline) {
        self.phases.extend(part.phases.iter().copied());
        self.last = Instant::now();
    }

    /// The phases so far, in the order they were recorded.
    pub fn phases(&self) -> &[(&'static str, Duration)] {
        &self.phases
    }

    /// Since the timeline began.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// `name=ms` for each phase, space-separated.
    pub fn phases_field(&self) -> String {
        self.phases
            .iter()
            .map(|(name, took)| format!("{}={}", name.replace(' ', "_"), took.as_millis()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Logs the timeline of pod `pod` under `message` (`START_MESSAGE`, `STOP_MESSAGE`).
    pub fn log(&self, pod: &str, message: &'static str) {
        tracing::debug!(
            pod,
            total_ms = self.elapsed().as_millis() as u64,
            phases = ?self.phases_field(),
            "{message}"
        );
    }
}

/// The phases of a timeline line logged under `message` (`phases="a=1 b=2"` anywhere in
/// it), or `None` for a line that is not one.
pub fn parse_phases(line: &str, message: &str) -> Option<Vec<(String, u64)>> {
    if !line.contains(message) {
        return None;
    }
    let (_, rest) = line.split_once("phases=")?;
    let rest = rest.strip_prefix('"')?;
    let (field, _) = rest.split_once('"')?;
    field
        .split_whitespace()
        .map(|pair| {
            let (name, ms) = pair.split_once('=')?;
            Some((name.to_owned(), ms.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_timed_in_order_and_read_back_from_the_log_line() {
        let mut timeline = PhaseTimeline::new();
        std::thread::sleep(Duration::from_millis(20));
        timeline.phase("vm launch");
        timeline.phase("guest boot");
        let phases = timeline.phases();
        assert_eq!(phases.len(), 2);
        assert!(phases[0].1 >= Duration::from_millis(20), "{phases:?}");
        assert!(phases[1].1 < Duration::from_millis(20), "{phases:?}");
        let field = timeline.phases_field();
        // What tracing's fmt layer prints for the event, as the shim's log fifo carries it.
        let line = format!(
            "2026-12-04T01:00:00.000000Z DEBUG pod start timeline pod=\"p1\" total_ms=40 phases=\"{field}\""
        );
        assert_eq!(parse_phases(&line, STOP_MESSAGE), None);
        let parsed = parse_phases(&line, START_MESSAGE).expect("a timeline line");
        assert_eq!(parsed[0].0, "vm_launch");
        assert!(parsed[0].1 >= 20);
        assert_eq!(parsed[1].0, "guest_boot");
        assert!(parsed[1].1 < 20);
        assert_eq!(
            parse_phases("DEBUG container created pid=1", START_MESSAGE),
            None
        );
        assert_eq!(
            parse_phases("pod start timeline phases=\"x=1 y\"", START_MESSAGE),
            None
        );
    }
}
