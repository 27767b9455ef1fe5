//! The execution environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS` (and `CNI_PATH`, which this plugin never needs: it delegates to no other plugin).
//! Which variables a command needs follows SPEC.md 1.1.0 "Parameters": ADD and CHECK need the
//! container id, namespace and interface; DEL the container id and interface (an empty
//! namespace is allowed); VERSION, STATUS and GC none of them.

use crate::error::Error;
use std::net::Ipv4Addr;

/// The CNI operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach a container.
    Add,
    /// Detach it.
    Del,
    /// Check it is as ADD made it.
    Check,
    /// Supported spec versions.
    Version,
    /// Whether the plugin can serve ADD (1.1.0).
    Status,
    /// Remove attachments the runtime no longer knows (1.1.0).
    Gc,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// `CNI_ARGS`: `KEY=VALUE;KEY=VALUE`. The keys this plugin reads; others are refused unless
/// `IgnoreUnknown=1` (or `true`) is among them, as the reference plugins do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CniArgs {
    /// `IP=`: the address to give the container.
    pub ip: Option<Ipv4Addr>,
    /// `MAC=`: the MAC to give it.
    pub mac: Option<String>,
    /// `K8S_POD_NAME=`: the container's name (Podman sets it to the container name).
    pub pod_name: Option<String>,
}

impl CniArgs {
    /// Parses `CNI_ARGS`.
    ///
    /// # Errors
    /// A pair without `=`, an unknown key without `IgnoreUnknown`, a bad `IP` or `MAC` (code 4).
    pub fn parse(s: &str) -> Result<CniArgs, Error> {
        let bad = |why: String| Error::InvalidEnv {
            var: "CNI_ARGS",
            why,
        };
        let mut pairs = Vec::new();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("{pair:?} is not KEY=VALUE")))?;
            pairs.push((k, v));
        }
        let ignore_unknown = pairs
            .iter()
            .any(|(k, v)| *k == "IgnoreUnknown" && matches!(*v, "1" | "true" | "True"));
        let mut args = CniArgs::default();
        for (k, v) in pairs {
            match k {
                "IgnoreUnknown"
                | "K8S_POD_NAMESPACE"
                | "K8S_POD_INFRA_CONTAINER_ID"
                | "K8S_POD_UID" => {}
                "IP" => {
                    let ip = v.split('/').next().unwrap_or(v);
                    args.ip = Some(
                        ip.parse()
                            .map_err(|_| bad(format!("IP={v:?} is not an IPv4 address")))?,
                    );
                }
                "MAC" => {
                    if !valid_mac(v) {
                        return Err(bad(format!("MAC={v:?} is not aa:bb:cc:dd:ee:ff")));
                    }
                    args.mac = Some(v.to_string());
                }
                "K8S_POD_NAME" if !v.is_empty() => args.pod_name = Some(v.to_string()),
                "K8S_POD_NAME" => {}
                _ if ignore_unknown => {}
                _ => {
                    return Err(bad(format!(
                        "unknown key {k:?} (known: IP, MAC, K8S_POD_NAME; add IgnoreUnknown=1 \
                         to pass others)"
                    )));
                }
            }
        }
        Ok(args)
    }
}

/// Whether `s` is a unicast-or-not six-byte MAC written `aa:bb:cc:dd:ee:ff`.
pub fn valid_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What the runtime passed in the environment.
#[derive(Debug, Clone)]
pub struct Env {
    /// The operation.
    pub command: Command,
    /// `CNI_CONTAINERID` (checked: alphanumeric first, then alphanumerics, `_`, `.`, `-`).
    pub container_id: String,
    /// `CNI_NETNS` (empty when not given: DEL allows it).
    pub netns: String,
    /// `CNI_IFNAME` (checked: a Linux interface name).
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: CniArgs,
}

/// Whether `s` is a valid container id or network name (SPEC.md: "must start with an
/// alphanumeric character, optionally followed by any combination of one or more alphanumeric
/// characters, underscore, dot or hyphen").
pub fn valid_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Whether `s` can name an interface (at most 15 bytes, no `/`, `:`, whitespace or NUL; not
/// `.` or `..`).
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s
            .bytes()
            .any(|c| c == b'/' || c == b':' || c == 0 || c.is_ascii_whitespace())
}

