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
        "cannot reach the daemon at {}: is `vswitch daemon` running (and are you allowed to open its socket)? ({source})",
        path.display()
    )]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
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
    let stream = UnixStream::connect(socket).map_err(|source| CallError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = &stream;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    w.write_all(line.as_bytes())?;
    let mut reader = BufReader::new(&stream);
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    if answer.is_empty() {
        return Err(CallError::NoAnswer);
    }
    let resp: Response = serde_json::from_str(&answer)?;
    match (resp.ok, resp.result, resp.error) {
        (true, Some(v), _) => Ok(v),
        (true, None, _) => Ok(serde_json::Value::Null),
        (false, _, e) => Err(CallError::Refused(
            e.unwrap_or_else(|| "request failed".into()),
        )),
    }
}
