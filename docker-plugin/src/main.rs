//! `vswitch-docker-plugin`: a Docker network driver (libnetwork's remote driver protocol, HTTP
//! with JSON bodies on a Unix socket that dockerd finds in /run/docker/plugins) backed by the
//! vswitch daemon. `docker network create -d vswitch ...` then makes vswitch networks, and
//! containers on them get a veth pair whose host end is a vswitch port.
//!
//! Threads: a few workers share one listener, each serving one request at a time with its own
//! connection to the daemon; the driver holds no state, so they share nothing else.

mod api;
mod driver;
mod translate;

use anyhow::{Context, Result};
use clap::Parser;
use driver::{Driver, DriverError, Socket};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Largest request body read: Docker's are a few KB.
const MAX_BODY: u64 = 1 << 20;
/// Requests served at once (Docker starts containers in parallel).
const WORKERS: usize = 4;

#[derive(Parser)]
#[command(
    name = "vswitch-docker-plugin",
    version,
    about = "Docker network driver backed by the vswitch daemon"
)]
struct Args {
    /// Socket to serve Docker on; dockerd knows the driver by the file's name (NAME.sock:
    /// `docker network create -d NAME`).
    #[arg(long, default_value = "/run/docker/plugins/vswitch.sock")]
    plugin_socket: PathBuf,
    /// Control socket of the vswitch daemon.
    #[arg(
        long,
        default_value = "/run/vswitch/vswitch.sock",
        env = "VSWITCH_SOCKET"
    )]
    socket: PathBuf,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&shutdown))?;
    }
    let server = Arc::new(listen(&args.plugin_socket)?);
    tracing::info!(
        plugin_socket = %args.plugin_socket.display(),
        vswitch = %args.socket.display(),
        "serving Docker"
    );
    let driver = Arc::new(Driver::new(Socket(args.socket)));
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            let (server, driver, shutdown) = (
                Arc::clone(&server),
                Arc::clone(&driver),
                Arc::clone(&shutdown),
            );
            std::thread::Builder::new()
                .name(format!("docker-plugin-{i}"))
                .spawn(move || serve(&server, &driver, &shutdown))
        })
        .collect::<std::io::Result<_>>()
        .context("starting the workers")?;
    for w in workers {
        let _ = w.join();
    }
    // Docker would keep finding a dead socket: it goes with us.
    let _ = std::fs::remove_file(&args.plugin_socket);
    tracing::info!("stopped");
    Ok(())
}

/// Binds the plugin socket, replacing a stale one (no live plugin answers on it).
fn listen(path: &Path) -> Result<tiny_http::Server> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!(
            "a plugin already serves {}: stop it, or give another --plugin-socket",
            path.display()
        );
    }
    let _ = std::fs::remove_file(path);
    tiny_http::Server::http_unix(path)
        .map_err(|e| anyhow::anyhow!("listening on {}: {e}", path.display()))
}

fn serve(server: &tiny_http::Server, driver: &Driver<Socket>, shutdown: &AtomicBool) {
    while !shutdown.load(Ordering::Relaxed) {
        let mut req = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("accepting a request: {e}");
                // A lasting failure must not spin a core (nor flood the log).
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let started = Instant::now();
        let method = req.url().trim_start_matches('/').to_string();
        let mut body = Vec::new();
        // One byte past the limit tells a body that is too long from one that fits exactly.
        let read = req.as_reader().take(MAX_BODY + 1).read_to_end(&mut body);
        let (status, answer) = match read {
            Err(e) => (
                400,
                serde_json::json!({ "Err": format!("reading the body: {e}") }),
            ),
            Ok(n) if n as u64 > MAX_BODY => (
                413,
                serde_json::json!({ "Err": format!("{method}: the body is over {MAX_BODY} bytes") }),
            ),
            Ok(_) => {
                tracing::debug!(method, body = %String::from_utf8_lossy(&body), "request");
                answer(driver.handle(&method, &body), &method)
            }
        };
        // How long the driver took (daemon calls included): the plugin's share of an attach.
        let elapsed_us = started.elapsed().as_micros();
        tracing::debug!(method, status, elapsed_us, %answer, "answer");
        let mut response =
            tiny_http::Response::from_string(answer.to_string()).with_status_code(status);
        if let Some(h) = content_type() {
            response = response.with_header(h);
        }
        if let Err(e) = req.respond(response) {
            tracing::warn!(method, "answering: {e}");
        }
    }
}

/// The HTTP status and body for a handler's outcome: errors are `{"Err": "..."}`, which
/// Docker shows to the user.
fn answer(
    result: Result<serde_json::Value, DriverError>,
    method: &str,
) -> (u16, serde_json::Value) {
    match result {
        Ok(v) => (200, v),
        Err(e) => {
            tracing::warn!(method, "{e}");
            let status = if matches!(e, DriverError::Unknown(_)) {
                404
            } else {
                500
            };
            (status, serde_json::json!({ "Err": e.to_string() }))
        }
    }
}

fn content_type() -> Option<tiny_http::Header> {
    tiny_http::Header::from_bytes(
        &b"Content-Type"[..],
        &b"application/vnd.docker.plugins.v1.2+json"[..],
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_answer_err_with_a_status() {
        let (status, body) = answer(Ok(serde_json::json!({})), "m");
        assert_eq!((status, body), (200, serde_json::json!({})));
        let (status, body) = answer(Err(DriverError::Unknown("NetworkDriver.X".into())), "m");
        assert_eq!(status, 404);
        assert!(
            body["Err"]
                .as_str()
                .is_some_and(|e| e.contains("not implemented"))
        );
        let (status, body) = answer(Err(DriverError::Invalid("give a host port".into())), "m");
        assert_eq!(
            (status, body),
            (500, serde_json::json!({"Err": "give a host port"}))
        );
    }
}
