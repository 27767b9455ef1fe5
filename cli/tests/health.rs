//! Health: `vswitch status` reports every packet loop alive, and a loop that dies (a panic,
//! injected) stops the daemon with a non-zero exit status and the reason in its log, for a
//! supervisor to restart it. The lab's guarantees are in e2e.rs.

#![allow(clippy::unwrap_used)]

mod lab;

use lab::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// One raw request line; the daemon's answer line.
fn raw(lab: &Lab, line: &str) -> String {
    let mut s = UnixStream::connect(lab.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = BufReader::new(&s).read_line(&mut answer);
    answer
}

#[test]
fn status_shows_the_loops_and_a_dead_loop_stops_the_daemon_non_zero() {
    if skip() {
        return;
    }
    let mut lab = Lab::with_daemon_args("", &["--fault-injection"]);
    let c1 = lab.container("c1", "bridge", "172.17.0.2");
    let status = lab.json(&["status"]);
    let loops = status["health"]["loops"].as_array().unwrap();
    assert_eq!(loops.len(), 2, "{status}");
    assert!(loops.iter().all(|l| l["alive"] == true), "{status}");
    assert!(
        lab.cli(&["status"])
            .contains("health: loop0 alive, loop1 alive"),
        "{}",
        lab.cli(&["status"])
    );
    let bad = raw(&lab, "{\"cmd\":\"fault_inject\",\"action\":\"explode\"}\n");
    assert!(bad.contains("unknown fault"), "{bad}");
    lab.exec_ok(&c1, &["ping", "-c", "1", "-W", "2", "172.17.0.1"]);

    raw(
        &lab,
        "{\"cmd\":\"fault_inject\",\"action\":\"panic_loop\",\"worker\":1}\n",
    );
    let mut daemon = lab.daemon.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = daemon.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = daemon.kill();
            panic!(
                "the daemon kept running with a dead loop:\n{}",
                lab.daemon_log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = lab.daemon_log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("packet loop died"), "{log}");
    assert!(
        log.contains("packet loop 1 panicked: fault injection: panic_loop"),
        "{log}"
    );
    // It stopped as on SIGTERM: the container's link is gone with it.
    let links = lab.exec(&lab.ns("sw"), &["ip", "-o", "link", "show"]);
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains("vsw3"), "{links}");
}
