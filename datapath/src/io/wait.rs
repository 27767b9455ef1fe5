//! Waiting on one descriptor outside the packet loops (the control socket's accept loop, the
//! host proxy's listeners), and waking such a waiter for good.

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// Waits until `fd` is readable (for a listening socket: a client is waiting to be accepted),
/// at most `timeout`; true if it is. EINTR (a signal, e.g. the one asking to shut down) returns
/// false, so the caller rechecks its flags at once.
pub fn readable(fd: BorrowedFd<'_>, timeout: Duration) -> std::io::Result<bool> {
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Stops a listening socket at once: new connections are refused, a thread waiting in
/// [`readable`] on it wakes (and its `accept` fails). Closing the descriptor would do neither
/// while that thread still holds it.
pub fn stop_listening(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both)
        .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixListener;
    use std::time::Instant;

    #[test]
    fn wakes_when_a_client_connects_and_times_out_otherwise() {
        let dir = std::env::temp_dir().join(format!("vswait-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let l = UnixListener::bind(&path).unwrap();
        assert!(!readable(l.as_fd(), Duration::from_millis(20)).unwrap());
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let t = Instant::now();
        assert!(readable(l.as_fd(), Duration::from_secs(5)).unwrap());
        assert!(t.elapsed() < Duration::from_secs(1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
