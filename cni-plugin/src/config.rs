//! The network configuration on stdin:
//!
//! ```json
//! {"cniVersion": "1.0.0", "name": "web", "type": "vswitch-cni",
//!  "network": "web", "socket": "/run/vswitch/vswitch.sock", "dataDir": "/var/lib/cni/vswitch",
//!  "capabilities": {"portMappings": true, "ips": true, "mac": true},
//!  "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80,
//!                                      "protocol": "tcp", "hostIP": "127.0.0.1"}],
//!                    "ips": ["172.20.0.9/16"], "mac": "02:42:ac:14:00:09"},
//!  "dns": {"search": ["example.org"]}, "args": {...}, "prevResult": {...}}
//! ```
//!
//! Not JSON is code 6; JSON that is not such an object (no name, a field of the wrong type, a
//! bad address) is code 7. Unknown fields are ignored: runtimes add their own (`args`,
//! `cni.dev/*`), and the spec lets a plugin accept them.

use crate::env::{valid_id, valid_mac};
use crate::error::Error;
use serde::Deserialize;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The spec versions this plugin speaks (VERSION's `supportedVersions`).
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];
/// The version used where the configuration gives none (VERSION, unreadable input).
pub const PREFERRED_VERSION: &str = "1.1.0";
/// The daemon's default control socket (`vswitch daemon` run as root).
pub const DEFAULT_SOCKET: &str = "/run/vswitch/vswitch.sock";
/// Where the plugin records its attachments by default.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/vswitch";

/// The configuration, decoded.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// Spec version of the configuration (and of the answer).
    pub cni_version: String,
    /// The CNI network's name.
    pub name: String,
    /// The vswitch network (default: `name`).
    #[serde(default)]
    pub network: Option<String>,
    /// The daemon's control socket (default [`DEFAULT_SOCKET`]).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Where attachments are recorded (default [`DEFAULT_DATA_DIR`]).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Capability arguments from the runtime.
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// `args` (the `cni.ips` convention is read; the rest is ignored).
    #[serde(default)]
    pub args: Option<Value>,
    /// DNS settings added to the result (`search`, `domain`, `options`; `nameservers` only
    /// when the network's own DNS does not serve it).
    #[serde(default)]
    pub dns: Option<Dns>,
    /// Let the host's own connections (localhost, its addresses) reach published ports
    /// through the daemon's host proxy. Off by default: Podman binds every published host port
    /// itself to reserve it, so the proxy could not listen there (a runtime that holds none,
    /// such as nerdctl, can turn it on).
    #[serde(default)]
    pub host_proxy: bool,
    /// The previous result (CHECK, DEL).
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// GC: the attachments the runtime still knows.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// `runtimeConfig`: the capabilities this plugin supports.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// `portMappings`.
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// `ips`: addresses (CIDR or plain) to give the container; one IPv4 one is supported.
    #[serde(default)]
    pub ips: Vec<String>,
    /// `mac`.
    #[serde(default)]
    pub mac: Option<String>,
}

/// One `portMappings` entry (CONVENTIONS.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Port on the host.
    pub host_port: u16,
    /// Port in the container.
    pub container_port: u16,
    /// `tcp` (default) or `udp`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// Host address to listen on (none or empty: every address).
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

fn tcp() -> String {
    "tcp".into()
}

/// The well-known `dns` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Dns {
    /// Resolvers.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default)]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default)]
    pub options: Vec<String>,
}

/// One `cni.dev/valid-attachments` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    /// The container id.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Its interface.
    pub ifname: String,
}

/// A port mapping checked and ready for the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// `tcp` or `udp`.
    pub proto: String,
    /// Host address (none: every one).
    pub host_ip: Option<Ipv4Addr>,
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
}

