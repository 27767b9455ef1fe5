//! The client side: one request out, one response line back, over the daemon's Unix socket.

use crate::{Request, Response};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a call to the daemon failed; the text says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The socket cannot be opened.
    #[error(
        "cannot reach the daemon at {}: is `vswitch daemon` running (and are you allowed to open its socket)? ({reason})",
        path.display()
    )]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why (not the error's `source`: the text says it already).
        reason: std::io::Error,
    },
    /// Sending or receiving failed.
    #[error("talking to the daemon: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon hung up without an answer.
    #[error("the daemon closed the connection without answering")]
    NoAnswer,
    /// The answer is not a response.
    #[error("the daemon's answer is not valid JSON: {0}")]
    BadAnswer(#[from] serde_json::Error),
    /// The daemon refused the request; its text says why.
    #[error("{0}")]
    Refused(String),
}

/// Sends one request and waits for the response: the result when the daemon says ok.
pub fn call(socket: &Path, req: &Request) -> Result<serde_json::Value, CallError> {
    call_streaming(socket, req).map(|(v, _)| v)
}

/// As [`call`], and the connection after the response line, for requests whose answer is
/// followed by a stream (`capture`). The reader has no timeout: a stream may be quiet.
pub fn call_streaming(
    socket: &Path,
    req: &Request,
) -> Result<(serde_json::Value, BufReader<UnixStream>), CallError> {
    let stream = UnixStream::connect(socket).map_err(|reason| CallError::Connect {
        path: socket.to_path_buf(),
        reason,
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = &stream;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    w.write_all(line.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    if answer.is_empty() {
        return Err(CallError::NoAnswer);
    }
    let resp: Response = serde_json::from_str(&answer)?;
    let value = match (resp.ok, resp.result, resp.error) {
        (true, Some(v), _) => v,
        (true, None, _) => serde_json::Value::Null,
        (false, _, e) => {
            return Err(CallError::Refused(
                e.unwrap_or_else(|| "request failed".into()),
            ));
        }
    };
    reader.get_ref().set_read_timeout(None)?;
    Ok((value, reader))
}
