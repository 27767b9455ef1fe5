//! The control socket: bind (mode 0600, refusing a live socket of another daemon), accept with
//! the `limits.control_clients` cap, one thread per client reading one request line at a time
//! (bounded by `limits.control_request_bytes`), and one response line per request; a
//! `capture` turns its connection into the capture's stream.

use crate::handlers;
use crate::state::{ClientSlot, Daemon};
use anyhow::{Context, Result, bail};
use control::{DecodeError, Response, decode_request};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub(crate) fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "{} is in use: another vswitch daemon is running (stop it, or pass --socket)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot bind control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Answers a client over the `limits.control_clients` limit and closes it, without blocking
/// the accept loop on a client that does not read.
fn refuse_client(stream: &UnixStream, max: usize) {
    tracing::warn!(max, "control client refused: too many at once");
    let _ = stream.set_nonblocking(true);
    let mut w = stream;
    let _ = respond(
        &mut w,
        &Response::err(format!(
            "the daemon is serving {max} control clients already (limits.control_clients): retry later"
        )),
    );
}

fn serve(d: &Daemon, stream: UnixStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    // A client that stops reading must not hold its slot (and a thread) for ever.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    loop {
        let mut line = Vec::new();
        let n = match (&mut reader)
            .take(d.max_request as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(n) => n,
            Err(e) => {
                let _ = respond(
                    &mut writer,
                    &Response::err(format!("unreadable request: {e}")),
                );
                return;
            }
        };
        if n == 0 {
            return;
        }
        let decoded = decode_request(&line, d.max_request);
        let cmd = decoded
            .as_ref()
            .map_or_else(|_| "invalid".to_string(), handlers::usage::cmd_of);
        let resp = match decoded {
            Ok(control::Request::Capture {
                target,
                filter,
                snaplen,
                direction,
            }) => {
                let args = handlers::capture::CaptureArgs {
                    target,
                    filter,
                    snaplen,
                    direction,
                };
                match handlers::capture::start(d, args) {
                    // The connection is the capture's from here on.
                    Ok((answer, streaming)) => {
                        d.requests.count(&cmd, true);
                        if respond(&mut writer, &Response::ok(answer)).is_ok() {
                            streaming.run(&stream);
                        }
                        return;
                    }
                    Err(e) => Response::err(format!("{e:#}")),
                }
            }
            Ok(control::Request::Events) => {
                d.requests.count(&cmd, true);
                if respond(&mut writer, &Response::ok(serde_json::json!({}))).is_ok() {
                    stream_events(d, &stream);
                }
                return;
            }
            Ok(req) => handle(d, req),
            Err(e @ DecodeError::TooLong(_)) => {
                // The rest of the line is still unread: the stream cannot be resynchronised.
                d.requests.count(&cmd, false);
                let _ = respond(&mut writer, &Response::err(e));
                return;
            }
            Err(e) => Response::err(e),
        };
        d.requests.count(&cmd, resp.ok);
        if respond(&mut writer, &resp).is_err() {
            return;
        }
    }
}

/// Whether a streaming client shut down its writing half (or closed): the end of its stream.
/// Anything it sends meanwhile is ignored.
pub(crate) fn client_done(stream: &UnixStream) -> bool {
    match datapath::io::wait::readable(stream.as_fd(), Duration::ZERO) {
        Ok(true) => {
            let mut buf = [0u8; 256];
            let mut r = stream;
            !matches!(r.read(&mut buf), Ok(n) if n > 0)
        }
        Ok(false) => false,
        Err(_) => true,
    }
}

/// Streams events to a subscriber, one JSON line each, until it goes away.
fn stream_events(d: &Daemon, stream: &UnixStream) {
    let sub = d.events.subscribe(&d.engines);
    tracing::info!("events subscriber joined");
    let mut w = stream;
    loop {
        if let Some(event) = sub.next(Duration::from_millis(200)) {
            let mut line = event.to_string();
            line.push('\n');
            if w.write_all(line.as_bytes()).is_err() {
                break;
            }
            continue;
        }
        if client_done(stream) {
            break;
        }
    }
    d.events.unsubscribe(sub, &d.engines);
    tracing::info!("events subscriber left");
}

fn respond(w: &mut impl Write, resp: &Response) -> std::io::Result<()> {
    let mut s = serde_json::to_string(resp).unwrap_or_else(|_| "{\"ok\":false}".into());
    s.push('\n');
    w.write_all(s.as_bytes())
}

fn handle(d: &Daemon, req: control::Request) -> Response {
    match handlers::run(d, req) {
        Ok(v) => Response::ok(v),
        Err(e) => Response::err(format!("{e:#}")),
    }
}

/// How often the accept loop looks at the shutdown flag while no client comes.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(100);

/// Serves control clients until a signal or a `shutdown` request sets `d.shutdown`.
pub(crate) fn accept_until_shutdown(daemon: &Arc<Daemon>, listener: &UnixListener) {
    while !daemon.shutdown.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if daemon.clients.fetch_add(1, Ordering::Relaxed) >= daemon.max_clients {
                    daemon.clients.fetch_sub(1, Ordering::Relaxed);
                    refuse_client(&stream, daemon.max_clients);
                    continue;
                }
                let slot = ClientSlot(Arc::clone(daemon));
                let spawned = std::thread::Builder::new()
                    .name("vswitch-control".into())
                    .spawn(move || serve(&slot.0, stream));
                if let Err(e) = spawned {
                    // The slot was moved into the closure and is released with it.
                    tracing::warn!("cannot start a control client thread: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Woken as soon as a client connects (a fixed sleep here added up to 50 ms to
                // every request); the timeout is how often the shutdown flag is seen.
                if let Err(e) = datapath::io::wait::readable(listener.as_fd(), SHUTDOWN_CHECK) {
                    tracing::warn!("waiting on the control socket: {e}");
                    std::thread::sleep(SHUTDOWN_CHECK);
                }
            }
            Err(e) => {
                // E.g. EMFILE: wait instead of spinning on the error.
                tracing::warn!("accept on control socket: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}