/// The `cniVersion` of `stdin` when it has a readable one (for VERSION and error objects).
pub fn version_of(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

impl NetConf {
    /// Decodes and checks the configuration.
    ///
    /// # Errors
    /// Not JSON (6); a missing or mistyped field, a bad name (7); an unsupported
    /// `cniVersion` (1).
    pub fn parse(stdin: &[u8]) -> Result<NetConf, Error> {
        let v: Value = serde_json::from_slice(stdin).map_err(|e| Error::Decode(e.to_string()))?;
        if !v.is_object() {
            return Err(Error::Decode("expected a JSON object".into()));
        }
        let conf: NetConf = serde_json::from_value(v)
            .map_err(|e| Error::InvalidConfig(format!("network configuration: {e}")))?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(Error::IncompatibleVersion(conf.cni_version));
        }
        if !valid_id(&conf.name) {
            return Err(Error::InvalidConfig(format!(
                "network name {:?} must start with a letter or digit and hold only letters, \
                 digits, '_', '.' and '-'",
                conf.name
            )));
        }
        if let Some(n) = &conf.network
            && !valid_id(n)
        {
            return Err(Error::InvalidConfig(format!(
                "\"network\": {n:?} is not a vswitch network name"
            )));
        }
        // The capability arguments are checked by ADD, which uses them: a DEL or CHECK
        // cleaning up after a refused ADD must not fail on them again.
        Ok(conf)
    }

    /// The vswitch network.
    pub fn network(&self) -> &str {
        self.network.as_deref().unwrap_or(&self.name)
    }

    /// The daemon's socket.
    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }

    /// The plugin's state directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }

    /// Whether the configuration's version is at least 1.1.0 (STATUS, GC).
    pub fn is_1_1(&self) -> bool {
        self.cni_version == "1.1.0"
    }

    /// The port mappings, checked.
    ///
    /// # Errors
    /// Port 0, a protocol other than tcp/udp, a host address that is not IPv4 (7).
    pub fn publishes(&self) -> Result<Vec<Publish>, Error> {
        self.runtime_config
            .port_mappings
            .iter()
            .map(|m| {
                let bad = |why: String| {
                    Error::InvalidConfig(format!("runtimeConfig.portMappings {m:?}: {why}"))
                };
                if m.host_port == 0 || m.container_port == 0 {
                    return Err(bad("ports must be 1-65535".into()));
                }
                let proto = m.protocol.to_ascii_lowercase();
                if proto != "tcp" && proto != "udp" {
                    return Err(bad(format!("protocol {:?}: tcp or udp", m.protocol)));
                }
                let host_ip = match m.host_ip.as_deref() {
                    None | Some("") => None,
                    Some(ip) => Some(
                        ip.parse::<Ipv4Addr>()
                            .map_err(|_| bad(format!("hostIP {ip:?} is not IPv4")))?,
                    ),
                };
                Ok(Publish {
                    proto,
                    host_ip: host_ip.filter(|a| !a.is_unspecified()),
                    host_port: m.host_port,
                    container_port: m.container_port,
                })
            })
            .collect()
    }

    /// The address asked for through `runtimeConfig.ips` or `args.cni.ips` (CIDR or plain).
    ///
    /// # Errors
    /// An address that is not IPv4, or more than one (7).
    pub fn requested_ip(&self) -> Result<Option<Ipv4Addr>, Error> {
        let from_args: Vec<String> = self
            .args
            .as_ref()
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get("ips"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let ips = if self.runtime_config.ips.is_empty() {
            &from_args
        } else {
            &self.runtime_config.ips
        };
        match ips.as_slice() {
            [] => Ok(None),
            [one] => {
                let addr = one.split('/').next().unwrap_or(one);
                addr.parse().map(Some).map_err(|_| {
                    Error::InvalidConfig(format!(
                        "ips: {one:?} is not an IPv4 address (vswitch networks are IPv4)"
                    ))
                })
            }
            more => Err(Error::InvalidConfig(format!(
                "ips: {more:?}: a vswitch container has one IPv4 address"
            ))),
        }
    }

    /// The MAC asked for through `runtimeConfig.mac`.
    ///
    /// # Errors
    /// Not `aa:bb:cc:dd:ee:ff` (7).
    pub fn requested_mac(&self) -> Result<Option<String>, Error> {
        match &self.runtime_config.mac {
            None => Ok(None),
            Some(m) if valid_mac(m) => Ok(Some(m.clone())),
            Some(m) => Err(Error::InvalidConfig(format!(
                "runtimeConfig.mac {m:?} is not aa:bb:cc:dd:ee:ff"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_podman_style_config() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"web","type":"vswitch-cni",
                "capabilities":{"portMappings":true},
                "runtimeConfig":{"portMappings":[
                    {"hostPort":8080,"containerPort":80,"protocol":"tcp"},
                    {"hostPort":8081,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}],
                    "ips":["172.20.0.9/16"]},
                "args":{"labels":{"a":"b"}}}"#,
        )
        .unwrap();
        assert_eq!(c.network(), "web");
        assert_eq!(c.socket(), PathBuf::from(DEFAULT_SOCKET));
        let p = c.publishes().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].host_ip, None);
        assert_eq!(p[1].host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(
            c.requested_ip().unwrap(),
            Some(Ipv4Addr::new(172, 20, 0, 9))
        );
    }

    #[test]
    fn not_json_is_6_and_bad_configs_are_7() {
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code(), 6);
        assert_eq!(NetConf::parse(b"[1]").unwrap_err().code(), 6);
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"1.0.0"}"#)
                .unwrap_err()
                .code(),
            7
        );
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"a b"}"#)
                .unwrap_err()
                .code(),
            7
        );
        let bad_port = br#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":
            [{"hostPort":80,"containerPort":80,"protocol":"sctp"}]}}"#;
        // Parsed (a DEL after a refused ADD must work), refused where ADD uses them.
        let c = NetConf::parse(bad_port).unwrap();
        assert_eq!(c.publishes().unwrap_err().code(), 7);
        let v6 = br#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"ips":["fd00::2/64"]}}"#;
        assert_eq!(
            NetConf::parse(v6)
                .unwrap()
                .requested_ip()
                .unwrap_err()
                .code(),
            7
        );
        let port_type = br#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":
            [{"hostPort":"x","containerPort":80}]}}"#;
        assert_eq!(NetConf::parse(port_type).unwrap_err().code(), 7);
    }

    #[test]
    fn unsupported_versions_are_1() {
        let e = NetConf::parse(br#"{"cniVersion":"0.3.1","name":"n"}"#).unwrap_err();
        assert_eq!(e.code(), 1);
        assert_eq!(
            version_of(br#"{"cniVersion":"0.3.1"}"#).as_deref(),
            Some("0.3.1")
        );
        assert_eq!(version_of(b"garbage"), None);
    }

    #[test]
    fn ips_from_args_and_valid_attachments() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","network":"other",
                "args":{"cni":{"ips":["172.20.0.7"]}},
                "cni.dev/valid-attachments":[{"containerID":"abc","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(c.network(), "other");
        assert!(c.is_1_1());
        assert_eq!(
            c.requested_ip().unwrap(),
            Some(Ipv4Addr::new(172, 20, 0, 7))
        );
        assert_eq!(
            c.valid_attachments.unwrap(),
            vec![Attachment {
                container_id: "abc".into(),
                ifname: "eth0".into()
            }]
        );
    }
}
