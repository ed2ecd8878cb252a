//! The guest console log: its last lines go into every boot error, because they are usually
//! the only explanation of why a guest did not come up.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// How much of a log's end is read to find the last lines.
const TAIL_WINDOW: u64 = 64 * 1024;

/// The last `lines` lines of `path` (empty if it does not exist).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = length.saturating_sub(TAIL_WINDOW);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    // Serial consoles emit CR LF; a partial first line after seeking is dropped.
    let all: Vec<&str> = text
        .lines()
        .skip(usize::from(start > 0))
        .map(|line| line.trim_end_matches('\r'))
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, "a\r\nb\r\nc\r\nd\r\n").unwrap();
        assert_eq!(tail(&log, 2), "c\nd");
        assert_eq!(tail(&log, 10), "a\nb\nc\nd");
        assert_eq!(tail(&dir.path().join("missing"), 3), "");
    }

    #[test]
    fn long_logs_are_read_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let mut text = String::new();
        for i in 0..20_000 {
            text.push_str(&format!("line {i}\n"));
        }
        std::fs::write(&log, text).unwrap();
        assert_eq!(tail(&log, 2), "line 19998\nline 19999");
    }
}
