//! Whether the daemon's parts are alive: each packet loop, the rootless helper and the socket
//! gateway (`vswitch status` shows it). A packet loop that ends on its own (an error, a panic)
//! stops the daemon, which then exits non-zero so that a supervisor (systemd's
//! `Restart=on-failure`) starts it again: half a switch is worse than a restart.

use crate::state::Daemon;
use datapath::engine::Engine;
use serde_json::{Value, json};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

/// One packet loop's fate: unset while it runs (or after it stopped when asked).
#[derive(Debug, Default)]
pub(crate) struct LoopHealth {
    died: OnceLock<String>,
}

impl LoopHealth {
    /// Why the loop died, if it did.
    pub(crate) fn died(&self) -> Option<&str> {
        self.died.get().map(String::as_str)
    }
}

/// The loops' threads and their health, by worker.
pub(crate) type Loops = (Vec<JoinHandle<()>>, Vec<Arc<LoopHealth>>);

/// Starts one thread per engine. A loop that dies records why and sets `shutdown`.
pub(crate) fn spawn_loops(
    engines: Vec<Engine>,
    shutdown: &Arc<AtomicBool>,
) -> std::io::Result<Loops> {
    let mut threads = Vec::with_capacity(engines.len());
    let mut health = Vec::with_capacity(engines.len());
    for (worker, mut engine) in engines.into_iter().enumerate() {
        let h = Arc::new(LoopHealth::default());
        let (mine, stop) = (Arc::clone(&h), Arc::clone(shutdown));
        let thread = std::thread::Builder::new()
            .name(format!("vswitch-loop{worker}"))
            .spawn(move || {
                let ended = std::panic::catch_unwind(AssertUnwindSafe(|| engine.run()));
                let reason = match ended {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => format!("ended with an error: {e}"),
                    Err(panic) => format!("panicked: {}", panic_text(panic.as_ref())),
                };
                tracing::error!(
                    worker,
                    %reason,
                    "packet loop died: the daemon stops and exits with status 1"
                );
                let _ = mine.died.set(reason);
                stop.store(true, Ordering::Relaxed);
            })?;
        threads.push(thread);
        health.push(h);
    }
    Ok((threads, health))
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// The first dead loop and why, if any.
pub(crate) fn dead_loop(d: &Daemon) -> Option<(usize, String)> {
    d.loops
        .iter()
        .enumerate()
        .find_map(|(i, h)| h.died().map(|r| (i, r.to_string())))
}

fn part(alive: Result<(), String>) -> Value {
    match alive {
        Ok(()) => json!({ "alive": true }),
        Err(reason) => json!({ "alive": false, "reason": reason }),
    }
}

/// `status`'s `health`: every loop, and the rootless helper and socket gateway where they run.
pub(crate) fn report(d: &Daemon) -> Value {
    let loops: Vec<Value> = d
        .loops
        .iter()
        .enumerate()
        .map(|(worker, h)| {
            let mut v = part(h.died().map_or(Ok(()), |r| Err(r.to_string())));
            v["worker"] = json!(worker);
            v
        })
        .collect();
    let mut v = json!({ "loops": loops });
    if let Some(helper) = &d.rootless {
        v["rootless_helper"] = part(helper.health());
    }
    if let Some(g) = &d.gateway {
        v["socket_gateway"] = part(g.health());
    }
    v
}
