//! Docker's requests turned into vswitch's, without I/O: names from Docker's IDs, the network
//! a `CreateNetwork` asks for (pool, gateway, options), the port mappings of a
//! `ProgramExternalConnectivity`, the published-port rows of the daemon's answer. The
//! [`crate::driver`] sends them.

use crate::api::{self, Options, PortBinding};
use crate::driver::{Result, invalid};
use control::Request;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// The first 12 characters of a Docker ID (64 hex digits), checked: they become a name.
fn short_id(kind: &str, id: &str) -> Result<String> {
    match id.get(..12) {
        Some(s) if s.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(s.to_ascii_lowercase()),
        _ => Err(invalid(format!(
            "{kind} {id:?} is not a Docker ID (64 hex digits)"
        ))),
    }
}

/// The vswitch network of a Docker network.
pub fn network_name(network_id: &str) -> Result<String> {
    Ok(format!("dk-{}", short_id("NetworkID", network_id)?))
}

/// The vswitch container of a Docker endpoint.
pub fn endpoint_name(endpoint_id: &str) -> Result<String> {
    Ok(format!("ep-{}", short_id("EndpointID", endpoint_id)?))
}

/// An address with or without its length (`10.77.0.1/24`, `10.77.0.1`).
pub(crate) fn addr_of(what: &str, s: &str) -> Result<Ipv4Addr> {
    let bare = s.split_once('/').map_or(s, |(a, _)| a);
    bare.parse()
        .map_err(|_| invalid(format!("{what} {s:?} is not an IPv4 address")))
}

/// An IPv6 address as Docker sends it (`fd00::2/64` or bare).
pub(crate) fn addr6_of(what: &str, s: &str) -> Result<std::net::Ipv6Addr> {
    let bare = s.split_once('/').map_or(s, |(a, _)| a);
    bare.parse()
        .map_err(|_| invalid(format!("{what} {s:?} is not an IPv6 address")))
}

/// A boolean option as Docker sends it: a JSON bool, or a string from `-o`.
fn flag(options: &Options, generic: &BTreeMap<String, String>, key: &str) -> Result<bool> {
    let v = options
        .get(key)
        .cloned()
        .or_else(|| generic.get(key).map(|s| Value::String(s.clone())));
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| invalid(format!("option {key}={s:?}: give true or false"))),
        Some(other) => Err(invalid(format!("option {key}={other}: give true or false"))),
    }
}

/// The `-o key=value` options of `docker network create` (values are strings).
fn generic_options(options: &Options) -> Result<BTreeMap<String, String>> {
    match options.get(api::GENERIC) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Ok((k.clone(), other.to_string())),
            })
            .collect(),
        Some(other) => Err(invalid(format!("{} is not a map: {other}", api::GENERIC))),
    }
}

/// `-o` options the driver understands (Docker's bridge names where one exists).
const MTU: &str = "com.docker.network.driver.mtu";
const ICC: &str = "com.docker.network.bridge.enable_icc";
const ANTI_SPOOFING: &str = "vswitch.anti_spoofing";
/// `-o vswitch.overlay=true`: the network spans the cluster's hosts (the daemon runs with
/// `--cluster`); Docker's own `overlay` driver needs swarm mode, this one does not.
const OVERLAY: &str = "vswitch.overlay";
/// `-o vswitch.driver=macvlan`: the network is bridged onto the uplink's LAN (no NAT); the
/// pool is the LAN's subnet and the gateway its router.
const DRIVER: &str = "vswitch.driver";
/// `-o vswitch.vlan=N`: a macvlan network's 802.1Q VLAN on the uplink (vswitch has one
/// uplink, so Docker's `-o parent=eth0.N` becomes this).
const VLAN: &str = "vswitch.vlan";
/// `-o vswitch.macvlan_mode=bridge|private` (or Docker's macvlan driver's `macvlan_mode`).
const MACVLAN_MODE: &str = "vswitch.macvlan_mode";
const DOCKER_MACVLAN_MODE: &str = "macvlan_mode";
/// Docker's macvlan `parent`: refused with a pointer to `vswitch.vlan`.
const PARENT: &str = "parent";

