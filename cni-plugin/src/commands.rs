//! The CNI operations over the daemon's control protocol:
//!
//! - ADD: `connect` (the runtime's namespace and interface, the `ips`/`mac` asked for), then
//!   `port_publish` per port mapping (a failure disconnects again, dropping what was
//!   published), then the record and the result. A repeated ADD of an attachment that is still
//!   intact (same namespace, the daemon's check passes) answers the recorded result again.
//! - DEL: `disconnect` with `unpublish` and `missing_ok`, unless the daemon's container of that
//!   name now lives in another namespace (a newer container took the name): then only the
//!   record goes. Always succeeds when the daemon has nothing to remove.
//! - CHECK: `container_check`, the namespace, then `prevResult`'s MAC and address.
//! - STATUS: the daemon answers `status` and has the network; else code 50.
//! - GC: DEL for every recorded attachment not in `cni.dev/valid-attachments`.

use crate::config::{NetConf, PREFERRED_VERSION, Publish, SUPPORTED_VERSIONS, version_of};
use crate::env::{Command, Env, valid_id};
use crate::error::Error;
use crate::result::{self, Attached};
use crate::state::{Record, Store};
use control::Request;
use serde_json::{Value, json};
use std::path::PathBuf;

/// What the binary prints and how it exits.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The JSON for stdout (none: print nothing).
    pub stdout: Option<Value>,
    /// The exit status.
    pub status: i32,
}

/// Runs one invocation: the environment through `vars`, the configuration in `stdin`.
pub fn run(vars: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    let version = version_of(stdin)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| PREFERRED_VERSION.to_string());
    match dispatch(vars, stdin) {
        Ok(stdout) => Outcome { stdout, status: 0 },
        Err(e) => {
            eprintln!("vswitch-cni: {}: {e}", e.msg());
            Outcome {
                stdout: Some(e.to_json(&version)),
                status: 1,
            }
        }
    }
}

