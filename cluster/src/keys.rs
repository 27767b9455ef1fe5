//! The key layout under the prefix, decoding of stored values and the pure rules (view
//! rebuild, candidate addresses, lowest free VNI) that the etcd-facing code uses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::{ClusterView, EndpointRecord, Error, HostRecord, NetworkRecord};

/// The lowest VNI handed out (below are left for statically configured overlays).
pub(crate) const VNI_MIN: u32 = 256;
/// One past the highest VNI: VXLAN carries 24 bits.
pub(crate) const VNI_END: u32 = 1 << 24;

/// Builds the keys of one prefix, so the layout is written down in one place.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (a trailing `/` is ignored).
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// Everything this crate stores: the watched and range-read prefix.
    pub(crate) fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    pub(crate) fn network(&self, name: &str) -> String {
        format!("{}/networks/{name}", self.prefix)
    }

    pub(crate) fn vnis(&self) -> String {
        format!("{}/vni/", self.prefix)
    }

    pub(crate) fn vni(&self, vni: u32) -> String {
        format!("{}/vni/{vni}", self.prefix)
    }

    pub(crate) fn endpoints(&self, network: &str) -> String {
        format!("{}/endpoints/{network}/", self.prefix)
    }

    pub(crate) fn endpoint(&self, network: &str, ip: Ipv4Addr) -> String {
        format!("{}/endpoints/{network}/{ip}", self.prefix)
    }

    pub(crate) fn host(&self, host: &str) -> String {
        format!("{}/hosts/{host}", self.prefix)
    }

    /// The part of `key` after the prefix, `None` for a key outside it.
    fn relative<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
    }

    /// Decodes one stored key/value into the record it holds. `None` for keys that carry no
    /// record of the view (`vni/…`, unknown kinds) and for garbage, which is logged: a bad value
    /// someone put into etcd must not stop the other hosts' views.
    pub(crate) fn decode(&self, key: &[u8], value: &[u8]) -> Option<Record> {
        let key = std::str::from_utf8(key).ok()?;
        let rel = self.relative(key)?;
        let (kind, _) = rel.split_once('/')?;
        let decoded = match kind {
            "networks" => serde_json::from_slice(value).map(Record::Network),
            "endpoints" => serde_json::from_slice(value).map(Record::Endpoint),
            "hosts" => serde_json::from_slice(value).map(Record::Host),
            _ => return None,
        };
        match decoded {
            Ok(rec) => Some(rec),
            Err(e) => {
                tracing::warn!("cluster store: skipping unreadable value at {key}: {e}");
                None
            }
        }
    }
}

/// One decoded record of the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    Network(NetworkRecord),
    Endpoint(EndpointRecord),
    Host(HostRecord),
}

/// The decoded contents of the prefix, kept up to date from the watch.
#[derive(Clone, Debug, Default)]
pub(crate) struct State {
    records: BTreeMap<Vec<u8>, Record>,
}

impl State {
    /// Records the value now at `key` (garbage removes what was there).
    pub(crate) fn put(&mut self, keys: &Keys, key: &[u8], value: &[u8]) {
        match keys.decode(key, value) {
            Some(rec) => {
                self.records.insert(key.to_vec(), rec);
            }
            None => {
                self.records.remove(key);
            }
        }
    }

    /// Forgets `key` (deleted, or expired with its lease).
    pub(crate) fn delete(&mut self, key: &[u8]) {
        self.records.remove(key);
    }

    /// The whole view, sorted as [`ClusterView`] documents.
    pub(crate) fn view(&self, revision: i64) -> ClusterView {
        let mut view = ClusterView {
            revision,
            ..ClusterView::default()
        };
        for rec in self.records.values() {
            match rec {
                Record::Network(n) => view.networks.push(n.clone()),
                Record::Endpoint(e) => view.endpoints.push(e.clone()),
                Record::Host(h) => view.hosts.push(h.clone()),
            }
        }
        view.networks.sort_by(|a, b| a.name.cmp(&b.name));
        view.endpoints
            .sort_by(|a, b| (&a.network, a.ip).cmp(&(&b.network, b.ip)));
        view.hosts.sort_by(|a, b| a.host.cmp(&b.host));
        view
    }
}