/// The `network create` request for Docker's `CreateNetwork`.
pub fn network_create(req: &api::CreateNetwork) -> Result<Request> {
    let name = network_name(&req.network_id)?;
    let options = req.options.clone().unwrap_or_default();
    let generic = generic_options(&options)?;
    let ipv6 = flag(&options, &generic, api::ENABLE_IPV6)?
        || req.ipv6_data.as_ref().is_some_and(|v| !v.is_empty());
    let (subnet6, gateway6) = match req.ipv6_data.as_deref() {
        None | Some([]) => (None, None),
        Some([one]) => {
            let subnet: ipnet::Ipv6Net = one
                .pool
                .parse()
                .map_err(|_| invalid(format!("pool {:?} is not an IPv6 subnet", one.pool)))?;
            let gateway = if one.gateway.is_empty() {
                None
            } else {
                Some(addr6_of("IPv6 gateway", &one.gateway)?)
            };
            (Some(subnet), gateway)
        }
        Some(_) => {
            return Err(invalid(
                "a vswitch network has one IPv6 prefix: give one IPv6 --subnet",
            ));
        }
    };
    let pool = match req.ipv4_data.as_deref() {
        Some([one]) => one,
        Some([]) | None => {
            return Err(invalid(
                "no IPv4 pool: use Docker's default IPAM driver (give --subnet, or none)",
            ));
        }
        Some(_) => {
            return Err(invalid(
                "a vswitch network has one IPv4 subnet: give one --subnet",
            ));
        }
    };
    let subnet: ipnet::Ipv4Net = pool
        .pool
        .parse()
        .map_err(|_| invalid(format!("pool {:?} is not an IPv4 subnet", pool.pool)))?;
    let gateway = if pool.gateway.is_empty() {
        None
    } else {
        Some(addr_of("gateway", &pool.gateway)?)
    };
    let mut mtu = None;
    let mut icc = true;
    let mut anti_spoofing = true;
    let mut overlay = false;
    let mut driver: Option<String> = None;
    let mut vlan = None;
    let mut macvlan_mode = None;
    for (k, v) in &generic {
        match k.as_str() {
            MTU => {
                mtu = Some(v.parse::<u16>().ok().filter(|&m| m >= 68).ok_or_else(|| {
                    invalid(format!("option {MTU}={v:?}: give an MTU from 68 to 65535"))
                })?)
            }
            ICC => icc = flag(&options, &generic, ICC)?,
            ANTI_SPOOFING => anti_spoofing = flag(&options, &generic, ANTI_SPOOFING)?,
            OVERLAY => overlay = flag(&options, &generic, OVERLAY)?,
            DRIVER => match v.as_str() {
                "macvlan" | "overlay" | "vswitch" => driver = Some(v.clone()),
                other => {
                    return Err(invalid(format!(
                        "option {DRIVER}={other:?}: give macvlan, overlay or vswitch"
                    )));
                }
            },
            VLAN => {
                vlan = Some(
                    v.trim()
                        .parse::<u16>()
                        .ok()
                        .filter(|n| (1..=4094).contains(n))
                        .ok_or_else(|| {
                            invalid(format!(
                                "option {VLAN}={v:?}: give one VLAN id 1-4094 (stacked tags, \
                                 QinQ, are not supported)"
                            ))
                        })?,
                )
            }
            MACVLAN_MODE | DOCKER_MACVLAN_MODE => match v.as_str() {
                "bridge" | "private" => macvlan_mode = Some(v.clone()),
                other => {
                    return Err(invalid(format!(
                        "option {k}={other:?}: give bridge or private (vswitch's macvlan \
                         networks have no vepa or passthru mode)"
                    )));
                }
            },
            PARENT => {
                return Err(invalid(format!(
                    "option {PARENT}={v:?}: vswitch bridges macvlan networks onto its one \
                     uplink: give -o {DRIVER}=macvlan, and -o {VLAN}=N for a VLAN"
                )));
            }
            // Set by Docker itself for --internal / --ipv6 on some versions.
            api::INTERNAL | api::ENABLE_IPV6 => {}
            other => {
                return Err(invalid(format!(
                    "unknown option {other:?}: the vswitch driver takes -o {MTU}=N, -o {ICC}=true|false, -o {ANTI_SPOOFING}=true|false, -o {OVERLAY}=true|false, -o {DRIVER}=macvlan, -o {VLAN}=N, -o {MACVLAN_MODE}=bridge|private"
                )));
            }
        }
    }
    let driver = match (overlay, driver) {
        (true, Some(d)) if d != "overlay" => {
            return Err(invalid(format!(
                "option {OVERLAY}=true and {DRIVER}={d}: give one"
            )));
        }
        (true, _) => Some("overlay".to_string()),
        (false, Some(d)) if d == "vswitch" => None,
        (false, d) => d,
    };
    let macvlan = driver.as_deref() == Some("macvlan");
    if !macvlan && (vlan.is_some() || macvlan_mode.is_some()) {
        return Err(invalid(format!(
            "options {VLAN} and {MACVLAN_MODE} need -o {DRIVER}=macvlan"
        )));
    }
    let aux_addresses = pool
        .aux_addresses
        .iter()
        .map(|(k, v)| Ok((k.clone(), addr_of("aux address", v)?)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    let labels = BTreeMap::from([("docker.network_id".to_string(), req.network_id.clone())]);
    Ok(Request::NetworkCreate {
        name,
        subnet: Some(subnet),
        gateway,
        ip_range: None,
        internal: flag(&options, &generic, api::INTERNAL)?,
        icc,
        anti_spoofing,
        mtu,
        labels,
        ipv6,
        subnet6,
        gateway6,
        driver,
        vlan,
        macvlan_mode,
        aux_addresses,
    })
}

/// How a container port is published: one host port of Docker's binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub proto: &'static str,
    pub host_ip: Option<Ipv4Addr>,
    /// Host ports to try, in order, until one is free (Docker's `HostPort..=HostPortEnd`
    /// means "any one of these", as `-p 8000-8010:80` asks).
    pub host_ports: std::ops::RangeInclusive<u16>,
    pub container_port: u16,
}

/// The mappings of ProgramExternalConnectivity's `com.docker.network.portmap` (none when
/// Docker sends none). IPv6 bindings on `::` are left out: the 0.0.0.0 binding covers the
/// port, which vswitch publishes on the uplink's IPv6 address too when it has one.
pub fn mappings(options: &Options) -> Result<Vec<Mapping>> {
    let bindings: Vec<PortBinding> = match options.get(api::PORTMAP) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| invalid(format!("{}: {e}", api::PORTMAP)))?,
    };
    let mut out = Vec::with_capacity(bindings.len());
    for b in bindings {
        let proto = match b.proto {
            6 => "tcp",
            17 => "udp",
            n => {
                return Err(invalid(format!(
                    "port {}: protocol {n} cannot be published by vswitch (tcp or udp only)",
                    b.port
                )));
            }
        };
        let host_ip = match b.host_ip.as_deref().unwrap_or("") {
            "" => None,
            s => match s.parse::<IpAddr>() {
                Ok(IpAddr::V4(a)) if a.is_unspecified() => None,
                Ok(IpAddr::V4(a)) => Some(a),
                Ok(IpAddr::V6(a)) if a.is_unspecified() => continue,
                _ => {
                    return Err(invalid(format!(
                        "host address {s:?} of port {}: vswitch publishes on IPv4 addresses only",
                        b.port
                    )));
                }
            },
        };
        if b.host_port == 0 {
            return Err(invalid(format!(
                "{proto} port {}: give the host port (-p HOST:{}): the vswitch driver cannot tell Docker a port it picked",
                b.port, b.port
            )));
        }
        let last = b.host_port_end.max(b.host_port);
        out.push(Mapping {
            proto,
            host_ip,
            host_ports: b.host_port..=last,
            container_port: b.port,
        });
    }
    Ok(out)
}