fn dispatch(vars: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Option<Value>, Error> {
    let env = Env::from_vars(vars)?;
    if env.command == Command::Version {
        let asked = version_of(stdin).filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()));
        return Ok(Some(json!({
            "cniVersion": asked.unwrap_or_else(|| PREFERRED_VERSION.to_string()),
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let conf = NetConf::parse(stdin)?;
    let daemon = Daemon {
        socket: conf.socket(),
    };
    match env.command {
        Command::Add => add(&env, &conf, &daemon).map(Some),
        Command::Del => del(&env, &conf, &daemon).map(|()| None),
        Command::Check => check(&env, &conf, &daemon).map(|()| None),
        Command::Status => status(&conf, &daemon).map(|()| None),
        Command::Gc => gc(&conf, &daemon).map(|()| None),
        Command::Version => Ok(None),
    }
}

/// The vswitch container name for an attachment: the runtime's container name
/// (`K8S_POD_NAME`, which Podman sets) when it is a valid vswitch name, else the container id
/// (its first 63 characters, a DNS label). The flag says whether it came from the id.
pub fn container_name(env: &Env) -> (String, bool) {
    if let Some(pod) = &env.args.pod_name {
        if valid_id(pod) && pod.len() <= 63 {
            return (pod.clone(), false);
        }
        eprintln!(
            "vswitch-cni: K8S_POD_NAME {pod:?} is not a vswitch container name: using the \
             container id"
        );
    }
    let id: String = env.container_id.chars().take(63).collect();
    (id, true)
}

/// The daemon at the configuration's socket.
struct Daemon {
    socket: PathBuf,
}

impl Daemon {
    fn call(&self, what: &str, req: &Request) -> Result<Value, Error> {
        control::call(&self.socket, req).map_err(|e| Error::from_call(what, e))
    }

    /// The daemon's container `name` on `network`, if connected.
    fn find(&self, network: &str, name: &str) -> Result<Option<Attached>, Error> {
        let status = self.call("status", &Request::Status)?;
        let containers = status
            .get("containers")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::BadAnswer("status has no containers".into()))?;
        let found = containers.iter().find(|c| {
            c.get("network").and_then(Value::as_str) == Some(network)
                && c.get("name").and_then(Value::as_str) == Some(name)
        });
        found.map(|c| attached(c.clone())).transpose()
    }

    /// Disconnects `name` (only when attached from `netns`, if given).
    fn disconnect(&self, network: &str, name: &str, netns: Option<&str>) -> Result<(), Error> {
        self.call(
            "disconnect",
            &Request::Disconnect {
                network: network.to_string(),
                name: name.to_string(),
                unpublish: true,
                missing_ok: true,
                netns: netns.map(str::to_string),
            },
        )
        .map(drop)
    }
}

fn attached(v: Value) -> Result<Attached, Error> {
    serde_json::from_value(v).map_err(|e| Error::BadAnswer(format!("a container: {e}")))
}

fn add(env: &Env, conf: &NetConf, daemon: &Daemon) -> Result<Value, Error> {
    let store = Store::new(&conf.data_dir(), &conf.name);
    let network = conf.network();
    if let Some(rec) = store.load(&env.container_id, &env.ifname)?
        && rec.netns == env.netns
        && rec.network == network
    {
        // SPEC: a runtime must not ADD twice without a DEL; when one does, an attachment that
        // is still as it was made is answered again rather than broken.
        let check = Request::ContainerCheck {
            network: network.to_string(),
            name: rec.name.clone(),
        };
        if let Ok(c) = daemon.call("container check", &check).and_then(attached)
            && c.netns == env.netns
        {
            return Ok(rec.result);
        }
    }
    let (name, _) = container_name(env);
    let ip = conf.requested_ip()?.or(env.args.ip);
    let mac = conf.requested_mac()?.or_else(|| env.args.mac.clone());
    let publishes = conf.publishes()?;
    let answer = daemon.call(
        "connect",
        &Request::Connect {
            network: network.to_string(),
            netns: Some(env.netns.clone()),
            name: Some(name.clone()),
            ifname: Some(env.ifname.clone()),
            ip,
            ip6: None,
            mac,
            peer_in_host: false,
        },
    )?;
    let rollback = |e: Error| -> Error {
        if let Err(undo) = daemon.disconnect(network, &name, Some(&env.netns)) {
            eprintln!("vswitch-cni: undoing the connect of {name:?} failed: {undo}");
        }
        e
    };
    let c = attached(answer).map_err(rollback)?;
    publish_all(daemon, network, &name, &publishes, conf.host_proxy).map_err(rollback)?;
    let result = result::build(
        &c,
        &conf.cni_version,
        host_mac(&c.port).as_deref(),
        conf.dns.as_ref(),
    );
    let rec = Record {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        network: network.to_string(),
        name: name.clone(),
        netns: env.netns.clone(),
        result: result.clone(),
    };
    store.save(&rec).map_err(rollback)?;
    Ok(result)
}

/// Publishes `ports` to container `name`; those the daemon already holds for it (kept from a
/// container of that name whose namespace went away without a DEL) are left as they are.
/// `host_proxy`: see [`crate::config::NetConf::host_proxy`].
fn publish_all(
    daemon: &Daemon,
    network: &str,
    name: &str,
    ports: &[Publish],
    host_proxy: bool,
) -> Result<(), Error> {
    if ports.is_empty() {
        return Ok(());
    }
    let existing = daemon.call("port ls", &Request::PortLs)?;
    let existing = existing.as_array().cloned().unwrap_or_default();
    for p in ports {
        let held = existing.iter().any(|row| {
            row.get("proto").and_then(Value::as_str) == Some(p.proto.as_str())
                && row.get("host_port").and_then(Value::as_u64) == Some(u64::from(p.host_port))
                && row.get("network").and_then(Value::as_str) == Some(network)
                && row.get("container").and_then(Value::as_str) == Some(name)
                && row.get("container_port").and_then(Value::as_u64)
                    == Some(u64::from(p.container_port))
                && row
                    .get("host_ip")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    == p.host_ip.map(|a| a.to_string())
        });
        if held {
            continue;
        }
        daemon.call(
            &format!("publishing {} port {}", p.proto, p.host_port),
            &Request::PortPublish {
                network: network.to_string(),
                container: name.to_string(),
                host_ip: p.host_ip,
                host_port: p.host_port,
                host_port_last: None,
                container_port: p.container_port,
                proto: p.proto.clone(),
                host_proxy,
            },
        )?;
    }
    Ok(())
}

/// The MAC of interface `ifname` in this process's namespace (the daemon's: the host end of a
/// veth pair lives there), if it can be read.
fn host_mac(ifname: &str) -> Option<String> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    addrs
        .filter(|a| a.interface_name == ifname)
        .find_map(|a| a.address.as_ref()?.as_link_addr()?.addr())
        .map(|m| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        })
}

fn del(env: &Env, conf: &NetConf, daemon: &Daemon) -> Result<(), Error> {
    let store = Store::new(&conf.data_dir(), &conf.name);
    let rec = store.load(&env.container_id, &env.ifname)?;
    let (network, name, netns, known) = match &rec {
        Some(r) => (r.network.clone(), r.name.clone(), r.netns.clone(), true),
        None => {
            let (name, from_id) = container_name(env);
            let known = from_id || !env.netns.is_empty();
            (conf.network().to_string(), name, env.netns.clone(), known)
        }
    };
    if known {
        detach(daemon, &network, &name, &netns)?;
    } else {
        eprintln!(
            "vswitch-cni: no record of {} and no namespace given: {name:?} is left alone (it \
             may be another container's name)",
            env.container_id
        );
    }
    store.remove(&env.container_id, &env.ifname)
}

/// Disconnects `name` from `network` unless the daemon's container of that name was attached
/// from another namespace than `netns` (when `netns` is known).
fn detach(daemon: &Daemon, network: &str, name: &str, netns: &str) -> Result<(), Error> {
    match daemon.find(network, name)? {
        Some(c) if !netns.is_empty() && c.netns != netns => {
            eprintln!(
                "vswitch-cni: {name:?} on {network:?} is now attached from {} (not {netns}): a \
                 newer container took the name, left alone",
                c.netns
            );
            Ok(())
        }
        _ => daemon.disconnect(network, name, Some(netns).filter(|n| !n.is_empty())),
    }
}

fn check(env: &Env, conf: &NetConf, daemon: &Daemon) -> Result<(), Error> {
    let store = Store::new(&conf.data_dir(), &conf.name);
    let rec = store.load(&env.container_id, &env.ifname)?;
    let (network, name) = match &rec {
        Some(r) => (r.network.clone(), r.name.clone()),
        None => (conf.network().to_string(), container_name(env).0),
    };
    let req = Request::ContainerCheck {
        network: network.clone(),
        name: name.clone(),
    };
    let c = match daemon.call("container check", &req) {
        Ok(v) => attached(v)?,
        Err(Error::DaemonRefused(text)) => return Err(Error::CheckFailed(text)),
        Err(e) => return Err(e),
    };
    if c.netns != env.netns {
        return Err(Error::CheckFailed(format!(
            "{name:?} on {network:?} is attached from {}, not {}",
            c.netns, env.netns
        )));
    }
    if c.ifname != env.ifname {
        return Err(Error::CheckFailed(format!(
            "{name:?} on {network:?} has interface {}, not {}",
            c.ifname, env.ifname
        )));
    }
    if let Some(prev) = &conf.prev_result
        && let Some(why) = result::differs_from_prev(&c, prev)
    {
        return Err(Error::CheckFailed(why));
    }
    Ok(())
}

fn status(conf: &NetConf, daemon: &Daemon) -> Result<(), Error> {
    if !conf.is_1_1() {
        return Err(Error::IncompatibleVersion(format!(
            "{} (STATUS needs 1.1.0)",
            conf.cni_version
        )));
    }
    let status = daemon
        .call("status", &Request::Status)
        .map_err(|e| Error::NotAvailable(e.to_string()))?;
    let network = conf.network();
    let has = status
        .get("networks")
        .and_then(Value::as_array)
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.get("name").and_then(Value::as_str) == Some(network))
        });
    if !has {
        return Err(Error::NotAvailable(format!(
            "the vswitch daemon has no network {network:?}: create it with `vswitch network \
             create {network}`"
        )));
    }
    Ok(())
}

