//! `vswitch top` against a real daemon while iperf3 runs: the interactive screen in a tmux pane
//! (read back with `capture-pane`, quit with `q`), and `--once` in plain text and JSON.
//!
//! The lab of e2e.rs (namespaces with a unique prefix, removed on drop). The iperf3 server is
//! in the lab's "internet": a container's connection out is masqueraded, so conntrack tracks
//! it and top can rate it (traffic between containers of one network is switched at L2, with
//! no conntrack entry). The tmux server has a socket of its own in the lab's directory, killed
//! by a guard whatever happens. Needs root and tmux; skipped when not root.

#![allow(clippy::unwrap_used)]

#[allow(unused_imports)]
mod lab;

use lab::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// A private tmux server (its socket in the lab's directory), killed on drop.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        run(Command::new("tmux").arg("-S").arg(&self.socket).args(args))
    }

    fn has_session(&self, name: &str) -> bool {
        self.cmd(&["has-session", "-t", name]).status.success()
    }

    fn capture(&self, name: &str) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", name]).stdout).into_owned()
    }
}

/// Where a `vswitch top` in a pane leaves its exit status and `stty -a` after it.
struct Exit {
    session: String,
    status: std::path::PathBuf,
    stty: std::path::PathBuf,
}

impl Tmux {
    /// Starts `vswitch top` in a new 160x50 session.
    fn start(&self, session: &str, socket: &std::path::Path, files: &std::path::Path) -> Exit {
        let exit = Exit {
            session: session.to_string(),
            status: files.with_extension("exit"),
            stty: files.with_extension("stty"),
        };
        let shell = format!(
            "{BIN} top --socket {}; s=$?; stty -a > {}; echo $s > {}",
            socket.display(),
            exit.stty.display(),
            exit.status.display()
        );
        let out = self.cmd(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "160",
            "-y",
            "50",
            &shell,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        exit
    }
}

impl Exit {
    /// vswitch top exited 0, left the terminal cooked (echo, canonical input), and its pane
    /// closed.
    fn assert_clean(&self, tmux: &Tmux) {
        let done = testkit::lab::wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&self.status).is_ok_and(|s| !s.trim().is_empty())
        });
        assert!(
            done,
            "vswitch top did not quit:\n{}",
            tmux.capture(&self.session)
        );
        let status = std::fs::read_to_string(&self.status).unwrap();
        assert_eq!(status.trim(), "0", "vswitch top exited with an error");
        let modes = std::fs::read_to_string(&self.stty).unwrap();
        let words: Vec<&str> = modes.split([' ', ';', '\n']).collect();
        for mode in ["icanon", "echo", "isig"] {
            assert!(words.contains(&mode), "terminal left in raw mode: {modes}");
        }
        assert!(
            testkit::lab::wait_until(Duration::from_secs(3), || !tmux.has_session(&self.session)),
            "the tmux session outlived vswitch top"
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// `3.42G` as 3.42e9 (the SI numbers top prints).
fn si_value(s: &str) -> Option<f64> {
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1e3),
        'M' => (&s[..s.len() - 1], 1e6),
        'G' => (&s[..s.len() - 1], 1e9),
        'T' => (&s[..s.len() - 1], 1e12),
        _ => (s, 1.0),
    };
    num.parse::<f64>().ok().map(|n| n * mult)
}

