//! Reading the one text line that starts a raw connection (a stdio stream header, a
//! port-forward request or answer) without consuming any of the bytes after it: byte by byte,
//! since whatever follows the newline belongs to the stream.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The next line of `stream` without its newline (invalid UTF-8 replaced); an `InvalidData`
/// error once it runs past `max` bytes, the read error if the stream ends first.
pub async fn read_line(
    stream: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> std::io::Result<String> {
    let mut line = Vec::with_capacity(64);
    loop {
        let byte = stream.read_u8().await?;
        if byte == b'\n' {
            break;
        }
        line.push(byte);
        if line.len() > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a line longer than {max} bytes"),
            ));
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    #[test]
    fn a_line_is_read_and_what_follows_is_left() {
        let mut input: &[u8] = b"OK\nDATA";
        assert_eq!(block_on(read_line(&mut input, 8)).expect("line"), "OK");
        assert_eq!(input, b"DATA");
    }

    #[test]
    fn long_lines_and_early_ends_are_errors() {
        let mut long: &[u8] = b"123456789\n";
        let err = block_on(read_line(&mut long, 8)).expect_err("too long");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        let mut cut: &[u8] = b"FORWARD 80";
        let err = block_on(read_line(&mut cut, 64)).expect_err("no newline");
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
