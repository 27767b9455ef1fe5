//! `vswitch events` end to end: a container attached, a curl through NAT giving new → assured
//! → destroyed with its counts, the per-source limit hit, the container detached; in JSON and
//! as lines. The lab's guarantees are in e2e.rs.

#![allow(clippy::unwrap_used)]

mod lab;

use lab::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `vswitch events` in the background writing to a file, killed when the test ends.
struct Events(Child);

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn events_json(path: &std::path::Path) -> Vec<serde_json::Value> {
    // A line still being written is left for the next read.
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_curl_gives_new_assured_destroyed_with_counts_between_attach_and_detach() {
    if skip() {
        return;
    }
    let mut lab = Lab::new("\n[conntrack]\ntcp_time_wait_secs = 1\nmax_per_source = 3\n");
    let inet = lab.ns("inet");
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    lab.http_server(&inet, 8000, &www);
    let log = lab.dir.join("events.jsonl");
    let _json = Events(
        Command::new(BIN)
            .args(["events", "--json", "--socket"])
            .arg(lab.socket())
            .stdout(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let text = Command::new(BIN)
        .args(["events", "--type", "container", "-c", "2", "--socket"])
        .arg(lab.socket())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let five = Command::new(BIN)
        .args(["events", "-c", "5", "--socket"])
        .arg(lab.socket())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let joined = testkit::lab::wait_until(Duration::from_secs(10), || {
        lab.daemon_log().matches("events subscriber joined").count() >= 3
    });
    assert!(joined, "{}", lab.daemon_log());

    let c1 = lab.container("c1", "bridge", "172.17.0.2");
    assert_eq!(
        lab.curl(&c1, &format!("http://{INET_IP}:8000/whoami")),
        UPLINK_IP
    );
    // TIME_WAIT lasts 1 s here: the entry is destroyed soon after.
    let is_8000 = |e: &serde_json::Value| {
        e["type"] == "conntrack" && e["entry"]["original"]["dst_port"] == 8000
    };
    let destroyed = testkit::lab::wait_until(Duration::from_secs(10), || {
        events_json(&log)
            .iter()
            .any(|e| is_8000(e) && e["event"] == "destroyed")
    });
    assert!(destroyed, "{:#?}", events_json(&log));
    // Four UDP flows from c1 with max_per_source = 3: the limit is hit (reported each second).
    for port in 7001..=7004 {
        lab.exec_ok(
            &c1,
            &["bash", "-c", &format!("echo x > /dev/udp/{INET_IP}/{port}")],
        );
    }
    let limited = testkit::lab::wait_until(Duration::from_secs(5), || {
        events_json(&log)
            .iter()
            .any(|e| e["type"] == "limit" && e["reason"] == "ct_source_limit")
    });
    lab.cli(&["network", "disconnect", "bridge", "c1"]);
    let detached = testkit::lab::wait_until(Duration::from_secs(5), || {
        events_json(&log)
            .iter()
            .any(|e| e["type"] == "container" && e["action"] == "detach")
    });
    let all = events_json(&log);
    assert!(limited, "{all:#?}");
    assert!(detached, "{all:#?}");

    // The order: attach, port up, new, assured, destroyed (with counts both ways), detach.
    let pos = |f: &dyn Fn(&serde_json::Value) -> bool| all.iter().position(f).unwrap();
    let attach = pos(&|e| e["type"] == "container" && e["action"] == "attach" && e["name"] == "c1");
    let up = pos(&|e| e["type"] == "port" && e["action"] == "up");
    let new = pos(&|e| is_8000(e) && e["event"] == "new");
    let assured = pos(&|e| is_8000(e) && e["event"] == "assured");
    let gone = pos(&|e| is_8000(e) && e["event"] == "destroyed");
    let detach = pos(&|e| e["type"] == "container" && e["action"] == "detach");
    assert!(
        attach < up && up < new && new < assured && assured < gone && gone < detach,
        "{all:#?}"
    );
    let entry = &all[gone]["entry"];
    assert_eq!(entry["reply"]["dst"], UPLINK_IP, "masqueraded: {entry}");
    assert_eq!(entry["state"]["state"], "TIME_WAIT", "{entry}");
    for dir in 0..2 {
        assert!(entry["packets"][dir].as_u64().unwrap() >= 4, "{entry}");
        assert!(entry["bytes"][dir].as_u64().unwrap() > 200, "{entry}");
    }
    assert!(
        all.iter().all(|e| e["time"].as_f64().unwrap() > 1.7e9),
        "stamped"
    );

    // The text reader took the two container events and ended by itself.
    let out = text.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].ends_with("container attach c1 (network bridge, 172.17.0.2, port vsw3)"),
        "{lines:?}"
    );
    assert!(lines[1].contains("container detach c1"), "{lines:?}");

    // Five lines of everything: the attach, the port, and the curl's flow (printed for the
    // README).
    let out = five.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    let tags: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        tags,
        ["container", "port", "[NEW]", "[UPDATE]", "[DESTROY]"],
        "{text}"
    );
}