/// Parses and checks a network's subnet and gateway.
pub(crate) fn parse_subnet(subnet: &str, gateway: Ipv4Addr) -> Result<Ipv4Net, Error> {
    let net: Ipv4Net = subnet.parse().map_err(|_| {
        Error::Invalid(format!(
            "subnet {subnet:?} is not an IPv4 network: write it like 10.77.0.0/24"
        ))
    })?;
    let net = net.trunc();
    if !net.contains(&gateway) {
        return Err(Error::Invalid(format!(
            "gateway {gateway} is outside subnet {net}: pick an address inside it"
        )));
    }
    Ok(net)
}

/// Checks an address asked for by the user: a host address of `net` other than the gateway.
pub(crate) fn check_requested(net: Ipv4Net, gateway: Ipv4Addr, ip: Ipv4Addr) -> Result<(), Error> {
    if !net.contains(&ip) {
        return Err(Error::Invalid(format!(
            "address {ip} is outside subnet {net}: pick one inside it"
        )));
    }
    if ip == gateway {
        return Err(Error::Invalid(format!(
            "address {ip} is the gateway of {net}: pick another one"
        )));
    }
    if net.prefix_len() < 31 && (ip == net.network() || ip == net.broadcast()) {
        return Err(Error::Invalid(format!(
            "address {ip} is the network or broadcast address of {net}: pick a host address"
        )));
    }
    Ok(())
}

/// The addresses an allocation tries, lowest first: host addresses of `net` that are neither
/// the gateway nor in `used`.
pub(crate) fn candidates<'a>(
    net: Ipv4Net,
    gateway: Ipv4Addr,
    used: &'a BTreeSet<Ipv4Addr>,
) -> impl Iterator<Item = Ipv4Addr> + 'a {
    net.hosts()
        .filter(move |ip| *ip != gateway && !used.contains(ip))
}

/// The lowest VNI in [`VNI_MIN`, [`VNI_END`]) not in `used`.
pub(crate) fn lowest_free_vni(used: &BTreeSet<u32>) -> Option<u32> {
    (VNI_MIN..VNI_END).find(|v| !used.contains(v))
}

/// The address at the end of an endpoint key (`…/endpoints/{network}/{ip}`).
pub(crate) fn ip_of_key(key: &[u8]) -> Option<Ipv4Addr> {
    let key = std::str::from_utf8(key).ok()?;
    key.rsplit('/').next()?.parse().ok()
}

