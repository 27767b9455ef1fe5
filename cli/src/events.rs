//! `vswitch events`: the daemon's event stream (conntrack, containers, ports, limits), one
//! line per event as `conntrack -E` and `docker events` print them, or the daemon's JSON.

use anyhow::{Context, Result, bail};
use control::{Request, client::call_streaming};
use serde_json::Value;
use std::io::BufRead;
use std::time::{Duration, Instant};

/// Kinds of event `--type` takes.
const KINDS: [&str; 5] = ["conntrack", "container", "port", "limit", "lost"];

/// `vswitch events`'s arguments.
#[derive(clap::Args)]
pub struct EventsArgs {
    /// Only these kinds (repeat or separate with commas): conntrack, container, port, limit.
    #[arg(long = "type", value_delimiter = ',')]
    kinds: Vec<String>,
    /// Stop after this many events.
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    #[command(flatten)]
    client: crate::ClientArgs,
}

/// One line for an event, in the manner of `conntrack -E` and `docker events`.
pub fn line(e: &Value) -> String {
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let time = e["time"].as_f64().map_or_else(String::new, |t| {
        crate::capture::clock(Duration::from_secs_f64(t.max(0.0)))
    });
    let body = match e["type"].as_str() {
        Some("conntrack") => {
            let entry = &e["entry"];
            let tag = match e["event"].as_str() {
                Some("new") => "[NEW]",
                Some("assured") => "[UPDATE]",
                Some("destroyed") => "[DESTROY]",
                _ => "[?]",
            };
            let mut l = format!("{tag:<9} {}", crate::table::conntrack_line(entry, None));
            if e["event"] == "destroyed" {
                let n = |k: &str, i: usize| entry[k][i].as_u64().unwrap_or(0);
                l.push_str(&format!(
                    " packets={} bytes={} | packets={} bytes={}",
                    n("packets", 0),
                    n("bytes", 0),
                    n("packets", 1),
                    n("bytes", 1)
                ));
            }
            l
        }
        Some("container") => format!(
            "container {} {} (network {}, {}, port {})",
            s(&e["action"]),
            s(&e["name"]),
            s(&e["network"]),
            s(&e["ip"]),
            s(&e["port"])
        ),
        Some("port") => format!(
            "port {} {} (network {})",
            s(&e["port"]),
            s(&e["action"]),
            s(&e["network"])
        ),
        Some("limit") => format!(
            "limit {} hit on {}: {} drops in the last second",
            s(&e["reason"]),
            s(&e["port"]),
            s(&e["count"])
        ),
        Some("lost") => format!(
            "lost {} events (this reader, or a packet loop, fell behind)",
            s(&e["count"])
        ),
        _ => e.to_string(),
    };
    format!("{time} {body}")
}

/// Streams events until the count, the duration, Ctrl-C or the daemon ends it.
pub fn run(args: EventsArgs) -> Result<()> {
    if let Some(bad) = args.kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
        bail!("unknown event type {bad:?}: give {}", KINDS.join(", "));
    }
    let (_, reader) = call_streaming(&args.client.socket, &Request::Events)?;
    // Lines are read on their own thread, so that the duration can end the stream at any time.
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<String>>(1024);
    std::thread::spawn(move || {
        for line in reader.lines() {
            let last = line.is_err();
            if tx.send(line).is_err() || last {
                return;
            }
        }
    });
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut shown = 0u64;
    while args.count.is_none_or(|c| shown < c) {
        let wait = deadline.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        if wait.is_zero() {
            break;
        }
        let text = match rx.recv_timeout(wait) {
            Ok(line) => line.context("reading the daemon's events")?,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                bail!("the daemon closed the event stream (it stopped?)")
            }
        };
        let Ok(event) = serde_json::from_str::<Value>(&text) else {
            bail!("the daemon sent an event that is not JSON: {text:?}");
        };
        let kind = event["type"].as_str().unwrap_or("");
        if !args.kinds.is_empty() && !args.kinds.iter().any(|k| k == kind) {
            continue;
        }
        if args.client.json {
            println!("{text}");
        } else {
            println!("{}", line(&event));
        }
        shown += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_read_like_conntrack_and_docker_events() {
        let entry = json!({
            "original": {"proto": "tcp", "src": "172.17.0.2", "dst": "203.0.113.1", "src_port": 40000, "dst_port": 80},
            "reply": {"proto": "tcp", "src": "203.0.113.1", "dst": "203.0.113.2", "src_port": 80, "dst_port": 40000},
            "state": {"proto": "tcp", "state": "TIME_WAIT"},
            "assured": true,
            "packets": [6, 4],
            "bytes": [400, 3000],
        });
        let l = line(
            &json!({"type": "conntrack", "event": "destroyed", "entry": entry, "time": 3723.5}),
        );
        assert!(l.starts_with("01:02:03.500000 [DESTROY]"), "{l}");
        assert!(
            l.ends_with("packets=6 bytes=400 | packets=4 bytes=3000"),
            "{l}"
        );
        let l = line(
            &json!({"type": "container", "action": "attach", "name": "c1", "network": "bridge", "ip": "172.17.0.2", "port": "vsw3"}),
        );
        assert!(
            l.ends_with("container attach c1 (network bridge, 172.17.0.2, port vsw3)"),
            "{l}"
        );
        let l =
            line(&json!({"type": "limit", "reason": "ct_table_full", "port": "vsw3", "count": 7}));
        assert!(
            l.contains("limit ct_table_full hit on vsw3: 7 drops"),
            "{l}"
        );
    }
}
