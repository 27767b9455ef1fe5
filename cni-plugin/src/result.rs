//! The daemon's answer for a container and the CNI result made from it (SPEC.md "ADD Success"):
//!
//! - `interfaces`: \[0\] the switch's end of the veth pair (in the daemon's namespace, with its
//!   MAC when it can be read there), \[1\] the container's (`sandbox` = the namespace path);
//! - `ips`: the address with the network's prefix, its gateway, `interface: 1`
//!   (plus `"version": "4"` for a 0.4.0 configuration), then on a dual-stack network the IPv6
//!   address the same way (`"version": "6"`);
//! - `routes`: `0.0.0.0/0` (and `::/0`) via the gateways, none on an internal network;
//! - `dns`: the daemon's resolvers (the gateway, on networks whose DNS serves container names),
//!   else the configuration's; `domain`, `search` and `options` from the configuration.

use crate::config::Dns;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A container as the daemon reports it (connect, container check, status).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attached {
    /// Its name.
    pub name: String,
    /// Its network.
    pub network: String,
    /// The switch port: the host end of the veth pair.
    pub port: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: String,
    /// Its namespace path.
    #[serde(default)]
    pub netns: String,
    /// Its interface there.
    pub ifname: String,
    /// The network's prefix length.
    pub prefix_len: u8,
    /// Default gateway (none: internal network).
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Resolvers.
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// Its IPv6 address, on a dual-stack network.
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    /// The network's IPv6 prefix length.
    #[serde(default)]
    pub prefix_len6: Option<u8>,
    /// IPv6 default gateway.
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
}

/// The CNI result for `c`, in version `cni_version`; `host_mac` is the host end's MAC when
/// known, `dns` the configuration's `dns`.
pub fn build(c: &Attached, cni_version: &str, host_mac: Option<&str>, dns: Option<&Dns>) -> Value {
    let mut host = Map::new();
    host.insert("name".into(), json!(c.port));
    if let Some(mac) = host_mac {
        host.insert("mac".into(), json!(mac));
    }
    let container = json!({ "name": c.ifname, "mac": c.mac, "sandbox": c.netns });
    let entry = |version: &str, address: String, gateway: Option<String>| {
        let mut ip = Map::new();
        if cni_version == "0.4.0" {
            ip.insert("version".into(), json!(version));
        }
        ip.insert("address".into(), json!(address));
        if let Some(gw) = gateway {
            ip.insert("gateway".into(), json!(gw));
        }
        ip.insert("interface".into(), json!(1));
        Value::Object(ip)
    };
    let mut ips = vec![entry(
        "4",
        format!("{}/{}", c.ip, c.prefix_len),
        c.gateway.map(|g| g.to_string()),
    )];
    let mut routes: Vec<Value> = c
        .gateway
        .map(|gw| json!({ "dst": "0.0.0.0/0", "gw": gw.to_string() }))
        .into_iter()
        .collect();
    if let (Some(ip6), Some(len)) = (c.ip6, c.prefix_len6) {
        ips.push(entry(
            "6",
            format!("{ip6}/{len}"),
            c.gateway6.map(|g| g.to_string()),
        ));
        if let Some(gw) = c.gateway6 {
            routes.push(json!({ "dst": "::/0", "gw": gw.to_string() }));
        }
    }
    let conf = dns.cloned().unwrap_or_default();
    let nameservers: Vec<String> = if c.dns.is_empty() {
        conf.nameservers
    } else {
        c.dns.iter().map(Ipv4Addr::to_string).collect()
    };
    let mut d = Map::new();
    if !nameservers.is_empty() {
        d.insert("nameservers".into(), json!(nameservers));
    }
    if let Some(domain) = conf.domain {
        d.insert("domain".into(), json!(domain));
    }
    if !conf.search.is_empty() {
        d.insert("search".into(), json!(conf.search));
    }
    if !conf.options.is_empty() {
        d.insert("options".into(), json!(conf.options));
    }
    json!({
        "cniVersion": cni_version,
        "interfaces": [Value::Object(host), container],
        "ips": ips,
        "routes": routes,
        "dns": Value::Object(d),
    })
}