/// The VNI at the end of a `vni/{vni}` key.
pub(crate) fn vni_of_key(key: &[u8]) -> Option<u32> {
    let key = std::str::from_utf8(key).ok()?;
    key.rsplit('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(network: &str, ip: [u8; 4], host: &str) -> EndpointRecord {
        EndpointRecord {
            network: network.into(),
            ip: Ipv4Addr::from(ip),
            mac: "02:42:0a:00:00:01".into(),
            name: "c".into(),
            host: host.into(),
            vtep: Ipv4Addr::new(192, 168, 0, 1),
        }
    }

    #[test]
    fn key_layout() {
        let k = Keys::new("/vswitch/v1/");
        assert_eq!(k.all(), "/vswitch/v1/");
        assert_eq!(k.network("blue"), "/vswitch/v1/networks/blue");
        assert_eq!(k.vni(256), "/vswitch/v1/vni/256");
        assert_eq!(k.vnis(), "/vswitch/v1/vni/");
        assert_eq!(k.endpoints("blue"), "/vswitch/v1/endpoints/blue/");
        assert_eq!(
            k.endpoint("blue", Ipv4Addr::new(10, 77, 0, 2)),
            "/vswitch/v1/endpoints/blue/10.77.0.2"
        );
        assert_eq!(k.host("h1"), "/vswitch/v1/hosts/h1");
        assert_eq!(
            ip_of_key(b"/p/endpoints/blue/10.0.0.9"),
            Some(Ipv4Addr::new(10, 0, 0, 9))
        );
        assert_eq!(vni_of_key(b"/p/vni/300"), Some(300));
    }

    #[test]
    fn view_is_rebuilt_sorted_and_skips_garbage() {
        let k = Keys::new("/p");
        let mut s = State::default();
        let put = |s: &mut State, key: String, v: Vec<u8>| s.put(&k, key.as_bytes(), &v);
        let e = |r: &EndpointRecord| serde_json::to_vec(r).unwrap_or_default();
        put(
            &mut s,
            k.endpoint("b", Ipv4Addr::new(10, 0, 0, 10)),
            e(&ep("b", [10, 0, 0, 10], "h1")),
        );
        put(
            &mut s,
            k.endpoint("b", Ipv4Addr::new(10, 0, 0, 9)),
            e(&ep("b", [10, 0, 0, 9], "h2")),
        );
        put(
            &mut s,
            k.endpoint("a", Ipv4Addr::new(10, 0, 0, 99)),
            e(&ep("a", [10, 0, 0, 99], "h1")),
        );
        put(
            &mut s,
            k.endpoint("a", Ipv4Addr::new(10, 0, 0, 5)),
            b"{not json".to_vec(),
        );
        put(
            &mut s,
            k.host("h2"),
            br#"{"host":"h2","vtep":"192.168.0.2"}"#.to_vec(),
        );
        put(
            &mut s,
            k.host("h1"),
            br#"{"host":"h1","vtep":"192.168.0.1"}"#.to_vec(),
        );
        put(&mut s, k.host("h3"), b"garbage".to_vec());
        put(&mut s, k.vni(256), b"b".to_vec());
        let net = NetworkRecord {
            name: "b".into(),
            subnet: "10.0.0.0/24".into(),
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            vni: 256,
            icc: true,
            internal: false,
            created_by: "h1".into(),
        };
        put(
            &mut s,
            k.network("b"),
            serde_json::to_vec(&net).unwrap_or_default(),
        );
        let v = s.view(42);
        assert_eq!(v.revision, 42);
        assert_eq!(v.networks, vec![net]);
        let order: Vec<(String, Ipv4Addr)> = v
            .endpoints
            .iter()
            .map(|e| (e.network.clone(), e.ip))
            .collect();
        assert_eq!(
            order,
            vec![
                ("a".into(), Ipv4Addr::new(10, 0, 0, 99)),
                ("b".into(), Ipv4Addr::new(10, 0, 0, 9)),
                ("b".into(), Ipv4Addr::new(10, 0, 0, 10)),
            ]
        );
        let hosts: Vec<&str> = v.hosts.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(hosts, vec!["h1", "h2"]);
        // Garbage over a good value removes it; a delete removes it too.
        put(&mut s, k.host("h1"), b"[]".to_vec());
        s.delete(k.host("h2").as_bytes());
        assert!(s.view(43).hosts.is_empty());
    }

    #[test]
    fn candidate_order_skips_gateway_and_used() {
        let net: Ipv4Net = "10.0.0.0/29".parse().unwrap_or_default();
        let used: BTreeSet<Ipv4Addr> = [Ipv4Addr::new(10, 0, 0, 3)].into();
        let got: Vec<Ipv4Addr> = candidates(net, Ipv4Addr::new(10, 0, 0, 1), &used).collect();
        let want: Vec<Ipv4Addr> = [2, 4, 5, 6]
            .iter()
            .map(|d| Ipv4Addr::new(10, 0, 0, *d))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn subnet_and_requested_checks() {
        let gw = Ipv4Addr::new(10, 77, 0, 1);
        assert!(matches!(
            parse_subnet("nonsense", gw),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            parse_subnet("10.78.0.0/24", gw),
            Err(Error::Invalid(_))
        ));
        let net = parse_subnet("10.77.0.9/24", gw).unwrap_or_default();
        assert_eq!(net.to_string(), "10.77.0.0/24");
        assert!(check_requested(net, gw, Ipv4Addr::new(10, 77, 0, 2)).is_ok());
        for bad in [
            [10, 77, 0, 0],
            [10, 77, 0, 255],
            [10, 77, 0, 1],
            [10, 78, 0, 2],
        ] {
            assert!(
                check_requested(net, gw, Ipv4Addr::from(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn vni_rule() {
        assert_eq!(lowest_free_vni(&BTreeSet::new()), Some(256));
        assert_eq!(lowest_free_vni(&[256, 257, 259].into()), Some(258));
    }
}
