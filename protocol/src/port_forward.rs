//! The wire format of a forwarded TCP connection (`kubectl port-forward`) between the shim and
//! the agent: one vsock connection per TCP connection. The shim writes `FORWARD <port>\n`; the
//! agent answers `OK\n` once it is connected to that port on the guest's loopback, or
//! `ERR <why>\n` and closes; after `OK` the bytes of both directions flow unchanged. Lines are
//! short and read byte by byte, so no forwarded data is ever consumed with them.

/// vsock port of the agent that forwarded connections arrive on.
pub const PORT_FORWARD_VSOCK_PORT: u32 = 1028;

/// Longest line either side sends before the data.
pub const MAX_LINE: usize = 512;

/// The shim's request line for `port`.
pub fn request_line(port: u16) -> String {
    format!("FORWARD {port}\n")
}

/// The port of a request line (with or without its newline), if it is one.
pub fn parse_request(line: &str) -> Option<u16> {
    let port: u16 = line
        .trim_end_matches('\n')
        .strip_prefix("FORWARD ")?
        .parse()
        .ok()?;
    (port != 0).then_some(port)
}

/// The agent's answer: connected, or refused with a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Connected,
    Refused(String),
}

impl Answer {
    pub fn to_line(&self) -> String {
        match self {
            Answer::Connected => "OK\n".to_owned(),
            // One line: a reason never carries a newline onto the wire.
            Answer::Refused(why) => format!("ERR {}\n", why.replace('\n', " ")),
        }
    }

    /// Parses an answer line (with or without its newline).
    pub fn parse(line: &str) -> Option<Self> {
        let line = line.trim_end_matches('\n');
        if line == "OK" {
            return Some(Answer::Connected);
        }
        line.strip_prefix("ERR ")
            .map(|why| Answer::Refused(why.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        assert_eq!(request_line(8080), "FORWARD 8080\n");
        assert_eq!(parse_request(&request_line(8080)), Some(8080));
        assert_eq!(parse_request("FORWARD 65535"), Some(65535));
        for bad in [
            "FORWARD 0",
            "FORWARD 65536",
            "FORWARD",
            "FORWARD -1",
            "STREAM 1",
            "",
        ] {
            assert_eq!(parse_request(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn answers_round_trip_on_one_line() {
        assert_eq!(Answer::parse("OK\n"), Some(Answer::Connected));
        let refused = Answer::Refused("connection refused\nby 127.0.0.1".into());
        let line = refused.to_line();
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(
            Answer::parse(&line),
            Some(Answer::Refused("connection refused by 127.0.0.1".into()))
        );
        assert_eq!(Answer::parse("NO"), None);
    }
}
