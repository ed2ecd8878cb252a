//! The bounded driver: each seed of a target's corpus is run as it is, then mutants of them
//! until the budget (a number of executions, or a time) is spent. A panic is a crash: it is
//! caught, the input kept, and the run goes on. Deterministic for a given seed number.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::mutate::{mutate, Rng};
use crate::Target;

/// How much a run may do.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Executions(u64),
    Time(Duration),
}

/// What a run did.
#[derive(Debug)]
pub struct Outcome {
    pub target: &'static str,
    pub executions: u64,
    pub elapsed: Duration,
    /// Inputs that made the target panic (the first few).
    pub crashes: Vec<Vec<u8>>,
    /// What the first crash's panic said.
    pub first_panic: Option<String>,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        self.executions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Crashing inputs kept per run.
const KEPT_CRASHES: usize = 8;

/// The seeds in `corpus/<target>/` (sorted by name); one empty input when there are none.
pub fn seeds(corpus: &Path, target: &str) -> std::io::Result<Vec<Vec<u8>>> {
    let dir = corpus.join(target);
    let mut paths: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.is_file())
            .collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(err),
    };
    paths.sort();
    let mut seeds = paths
        .iter()
        .map(std::fs::read)
        .collect::<std::io::Result<Vec<_>>>()?;
    if seeds.is_empty() {
        seeds.push(Vec::new());
    }
    Ok(seeds)
}

/// Runs `target` on `seeds` and their mutants within `budget`.
pub fn run(target: &Target, seeds: &[Vec<u8>], budget: Budget, seed: u64) -> Outcome {
    // Quiet while crashes are expected and caught; the report says what crashed.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let mut outcome = Outcome {
        target: target.name,
        executions: 0,
        elapsed: Duration::ZERO,
        crashes: Vec::new(),
        first_panic: None,
    };
    let execute = |input: &[u8], outcome: &mut Outcome| {
        outcome.executions += 1;
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| (target.run)(input))) {
            if outcome.first_panic.is_none() {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()));
                outcome.first_panic = Some(message.unwrap_or_else(|| "(no message)".into()));
            }
            if outcome.crashes.len() < KEPT_CRASHES {
                outcome.crashes.push(input.to_vec());
            }
        }
    };
    for input in seeds {
        execute(input, &mut outcome);
    }
    let spent = |outcome: &Outcome| match budget {
        Budget::Executions(limit) => outcome.executions >= limit,
        // Checking the clock every execution would cost more than most targets.
        Budget::Time(limit) => outcome.executions % 256 == 0 && started.elapsed() >= limit,
    };
    while !spent(&outcome) && !seeds.is_empty() {
        let input = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let mutant = mutate(&mut rng, input, other);
        execute(&mutant, &mut outcome);
    }
    outcome.elapsed = started.elapsed();
    std::panic::set_hook(hook);
    outcome
}
