//! Shared by the plugin's end-to-end tests: running `vswitch-cni` as a runtime does (inside
//! the lab's stand-in host, where the daemon and the switch's ends of the veth pairs live),
//! container namespaces removed on drop, and bounded HTTP probes from the lab's internet.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use testkit::runtime_host::RuntimeHost;

/// The plugin binary.
pub fn plugin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vswitch-cni"))
}

/// What one invocation printed and how it exited.
#[derive(Debug)]
pub struct Answer {
    /// Exit status success.
    pub ok: bool,
    /// stdout as JSON (Null when empty).
    pub json: Value,
    /// stderr, for messages.
    pub stderr: String,
}

/// Runs the plugin in `lab`'s host with `env` and `stdin`.
pub fn cni(lab: &RuntimeHost, env: &[(&str, &str)], stdin: &str) -> Answer {
    let mut cmd = lab.in_host(&[]);
    cmd.arg(plugin()).env_remove("CNI_ARGS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run the plugin: {e}"));
    if let Some(mut i) = child.stdin.take() {
        use std::io::Write;
        let _ = i.write_all(stdin.as_bytes());
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for the plugin: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let json = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout not JSON ({e}): {text}"))
    };
    Answer {
        ok: out.status.success(),
        json,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Named network namespaces (`ip netns add`), deleted on drop.
#[derive(Debug, Default)]
pub struct Namespaces(Vec<String>);

impl Namespaces {
    /// Adds namespace `name` (with `lo` up); its path.
    pub fn add(&mut self, name: &str) -> String {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        testkit::lab::ok(Command::new("ip").args(["netns", "add", name]));
        testkit::lab::ok(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]));
        self.0.push(name.to_string());
        format!("/run/netns/{name}")
    }

    /// Deletes namespace `name` now.
    pub fn del(&mut self, name: &str) {
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        self.0.retain(|n| n != name);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `curl` from the lab's internet namespace to `url` (5 s at most); the body when it answers.
pub fn fetch_from_inet(lab: &RuntimeHost, url: &str) -> Option<String> {
    let out = lab
        .in_inet(&["curl", "-sS", "--max-time", "5", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`fetch_from_inet`] tried again for up to `timeout` (a port that is published a moment
/// before it answers); the body once it answers.
pub fn fetch_from_inet_within(
    lab: &RuntimeHost,
    url: &str,
    timeout: std::time::Duration,
) -> Option<String> {
    let mut body = None;
    testkit::lab::wait_until(timeout, || {
        body = fetch_from_inet(lab, url);
        body.is_some()
    });
    body
}

/// The vswitch CLI binary.
pub fn vswitch_bin() -> PathBuf {
    testkit::lab::workspace_bin("vswitch")
}

/// A web root under `dir` holding `index.html` with `body`.
pub fn web_root(dir: &Path, name: &str, body: &str) -> PathBuf {
    let root = dir.join(name);
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    std::fs::write(root.join("index.html"), body).unwrap_or_else(|e| panic!("{e}"));
    root
}