impl Env {
    /// Reads the environment through `get` (`std::env::var` in the binary, a map in tests).
    ///
    /// # Errors
    /// A missing or unknown `CNI_COMMAND`, or a variable the command needs that is missing or
    /// malformed (code 4).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Env, Error> {
        let missing = |var: &'static str| Error::InvalidEnv {
            var,
            why: "not set".into(),
        };
        let command = get("CNI_COMMAND").ok_or_else(|| missing("CNI_COMMAND"))?;
        let command = Command::parse(&command).ok_or_else(|| Error::InvalidEnv {
            var: "CNI_COMMAND",
            why: format!("unknown command {command:?} (ADD, DEL, CHECK, VERSION, STATUS, GC)"),
        })?;
        let attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let netns_needed = matches!(command, Command::Add | Command::Check);
        // VERSION, STATUS and GC ignore the attachment's variables (libcni passes dummy
        // values, e.g. CNI_NETNS=dummy, when it probes a plugin's VERSION).
        if !attachment {
            return Ok(Env {
                command,
                container_id: String::new(),
                netns: String::new(),
                ifname: String::new(),
                args: CniArgs::default(),
            });
        }
        let var = |name: &'static str, needed: bool| -> Result<String, Error> {
            match get(name).filter(|v| !v.is_empty()) {
                Some(v) => Ok(v),
                None if needed => Err(missing(name)),
                None => Ok(String::new()),
            }
        };
        let container_id = var("CNI_CONTAINERID", true)?;
        if !valid_id(&container_id) {
            return Err(Error::InvalidEnv {
                var: "CNI_CONTAINERID",
                why: format!(
                    "{container_id:?} must start with a letter or digit and hold only letters, \
                     digits, '_', '.' and '-'"
                ),
            });
        }
        let netns = var("CNI_NETNS", netns_needed)?;
        if !netns.is_empty() && (!netns.starts_with('/') || netns.contains('\0')) {
            return Err(Error::InvalidEnv {
                var: "CNI_NETNS",
                why: format!("{netns:?} is not an absolute path"),
            });
        }
        let ifname = var("CNI_IFNAME", true)?;
        if !valid_ifname(&ifname) {
            return Err(Error::InvalidEnv {
                var: "CNI_IFNAME",
                why: format!("{ifname:?} is not an interface name (at most 15 bytes, no '/')"),
            });
        }
        let args = CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())?;
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, Error> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn add_needs_id_netns_and_ifname() {
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "abc")]).unwrap_err();
        assert_eq!(e.code(), 4);
        assert!(e.to_string().contains("CNI_NETNS"), "{e}");
        let ok = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=web;\
                 K8S_POD_INFRA_CONTAINER_ID=abc;FOO=bar",
            ),
        ])
        .unwrap();
        assert_eq!(ok.command, Command::Add);
        assert_eq!(ok.args.pod_name.as_deref(), Some("web"));
    }

    #[test]
    fn del_allows_an_empty_netns() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", ""),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(e.netns, "");
    }

    #[test]
    fn version_status_gc_need_nothing_but_the_command() {
        for c in ["VERSION", "STATUS", "GC"] {
            assert!(env(&[("CNI_COMMAND", c)]).is_ok(), "{c}");
            // What libcni sends when it probes VERSION.
            let probe = env(&[
                ("CNI_COMMAND", c),
                ("CNI_CONTAINERID", "dummy"),
                ("CNI_NETNS", "dummy"),
                ("CNI_IFNAME", "dummy"),
                ("CNI_ARGS", "WHATEVER=1"),
            ]);
            assert!(probe.is_ok(), "{c}");
        }
        assert_eq!(env(&[]).unwrap_err().code(), 4);
        assert_eq!(env(&[("CNI_COMMAND", "LAUNCH")]).unwrap_err().code(), 4);
    }

    #[test]
    fn bad_ids_and_ifnames_are_refused() {
        let base = |id: &'static str, ifname: &'static str| {
            env(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", "/run/netns/x"),
                ("CNI_IFNAME", ifname),
            ])
        };
        assert!(base("../etc", "eth0").is_err());
        assert!(base("-x", "eth0").is_err());
        assert!(base("ok", "a/b").is_err());
        assert!(base("ok", "averyveryverylongname").is_err());
        assert!(base("ok_1.2-3", "eth1").is_ok());
    }

    #[test]
    fn cni_args_are_parsed_strictly_unless_ignore_unknown() {
        let a = CniArgs::parse("IP=172.20.0.9;MAC=02:42:ac:14:00:09").unwrap();
        assert_eq!(a.ip, Some(Ipv4Addr::new(172, 20, 0, 9)));
        assert_eq!(a.mac.as_deref(), Some("02:42:ac:14:00:09"));
        assert_eq!(CniArgs::parse("FOO=1").unwrap_err().code(), 4);
        assert!(CniArgs::parse("FOO=1;IgnoreUnknown=1").is_ok());
        assert_eq!(CniArgs::parse("IP=fe80::1").unwrap_err().code(), 4);
        assert_eq!(CniArgs::parse("MAC=zz").unwrap_err().code(), 4);
        assert_eq!(CniArgs::parse("novalue").unwrap_err().code(), 4);
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
    }
}