/// A published port as `port ls` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Published {
    pub(crate) proto: String,
    pub(crate) host_port: u16,
    pub(crate) network: String,
    pub(crate) container: String,
    pub(crate) container_port: u16,
}

pub(crate) fn published(v: &Value) -> Vec<Published> {
    v.as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| {
                    Some(Published {
                        proto: r.get("proto")?.as_str()?.to_string(),
                        host_port: u16::try_from(r.get("host_port")?.as_u64()?).ok()?,
                        network: r.get("network")?.as_str()?.to_string(),
                        container: r.get("container")?.as_str()?.to_string(),
                        container_port: u16::try_from(r.get("container_port")?.as_u64()?).ok()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn portmap() -> Value {
        json!({
            "com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}],
            "com.docker.network.portmap": [
                {"Proto": 6, "IP": "", "Port": 80, "HostIP": "127.0.0.1", "HostPort": 8081, "HostPortEnd": 8081},
                {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
                {"Proto": 17, "IP": "", "Port": 53, "HostIP": "0.0.0.0", "HostPort": 5300, "HostPortEnd": 5310},
                {"Proto": 6, "IP": "", "Port": 80, "HostIP": "::", "HostPort": 8080, "HostPortEnd": 8080}
            ]
        })
    }

    fn create(generic: Value, aux: Value) -> Result<Request> {
        let req: api::CreateNetwork = serde_json::from_value(json!({
            "NetworkID": "ab".repeat(32),
            "Options": {"com.docker.network.generic": generic},
            "IPv4Data": [{"Pool": "192.168.50.0/24", "Gateway": "192.168.50.1/24",
                "AuxAddresses": aux}],
        }))
        .expect("request");
        network_create(&req)
    }

    #[test]
    fn macvlan_options_become_a_macvlan_network() {
        let r = create(
            json!({"vswitch.driver": "macvlan", "vswitch.vlan": "20", "macvlan_mode": "private"}),
            json!({"router2": "192.168.50.3/24"}),
        )
        .expect("macvlan");
        let Request::NetworkCreate {
            driver,
            vlan,
            macvlan_mode,
            aux_addresses,
            subnet,
            gateway,
            ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(driver.as_deref(), Some("macvlan"));
        assert_eq!(vlan, Some(20));
        assert_eq!(macvlan_mode.as_deref(), Some("private"));
        assert_eq!(aux_addresses["router2"], Ipv4Addr::new(192, 168, 50, 3));
        assert_eq!(subnet, Some("192.168.50.0/24".parse().unwrap()));
        assert_eq!(gateway, Some(Ipv4Addr::new(192, 168, 50, 1)));
        let r = create(
            json!({"vswitch.driver": "macvlan", "vswitch.macvlan_mode": "bridge"}),
            json!({}),
        )
        .expect("untagged");
        assert!(matches!(
            r,
            Request::NetworkCreate { vlan: None, ref macvlan_mode, .. }
                if macvlan_mode.as_deref() == Some("bridge")
        ));
        for (generic, why) in [
            (
                json!({"vswitch.vlan": "20"}),
                "need -o vswitch.driver=macvlan",
            ),
            (
                json!({"macvlan_mode": "private"}),
                "need -o vswitch.driver=macvlan",
            ),
            (
                json!({"vswitch.driver": "macvlan", "vswitch.vlan": "20.30"}),
                "QinQ",
            ),
            (
                json!({"vswitch.driver": "macvlan", "vswitch.vlan": "4095"}),
                "1-4094",
            ),
            (
                json!({"vswitch.driver": "macvlan", "macvlan_mode": "vepa"}),
                "bridge or private",
            ),
            (json!({"parent": "eth0.20"}), "vswitch.vlan=N"),
            (json!({"vswitch.driver": "ipvlan"}), "macvlan, overlay"),
            (
                json!({"vswitch.driver": "macvlan", "vswitch.overlay": "true"}),
                "give one",
            ),
        ] {
            let e = create(generic, json!({})).expect_err("refused");
            assert!(e.to_string().contains(why), "{e} lacks {why:?}");
        }
        let e = create(
            json!({"vswitch.driver": "macvlan"}),
            json!({"x": "not-an-address"}),
        )
        .expect_err("bad aux");
        assert!(e.to_string().contains("aux address"), "{e}");
    }

    #[test]
    fn portmap_becomes_publish_requests() {
        let options: Options = serde_json::from_value(portmap()).expect("options");
        let m = mappings(&options).expect("mappings");
        assert_eq!(
            m,
            vec![
                Mapping {
                    proto: "tcp",
                    host_ip: Some(Ipv4Addr::LOCALHOST),
                    host_ports: 8081..=8081,
                    container_port: 80
                },
                Mapping {
                    proto: "tcp",
                    host_ip: None,
                    host_ports: 8080..=8080,
                    container_port: 80
                },
                Mapping {
                    proto: "udp",
                    host_ip: None,
                    host_ports: 5300..=5310,
                    container_port: 53
                },
            ]
        );
        for (binding, why) in [
            (
                json!({"Proto": 132, "Port": 80, "HostPort": 80}),
                "tcp or udp",
            ),
            (
                json!({"Proto": 6, "Port": 80, "HostPort": 0}),
                "give the host port",
            ),
            (
                json!({"Proto": 6, "Port": 80, "HostIP": "::1", "HostPort": 80}),
                "IPv4 addresses only",
            ),
            (
                json!({"Proto": 6, "Port": 80, "HostIP": "nowhere", "HostPort": 80}),
                "IPv4 addresses only",
            ),
        ] {
            let options: Options =
                serde_json::from_value(json!({"com.docker.network.portmap": [binding]}))
                    .expect("options");
            let e = mappings(&options).expect_err("refused");
            assert!(e.to_string().contains(why), "{e} lacks {why:?}");
        }
    }
}
