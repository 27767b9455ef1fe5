//! Process-wide settings a command-line tool needs from the kernel.

/// Lets a write to a closed pipe end the process quietly, as it does for `ls` or `cat`.
///
/// Rust starts every program with SIGPIPE ignored, so `vswitch stats | head` would see EPIPE on
/// its next `println!` and panic. Commands that only print call this first; the daemon must not
/// (a client that hangs up must not kill it), so it keeps the ignored default.
pub fn die_on_broken_pipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler code, so nothing can run in a signal
    // context; it only changes this process's disposition of SIGPIPE. Called before any thread
    // that writes to a pipe is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
