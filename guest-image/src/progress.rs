//! Build progress: numbered steps on a terminal, log events otherwise.

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct Progress {
    total: usize,
    current: usize,
    started: Instant,
    terminal: bool,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Self {
            total,
            current: 0,
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    pub fn step(&mut self, what: &str) {
        self.current += 1;
        if self.terminal {
            let elapsed = self.started.elapsed().as_secs_f32();
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(
                stderr,
                "[{}/{}] {what} ({elapsed:.1}s)",
                self.current, self.total
            );
        }
        tracing::info!(step = self.current, total = self.total, "{what}");
    }
}
