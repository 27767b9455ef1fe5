//! `vswitch capture` end to end: frames captured on a container's port and on the uplink, read
//! back by tcpdump and tshark (untranslated on one side, NAT-ed on the other), a filter, a pipe
//! into `tcpdump -r -`, and a client that stops reading while the switch carries a download.
//! The lab's guarantees are in e2e.rs.

#![allow(clippy::unwrap_used)]

mod lab;

use lab::*;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `vswitch capture` running in the background, killed if the test fails before it ends.
struct Capture(Option<Child>);

impl Capture {
    fn start(lab: &Lab, args: &[&str]) -> Capture {
        let child = Command::new(BIN)
            .arg("capture")
            .args(args)
            .arg("--socket")
            .arg(lab.socket())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Capture(Some(child))
    }

    /// Ends it as Ctrl-C does and returns what it printed on stderr.
    fn interrupt(mut self) -> String {
        let child = self.0.take().unwrap();
        ok(Command::new("kill").args(["-INT", &child.id().to_string()]));
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "capture failed: {err}");
        err
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until the daemon logged `n` captures started (the tap is in the loops then).
fn wait_started(lab: &Lab, n: usize) {
    let started = testkit::lab::wait_until(Duration::from_secs(10), || {
        lab.daemon_log().matches("capture started").count() >= n
    });
    assert!(started, "capture did not start:\n{}", lab.daemon_log());
}

fn tcpdump(file: &Path) -> String {
    let out = run(Command::new("tcpdump").args(["-nn", "-r"]).arg(file));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ping_and_curl_captured_on_the_container_port_and_the_uplink() {
    if skip() {
        return;
    }
    let mut lab = Lab::new("");
    let inet = lab.ns("inet");
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    lab.http_server(&inet, 8000, &www);
    let c1 = lab.container("c1", "bridge", "172.17.0.2");
    let on_c1 = lab.dir.join("c1.pcapng");
    let on_up = lab.dir.join("up0.pcap");
    let only_tcp = lab.dir.join("tcp.pcapng");
    let cap_c1 = Capture::start(&lab, &["c1", "-w", on_c1.to_str().unwrap()]);
    let cap_up = Capture::start(
        &lab,
        &["up0", "-w", on_up.to_str().unwrap(), "--format", "pcap"],
    );
    let cap_tcp = Capture::start(
        &lab,
        &[
            "bridge",
            "-w",
            only_tcp.to_str().unwrap(),
            "tcp",
            "port",
            "8000",
        ],
    );
    wait_started(&lab, 3);
    lab.exec_ok(&c1, &["ping", "-c", "2", "-i", "0.2", "-W", "2", INET_IP]);
    assert_eq!(
        lab.curl(&c1, &format!("http://{INET_IP}:8000/whoami")),
        UPLINK_IP,
        "masqueraded"
    );
    // A moment for the last frames to reach the files.
    std::thread::sleep(Duration::from_millis(300));
    let err = cap_c1.interrupt();
    assert!(err.contains("frames written"), "{err}");
    cap_up.interrupt();
    cap_tcp.interrupt();

    // The container's side, untranslated; the uplink's side, after NAT.
    let c1_text = tcpdump(&on_c1);
    assert!(
        c1_text.contains(&format!("172.17.0.2 > {INET_IP}: ICMP echo request")),
        "{c1_text}"
    );
    assert!(
        c1_text.contains(&format!("{INET_IP} > 172.17.0.2: ICMP echo reply")),
        "{c1_text}"
    );
    assert!(
        c1_text.contains(&format!("> {INET_IP}.8000: Flags [S]")),
        "{c1_text}"
    );
    let up_text = tcpdump(&on_up);
    eprintln!("tcpdump -nn -r up0.pcap:\n{up_text}");
    assert!(
        up_text.contains(&format!("{UPLINK_IP} > {INET_IP}: ICMP echo request")),
        "{up_text}"
    );
    assert!(
        up_text.contains(&format!("{INET_IP}.8000 > {UPLINK_IP}.")),
        "{up_text}"
    );
    assert!(!up_text.contains("172.17.0.2"), "{up_text}");
    // The filter kept TCP port 8000 only, on the network's ports.
    let tcp_text = tcpdump(&only_tcp);
    assert!(tcp_text.contains(".8000"), "{tcp_text}");
    assert!(!tcp_text.contains("ICMP"), "{tcp_text}");

    // pcapng names the port and each frame's direction (tshark reads the blocks).
    let out = run(Command::new("tshark")
        .args(["-r"])
        .arg(&on_c1)
        .args(["-Y", "icmp", "-T", "fields"])
        .args([
            "-e",
            "frame.interface_name",
            "-e",
            "frame.packet_flags_direction",
        ])
        .args(["-e", "icmp.type"]));
    let fields = String::from_utf8_lossy(&out.stdout);
    let port = lab.json(&["status"])["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "c1")
        .unwrap()["port"]
        .as_str()
        .unwrap()
        .to_string();
    // Direction 1 is inbound (the container sent it to the switch), 2 outbound.
    let lines: Vec<&str> = fields.lines().collect();
    assert!(
        lines.contains(&format!("{port}\t0x00000001\t8").as_str()),
        "{fields}"
    );
    assert!(
        lines.contains(&format!("{port}\t0x00000002\t0").as_str()),
        "{fields}"
    );

    // One line per frame without -w; printed for the README.
    let lines = Command::new(BIN)
        .args(["capture", "c1", "-c", "4", "--socket"])
        .arg(lab.socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_started(&lab, 4);
    lab.exec_ok(&c1, &["ping", "-c", "2", "-i", "0.2", "-W", "2", INET_IP]);
    let out = lines.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}{text}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(
        text.contains(&format!(
            " In  IP 172.17.0.2 > {INET_IP}: ICMP echo request"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(" Out IP {INET_IP} > 172.17.0.2: ICMP echo reply")),
        "{text}"
    );

    // `-w -` into `tcpdump -r -`, ending itself after two frames.
    let mut pipe = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{BIN} capture c1 -c 2 -w - --socket {} icmp | tcpdump -nn -r -",
            lab.socket().display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_started(&lab, 5);
    lab.exec_ok(&c1, &["ping", "-c", "1", "-W", "2", INET_IP]);
    let done = testkit::lab::wait_until(Duration::from_secs(10), || {
        matches!(pipe.try_wait(), Ok(Some(_)))
    });
    if !done {
        let _ = pipe.kill();
    }
    let out = pipe.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(done, "the capture did not end after -c 2: {text}");
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains("ICMP echo request") && text.contains("ICMP echo reply"),
        "{text}"
    );
}

#[test]
fn bad_targets_and_filters_are_refused_and_a_stalled_reader_does_not_stall_the_switch() {
    if skip() {
        return;
    }
    let mut lab = Lab::new("");
    let c1 = lab.container("c1", "bridge", "172.17.0.2");
    let c2 = lab.container("c2", "bridge", "172.17.0.3");
    for (args, says) in [
        (&["nosuch"][..], "nothing named \"nosuch\""),
        (
            &["c1", "--filter", "tcp port eighty"][..],
            "bad capture filter",
        ),
        (
            &["c1", "--direction", "sideways"][..],
            "give in, out or both",
        ),
    ] {
        let out = run(Command::new(BIN)
            .arg("capture")
            .args(args)
            .arg("--socket")
            .arg(lab.socket()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }

    // A client that asks for everything on the network and never reads.
    let mut stalled = UnixStream::connect(lab.socket()).unwrap();
    stalled
        .write_all(b"{\"cmd\":\"capture\",\"target\":\"bridge\"}\n")
        .unwrap();
    wait_started(&lab, 1);
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    ok(Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=40", "status=none"])
        .arg(format!("of={}", www.join("big.bin").display())));
    lab.http_server(&c2, 8000, &www);
    lab.download_checked(
        &c1,
        "http://172.17.0.3:8000/big.bin",
        &www.join("big.bin"),
        "40 MB with a stalled capture",
    );
    lab.exec_ok(
        &c1,
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "172.17.0.3"],
    );
    // Gone: the daemon removes the tap and says what the queue dropped.
    drop(stalled);
    let ended = testkit::lab::wait_until(Duration::from_secs(10), || {
        lab.daemon_log().contains("capture ended")
    });
    let log = lab.daemon_log();
    assert!(ended, "{log}");
    let dropped: u64 = log
        .lines()
        .find(|l| l.contains("capture ended"))
        .and_then(|l| l.split("dropped=").nth(1))
        .and_then(|d| d.split_whitespace().next())
        .and_then(|d| d.parse().ok())
        .unwrap();
    assert!(dropped > 0, "the full queue dropped, not the switch: {log}");
}