/// The bit rate of the first flow row to `dst` on a screen or in `--once` text: the row's
/// cells are PROTO SOURCE DESTINATION STATE CONTAINER pkt/s bit/s PACKETS BYTES.
fn flow_bits(screen: &str, dst: &str) -> Option<(f64, String)> {
    screen
        .lines()
        .filter(|l| l.contains(dst))
        .filter_map(|l| {
            let cells: Vec<&str> = l
                .split(|c: char| c.is_whitespace() || c == '│')
                .filter(|c| !c.is_empty())
                .collect();
            let at = cells.iter().position(|c| *c == dst)?;
            let bits = si_value(cells.get(at + 4)?)?;
            Some((bits, l.to_string()))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

#[test]
fn top_shows_the_container_and_its_flow_while_iperf3_runs() {
    if skip() {
        return;
    }
    assert!(
        Command::new("tmux").arg("-V").output().is_ok(),
        "tmux is missing: install it (scripts/setup.sh lists it for the tests)"
    );
    let started = Instant::now();
    let mut lab = Lab::new("");
    let c1 = lab.container("c1", "bridge", "172.17.0.2");
    lab.container("c2", "bridge", "172.17.0.3");
    let inet = lab.ns("inet");
    let dir = lab.dir.clone();
    lab.spawn(&inet, &dir, &["iperf3", "-s", "-p", "5201"]);
    let listening = testkit::lab::wait_until(Duration::from_secs(10), || {
        let out = lab.exec(&inet, &["ss", "-H", "-ltn", "sport = :5201"]);
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    });
    assert!(listening, "iperf3 -s did not start in {inet}");
    // Long enough for the screen and both --once runs below; bounded, and killed with the lab.
    lab.spawn(
        &c1,
        &dir,
        &["iperf3", "-c", INET_IP, "-p", "5201", "-t", "20"],
    );
    let dst = format!("{INET_IP}:5201");

    // The interactive screen in a 160x50 tmux pane; its exit status and the terminal's modes
    // after it land in files.
    let tmux = Tmux {
        socket: dir.join("tmux.sock"),
    };
    let session = format!("{}-top", lab.prefix);
    let exited = tmux.start(&session, &lab.socket(), &dir.join("top"));
    let mut screen = String::new();
    let shown = testkit::lab::wait_until(Duration::from_secs(8), || {
        screen = tmux.capture(&session);
        screen.contains("c1") && flow_bits(&screen, &dst).is_some_and(|(b, _)| b > 0.0)
    });
    assert!(
        shown,
        "the screen does not show c1 and a moving flow to {dst}:\n{screen}"
    );
    let (bits, row) = flow_bits(&screen, &dst).unwrap();
    eprintln!("vswitch top, flow row at {bits:.3e} bit/s:\n{row}");
    std::fs::write(dir.join("top-screen.txt"), &screen).unwrap();
    // For docs/: VSWITCH_TOP_SCREEN=FILE keeps the screen as text, and FILE.ansi with its
    // colours (scripts/screenshot.py draws that as a PNG).
    if let Ok(keep) = std::env::var("VSWITCH_TOP_SCREEN") {
        std::fs::write(&keep, &screen).unwrap();
        let ansi = tmux
            .cmd(&["capture-pane", "-p", "-e", "-t", &session])
            .stdout;
        std::fs::write(format!("{keep}.ansi"), ansi).unwrap();
    }
    // The container's own row (not only the flow's CONTAINER cell).
    assert!(
        screen.lines().any(|l| l.contains("c1")
            && l.contains("bridge")
            && l.contains("172.17.0.2")
            && !l.contains(":5201")),
        "no row for container c1:\n{screen}"
    );

    // s cycles the sort column (shown in the title line).
    tmux.cmd(&["send-keys", "-t", &session, "s"]);
    assert!(
        testkit::lab::wait_until(Duration::from_secs(3), || tmux
            .capture(&session)
            .contains("sorted by pkt/s")),
        "s did not change the order:\n{}",
        tmux.capture(&session)
    );
    // q quits, with status 0 and the terminal back in its normal mode, and the pane (so the
    // session) goes away.
    tmux.cmd(&["send-keys", "-t", &session, "q"]);
    exited.assert_clean(&tmux);
    // So does Ctrl-C (raw mode turns it into a key, not a signal).
    let again = format!("{}-top2", lab.prefix);
    let exited = tmux.start(&again, &lab.socket(), &dir.join("top2"));
    assert!(
        testkit::lab::wait_until(Duration::from_secs(5), || tmux
            .capture(&again)
            .contains("q quit")),
        "vswitch top did not draw:\n{}",
        tmux.capture(&again)
    );
    tmux.cmd(&["send-keys", "-t", &again, "C-c"]);
    exited.assert_clean(&tmux);

    // --once: one plain-text frame, no terminal codes, the same flow moving.
    let text = lab.cli(&["top", "--once", "--interval", "1"]);
    eprintln!("vswitch top --once:\n{text}");
    if let Ok(keep) = std::env::var("VSWITCH_TOP_ONCE") {
        std::fs::write(keep, &text).unwrap();
    }
    assert!(!text.contains('\x1b'), "control codes in --once: {text:?}");
    assert!(text.contains("c1") && text.contains("172.17.0.2"), "{text}");
    let (bits, _) = flow_bits(&text, &dst).unwrap_or_else(|| panic!("no flow to {dst}:\n{text}"));
    assert!(bits > 0.0, "{text}");
    // --once --json: the same numbers for scripts.
    let v = lab.json(&["top", "--once", "--interval", "0.5"]);
    let flow = v["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["dst"] == INET_IP && f["dst_port"] == 5201 && f["container"] == "c1")
        .unwrap_or_else(|| panic!("no flow to {dst} in {v:#}"));
    assert!(flow["bps"].as_f64().unwrap() > 0.0, "{flow}");
    let c1 = v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "c1")
        .unwrap();
    assert!(c1["rates"]["rx_bps"].as_f64().unwrap() > 0.0, "{c1}");
    assert!(v["conntrack"]["capacity"].as_u64().unwrap() > 0, "{v}");
    eprintln!("test took {:.1}s", started.elapsed().as_secs_f64());
}

#[test]
fn top_without_a_daemon_says_what_to_do() {
    // No daemon, no root needed: the error names the socket and `vswitch daemon`.
    let missing = std::env::temp_dir().join(format!("{}.sock", testkit::lab::unique("top")));
    let out = run(Command::new(BIN)
        .args(["top", "--once", "--interval", "0.1", "--socket"])
        .arg(&missing));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is `vswitch daemon` running"), "{err}");
    // Without a terminal (and without --once) top says to use --once, rather than garbling.
    let out = run(Command::new(BIN).args(["top", "--socket"]).arg(&missing));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--once"), "{err}");
}