fn gc(conf: &NetConf, daemon: &Daemon) -> Result<(), Error> {
    if !conf.is_1_1() {
        return Err(Error::IncompatibleVersion(format!(
            "{} (GC needs 1.1.0)",
            conf.cni_version
        )));
    }
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        Error::InvalidConfig(
            "GC needs cni.dev/valid-attachments (an empty list removes all)".into(),
        )
    })?;
    let store = Store::new(&conf.data_dir(), &conf.name);
    let mut first_error = None;
    for rec in store.all()? {
        let live = valid
            .iter()
            .any(|a| a.container_id == rec.container_id && a.ifname == rec.ifname);
        if live {
            continue;
        }
        let gone = detach(daemon, &rec.network, &rec.name, &rec.netns)
            .and_then(|()| store.remove(&rec.container_id, &rec.ifname));
        match gone {
            Ok(()) => eprintln!(
                "vswitch-cni: GC removed {} ({}) from {}",
                rec.name, rec.container_id, rec.network
            ),
            Err(e) => {
                eprintln!("vswitch-cni: GC of {}: {e}", rec.container_id);
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run_with(pairs: &[(&str, &str)], stdin: &str) -> Outcome {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        run(|k| m.get(k).cloned(), stdin.as_bytes())
    }

    #[test]
    fn version_lists_the_supported_versions() {
        let out = run_with(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
        assert_eq!(out.status, 0);
        let v = out.stdout.unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
        let out = run_with(&[("CNI_COMMAND", "VERSION")], "");
        assert_eq!(out.stdout.unwrap()["cniVersion"], PREFERRED_VERSION);
    }

    #[test]
    fn bad_input_is_an_error_object_never_a_panic() {
        let add = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ];
        for (stdin, code) in [
            ("", 6),
            ("\u{0}\u{1}", 6),
            ("{", 6),
            ("42", 6),
            (r#"{"cniVersion":"1.0.0"}"#, 7),
            (r#"{"cniVersion":"1.0.0","name":5}"#, 7),
            (r#"{"cniVersion":"9.9.9","name":"n"}"#, 1),
        ] {
            let out = run_with(&add, stdin);
            assert_eq!(out.status, 1, "{stdin:?}");
            let v = out.stdout.unwrap();
            assert_eq!(v["code"], code, "{stdin:?}: {v}");
            assert!(v["msg"].is_string() && v["details"].is_string());
        }
        let out = run_with(
            &[("CNI_COMMAND", "ADD")],
            r#"{"cniVersion":"1.0.0","name":"n"}"#,
        );
        assert_eq!(out.stdout.unwrap()["code"], 4);
    }

    #[test]
    fn an_unreachable_daemon_is_100_and_status_says_50() {
        let conf = r#"{"cniVersion":"1.1.0","name":"n","socket":"/nonexistent/vswitch.sock",
                       "dataDir":"/nonexistent/state"}"#;
        let out = run_with(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "abc"),
                ("CNI_NETNS", "/run/netns/x"),
                ("CNI_IFNAME", "eth0"),
            ],
            conf,
        );
        let v = out.stdout.unwrap();
        assert_eq!(v["code"], 100, "{v}");
        assert_eq!(v["cniVersion"], "1.1.0");
        let out = run_with(&[("CNI_COMMAND", "STATUS")], conf);
        assert_eq!(out.stdout.unwrap()["code"], 50);
    }

    #[test]
    fn names_come_from_the_runtime_else_the_id() {
        let mut env = Env::from_vars(|k| {
            Some(
                match k {
                    "CNI_COMMAND" => "DEL",
                    "CNI_CONTAINERID" => "0123456789abcdef",
                    "CNI_IFNAME" => "eth0",
                    "CNI_ARGS" => "IgnoreUnknown=1;K8S_POD_NAME=web",
                    _ => return None,
                }
                .to_string(),
            )
        })
        .unwrap();
        assert_eq!(container_name(&env), ("web".to_string(), false));
        env.args.pod_name = Some("not a name".into());
        assert_eq!(container_name(&env), ("0123456789abcdef".to_string(), true));
        env.args.pod_name = None;
        env.container_id = "a".repeat(64);
        assert_eq!(container_name(&env).0.len(), 63);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn command() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC", "X"])
    }

    /// Configurations shaped like real ones (any field may be missing, mistyped or odd),
    /// always pointing at a socket that does not exist.
    fn config() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            Just(json!(null)),
            any::<i64>().prop_map(|n| json!(n)),
            "[ -~]{0,12}".prop_map(|s| json!(s)),
            Just(json!([{"hostPort": 80, "containerPort": 0}])),
            Just(json!({"portMappings": [{"hostPort": "x"}], "ips": [1], "mac": 5})),
            Just(json!({"ips": ["1.2.3.4/8", "::1"]})),
        ];
        let key = prop::sample::select(vec![
            "cniVersion",
            "name",
            "network",
            "runtimeConfig",
            "args",
            "dns",
            "prevResult",
            "cni.dev/valid-attachments",
        ]);
        prop::collection::vec((key, value), 0..6).prop_map(|fields| {
            let mut m = serde_json::Map::new();
            m.insert("cniVersion".into(), json!("1.1.0"));
            m.insert("name".into(), json!("n"));
            for (k, v) in fields {
                m.insert(k.to_string(), v);
            }
            m.insert("socket".into(), json!("/nonexistent/vswitch-fuzz.sock"));
            m.insert("dataDir".into(), json!("/nonexistent/vswitch-fuzz"));
            Value::Object(m).to_string()
        })
    }

    proptest! {
        #[test]
        fn never_panics_and_always_answers(
            cmd in command(),
            id in "[ -~]{0,10}",
            netns in "[ -~]{0,10}",
            ifname in "[ -~]{0,18}",
            args in "[ -~]{0,30}",
            stdin in prop_oneof![config(), "[ -~]{0,40}"],
        ) {
            let vars = |k: &str| -> Option<String> {
                Some(match k {
                    "CNI_COMMAND" => cmd.to_string(),
                    "CNI_CONTAINERID" => id.clone(),
                    "CNI_NETNS" => netns.clone(),
                    "CNI_IFNAME" => ifname.clone(),
                    "CNI_ARGS" => args.clone(),
                    _ => return None,
                })
            };
            let out = run(vars, stdin.as_bytes());
            if out.status != 0 {
                let v = out.stdout.expect("an error object");
                prop_assert!(v["code"].is_u64() && v["msg"].is_string(), "{}", v);
            }
        }
    }
}