/// What CHECK compares with a previous result: the container interface's MAC and the
/// addresses it lists for it. `None` when they agree, else what differs.
pub fn differs_from_prev(c: &Attached, prev: &Value) -> Option<String> {
    let interfaces = prev.get("interfaces").and_then(Value::as_array);
    let ours = interfaces.and_then(|ifs| {
        ifs.iter().position(|i| {
            i.get("sandbox")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
                && i.get("name").and_then(Value::as_str) == Some(c.ifname.as_str())
        })
    });
    let Some(index) = ours else {
        return Some(format!(
            "prevResult lists no interface {} in a sandbox",
            c.ifname
        ));
    };
    let prev_mac = interfaces
        .and_then(|ifs| ifs.get(index))
        .and_then(|i| i.get("mac"))
        .and_then(Value::as_str);
    if let Some(m) = prev_mac
        && !m.eq_ignore_ascii_case(&c.mac)
    {
        return Some(format!(
            "{} has MAC {} but prevResult says {m}",
            c.ifname, c.mac
        ));
    }
    let want = format!("{}/{}", c.ip, c.prefix_len);
    let addrs: Vec<&str> = prev
        .get("ips")
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter(|ip| ip.get("interface").and_then(Value::as_u64) == Some(index as u64))
                .filter_map(|ip| ip.get("address").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if !addrs.contains(&want.as_str()) {
        return Some(format!(
            "{} has {want} but prevResult lists {addrs:?}",
            c.ifname
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(gateway: Option<Ipv4Addr>, dns: Vec<Ipv4Addr>) -> Attached {
        Attached {
            name: "web".into(),
            network: "front".into(),
            port: "vsw3".into(),
            ip: Ipv4Addr::new(172, 20, 0, 2),
            mac: "02:42:ac:14:00:02".into(),
            netns: "/run/netns/web".into(),
            ifname: "eth0".into(),
            prefix_len: 16,
            gateway,
            dns,
            ip6: None,
            prefix_len6: None,
            gateway6: None,
        }
    }

    #[test]
    fn a_dual_stack_container_lists_both_addresses_and_default_routes() {
        let gw = Ipv4Addr::new(172, 20, 0, 1);
        let c = Attached {
            ip6: Some("fd00:20::2".parse().unwrap()),
            prefix_len6: Some(64),
            gateway6: Some("fd00:20::1".parse().unwrap()),
            ..attached(Some(gw), vec![gw])
        };
        let r = build(&c, "0.4.0", None, None);
        assert_eq!(r["ips"][1]["address"], "fd00:20::2/64");
        assert_eq!(r["ips"][1]["gateway"], "fd00:20::1");
        assert_eq!(r["ips"][1]["version"], "6");
        assert_eq!(r["ips"][1]["interface"], 1);
        assert_eq!(r["routes"][1]["dst"], "::/0");
        // The daemon's IPv4-only answer (no IPv6 fields) still reads.
        let v4: Attached = serde_json::from_value(json!({
            "name": "a", "network": "n", "port": "vsw1", "ip": "10.0.0.2",
            "mac": "02:42:0a:00:00:02", "ifname": "eth0", "prefix_len": 24
        }))
        .unwrap();
        assert_eq!(
            build(&v4, "1.0.0", None, None)["ips"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn result_has_the_spec_shape() {
        let gw = Ipv4Addr::new(172, 20, 0, 1);
        let conf = Dns {
            search: vec!["example.org".into()],
            ..Dns::default()
        };
        let r = build(
            &attached(Some(gw), vec![gw]),
            "1.0.0",
            Some("aa:bb:cc:dd:ee:ff"),
            Some(&conf),
        );
        assert_eq!(
            r,
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "vsw3", "mac": "aa:bb:cc:dd:ee:ff"},
                    {"name": "eth0", "mac": "02:42:ac:14:00:02", "sandbox": "/run/netns/web"}
                ],
                "ips": [{"address": "172.20.0.2/16", "gateway": "172.20.0.1", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "172.20.0.1"}],
                "dns": {"nameservers": ["172.20.0.1"], "search": ["example.org"]}
            })
        );
        assert_eq!(differs_from_prev(&attached(Some(gw), vec![]), &r), None);
    }

    #[test]
    fn internal_networks_have_no_route_and_040_has_ip_versions() {
        let r = build(&attached(None, vec![]), "0.4.0", None, None);
        assert_eq!(r["routes"], json!([]));
        assert_eq!(r["ips"][0]["version"], "4");
        assert!(r["ips"][0].get("gateway").is_none());
        assert!(r["interfaces"][0].get("mac").is_none());
        assert_eq!(r["dns"], json!({}));
    }

    #[test]
    fn check_names_what_differs() {
        let gw = Ipv4Addr::new(172, 20, 0, 1);
        let prev = build(&attached(Some(gw), vec![]), "1.0.0", None, None);
        let mut moved = attached(Some(gw), vec![]);
        moved.ip = Ipv4Addr::new(172, 20, 0, 3);
        assert!(
            differs_from_prev(&moved, &prev)
                .unwrap()
                .contains("172.20.0.3/16")
        );
        let mut remac = attached(Some(gw), vec![]);
        remac.mac = "02:00:00:00:00:01".into();
        assert!(differs_from_prev(&remac, &prev).unwrap().contains("MAC"));
        assert!(differs_from_prev(&remac, &json!({})).is_some());
    }
}
