//! The short setting of `make fuzz`, in the test suite: every target over its committed seeds
//! and a few thousand mutants, with no crash. And the driver itself can fail: a target that
//! panics on some inputs is caught and its inputs kept.

use std::path::Path;

use cloak_fuzz::driver::{run, seeds, Budget};
use cloak_fuzz::{Target, TARGETS};

const SMOKE_EXECUTIONS: u64 = 3000;

#[test]
fn every_target_survives_its_seeds_and_their_mutants() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in TARGETS {
        let seeds = seeds(&corpus, target.name).expect("the corpus reads");
        assert!(
            seeds.iter().any(|seed| !seed.is_empty()),
            "{}: no committed seed in {}",
            target.name,
            corpus.join(target.name).display()
        );
        let outcome = run(target, &seeds, Budget::Executions(SMOKE_EXECUTIONS), 1);
        assert!(outcome.executions >= SMOKE_EXECUTIONS);
        assert!(
            outcome.crashes.is_empty(),
            "{}: crashes on {:?}",
            target.name,
            outcome
                .crashes
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_target_that_panics_is_caught_and_its_input_kept() {
    fn fragile(data: &[u8]) {
        assert!(!data.contains(&b'\n'), "a newline");
    }
    let target = Target {
        name: "fragile",
        run: fragile,
    };
    let outcome = run(
        &target,
        &[b"no newline here".to_vec()],
        Budget::Executions(5000),
        3,
    );
    assert!(
        !outcome.crashes.is_empty(),
        "the mutants never made a newline"
    );
    assert!(outcome.crashes.iter().all(|input| input.contains(&b'\n')));
    assert_eq!(outcome.executions, 5000, "the run goes on after a crash");
}
