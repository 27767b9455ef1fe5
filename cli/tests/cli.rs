//! The `vswitch` binary without a daemon: replay through the CLI reproduces a golden scenario
//! byte for byte, bad arguments fail with a one-line reason, completions are generated.

#![allow(clippy::unwrap_used)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_vswitch");

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcap-fixtures")
}

#[test]
fn replay_scenario_reproduces_expected_pcaps() {
    let out_dir = std::env::temp_dir().join(format!("vswitch-cli-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    for scenario in ["two-hosts-learn", "snat-tcp"] {
        let dir = fixtures().join(scenario);
        let out = Command::new(BIN)
            .arg("replay")
            .arg("--scenario")
            .arg(&dir)
            .arg("--out-dir")
            .arg(&out_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("replayed"), "{text}");
        for entry in std::fs::read_dir(dir.join("expected")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap();
            assert_eq!(
                std::fs::read(&path).unwrap(),
                std::fs::read(out_dir.join(name)).unwrap(),
                "{scenario}: {name:?} differs"
            );
        }
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out_dir.join("summary.json")).unwrap()).unwrap();
        assert!(summary["frames_in"].as_u64().unwrap() > 0);
        std::fs::remove_dir_all(&out_dir).unwrap();
    }
}

#[test]
fn bad_input_fails_with_a_reason() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "replay",
                "--config",
                "/nonexistent.toml",
                "--in",
                "a=b.pcap",
                "--out-dir",
                "/tmp/x",
            ],
            "cannot read topology",
        ),
        (
            &[
                "replay",
                "--scenario",
                "/nonexistent",
                "--out-dir",
                "/tmp/x",
            ],
            "in/ folder",
        ),
        (
            &["network", "create", "x", "--subnet", "300.1.2.3/16"],
            "invalid value",
        ),
        (
            &[
                "port",
                "publish",
                "net",
                "c",
                "80",
                "--socket",
                "/nonexistent.sock",
            ],
            "HOSTPORT[-LAST]:CONTAINERPORT",
        ),
        (
            &[
                "port",
                "publish",
                "net",
                "c",
                "80:90/sctp",
                "--socket",
                "/nonexistent.sock",
            ],
            "tcp or udp",
        ),
        (
            &["status", "--socket", "/nonexistent.sock"],
            "is `vswitch daemon` running",
        ),
    ];
    for (args, want) in cases {
        let out = Command::new(BIN).args(*args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // A topology the parser rejects names the problem.
    let dir = std::env::temp_dir().join(format!("vswitch-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("in")).unwrap();
    std::fs::write(
        dir.join("topo.toml"),
        "[[port]]\nname = 'a'\nkind = 'pcap'\nnetwork = 'missing'\n",
    )
    .unwrap();
    std::fs::write(dir.join("in/a.pcap"), b"").unwrap();
    let out = Command::new(BIN)
        .arg("replay")
        .arg("--scenario")
        .arg(&dir)
        .args(["--out-dir", "/tmp/vswitch-cli-bad-out"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown network \"missing\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn completions_are_generated() {
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("_vswitch") && text.contains("conntrack"),
        "{}",
        &text[..200.min(text.len())]
    );
}
