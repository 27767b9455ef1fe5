//! The embedded DNS server of user-defined networks: the gateway address answers UDP port 53.
//!
//! Names of containers on the same network (and `NAME.vswitch.internal`) are answered from the
//! pipeline's own table; nothing else is known here. Other queries are forwarded: the query is
//! sent on to the first upstream resolver through masquerade like any other flow, with its
//! destination rewritten from the gateway to the resolver, and the answer comes back to the
//! container from the gateway address (conntrack undoes both rewrites). The default `bridge`
//! network has no embedded DNS, as in Docker.
//!
//! Owns [`DnsTable`], the names of one network; the gateway holds one per network that serves
//! DNS. The pipeline's `set_dns_table` replaces a whole table (start-up, network creation);
//! `dns_insert` and `dns_remove` change one name (connect, disconnect: O(log n), not a copy
//! of the network's names per container).
//!
//! Invariant: a network's table only ever holds its own containers, so a name on one network is
//! never answered on another.

use super::ipv6::Datagram6;
use super::{Datagram, Gateway};
use crate::config::NetworkId;
use crate::frame::Frame;
use crate::synth;
use packet::checksum::{internet_checksum, l4_checksum, l4_checksum_v6};
use packet::{Classified, Ipv4Info, L3};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The domain every network answers for, besides bare container names.
pub const DOMAIN: &str = "vswitch.internal";

/// What the gateway did with a DNS query (over IPv4: `A` is `Ipv4Addr`; over IPv6,
/// `Ipv6Addr`: a query is forwarded to a resolver of its own family).
pub(crate) enum DnsOutcome<A = Ipv4Addr> {
    /// Answered: the reply is on its way.
    Answered,
    /// Not a local name: forward to this upstream resolver.
    Forward(A),
    /// Garbage, or no resolver to forward to: drop, counted.
    Drop,
}

/// Names of the containers on one network.
#[derive(Debug, Default, Clone)]
pub struct DnsTable {
    /// IPv4 addresses sort before IPv6 ones: A and AAAA answers each keep address order.
    names: BTreeMap<String, Vec<IpAddr>>,
}

impl DnsTable {
    /// A table from (name, address) pairs; names are matched without case.
    pub fn new<A: Into<IpAddr>>(entries: impl IntoIterator<Item = (String, A)>) -> DnsTable {
        let mut table = DnsTable::default();
        for (name, ip) in entries {
            table.insert(&name, ip);
        }
        table
    }

    /// Adds `ip` to `name`. Its addresses stay in address order, as [`DnsTable::new`] gets
    /// them from the store's leases, so answers do not depend on the order of connects.
    pub fn insert(&mut self, name: &str, ip: impl Into<IpAddr>) {
        let ip = ip.into();
        let ips = self.names.entry(name.to_ascii_lowercase()).or_default();
        if let Err(at) = ips.binary_search(&ip) {
            ips.insert(at, ip);
        }
    }

    /// Removes `ip` from `name` (two containers whose names differ only in case share a
    /// name); the name goes with its last address. False if it was not there.
    pub fn remove(&mut self, name: &str, ip: impl Into<IpAddr>) -> bool {
        let ip = ip.into();
        let key = name.to_ascii_lowercase();
        let Some(ips) = self.names.get_mut(&key) else {
            return false;
        };
        let Some(at) = ips.iter().position(|&i| i == ip) else {
            return false;
        };
        ips.remove(at);
        if ips.is_empty() {
            self.names.remove(&key);
        }
        true
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True without names.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The addresses of `name` (as the resolver passes it: the domain stripped), or of a
    /// container whose own name ends in the domain (the host port's `host.vswitch.internal`).
    fn lookup(&self, name: &str) -> Option<Vec<IpAddr>> {
        self.names
            .get(name)
            .or_else(|| self.names.get(&format!("{name}.{DOMAIN}")))
            .cloned()
    }
}

impl Gateway {
    /// A UDP query to the gateway's port 53 from a port of `network`: answer it in place (the
    /// answer goes back out of the ingress port), or say where to forward it.
    pub(super) fn dns_query(
        &mut self,
        f: &mut Frame<'_>,
        network: NetworkId,
        dg: &mut Datagram,
    ) -> DnsOutcome {
        let (c, info) = (dg.c, dg.info);
        match self.dns_decision(network, &dg.data, &c) {
            Some(::dns::Decision::Answer(answer)) => {
                if build_reply(&mut dg.data, &c, &info, &answer) {
                    f.events().dns_answered += 1;
                    f.reply(std::mem::take(&mut dg.data));
                    DnsOutcome::Answered
                } else {
                    DnsOutcome::Drop
                }
            }
            Some(::dns::Decision::Forward) => forward_to(f, network, &f.topo.dns_upstream),
            Some(::dns::Decision::Drop) | None => DnsOutcome::Drop,
        }
    }

    /// [`Gateway::dns_query`] for a query over IPv6 to the gateway's IPv6 address: answered
    /// the same way, or forwarded to an IPv6 resolver (through NAT66, as IPv4 queries go
    /// through masquerade).
    pub(super) fn dns_query6(
        &mut self,
        f: &mut Frame<'_>,
        network: NetworkId,
        dg: &mut Datagram6,
    ) -> DnsOutcome<Ipv6Addr> {
        let c = dg.c;
        let L3::Ipv6(info) = c.l3 else {
            return DnsOutcome::Drop;
        };
        match self.dns_decision(network, &dg.data, &c) {
            Some(::dns::Decision::Answer(answer)) => {
                if build_reply6(&mut dg.data, &c, &info, &answer) {
                    f.events().dns_answered += 1;
                    f.reply(std::mem::take(&mut dg.data));
                    DnsOutcome::Answered
                } else {
                    DnsOutcome::Drop
                }
            }
            Some(::dns::Decision::Forward) => forward_to(f, network, &f.topo.dns_upstream6),
            Some(::dns::Decision::Drop) | None => DnsOutcome::Drop,
        }
    }

    /// What the DNS responder says of the UDP payload of `data` for `network`'s names; `None`
    /// when the network serves no DNS or the datagram has no payload.
    fn dns_decision(
        &self,
        network: NetworkId,
        data: &[u8],
        c: &Classified,
    ) -> Option<::dns::Decision> {
        let table = self.dns.get(&network)?;
        let query = data.get(c.l4_offset + 8..c.ip_end)?;
        // IPv4 addresses answer A queries, IPv6 ones AAAA (NODATA where a name has none).
        let lookup = |name: &str| table.lookup(name);
        let zone = ::dns::Zone {
            domain: Some(DOMAIN),
            lookup: &lookup,
        };
        Some(::dns::respond(query, &zone))
    }
}

/// The first of `upstream` to forward to, unless `network` is internal (nothing leaves it).
fn forward_to<A: Copy>(f: &Frame<'_>, network: NetworkId, upstream: &[A]) -> DnsOutcome<A> {
    match upstream.first() {
        Some(&up) if !f.topo.networks[usize::from(network.0)].internal => DnsOutcome::Forward(up),
        _ => DnsOutcome::Drop,
    }
}

/// [`build_reply`] for a query over IPv6 (no header checksum; the UDP checksum is mandatory).
fn build_reply6(
    data: &mut Vec<u8>,
    c: &Classified,
    info: &packet::Ipv6Info,
    answer: &[u8],
) -> bool {
    let (l3, l4) = (c.l3_offset, c.l4_offset);
    let Ok(udp_len) = u16::try_from(8 + answer.len()) else {
        return false;
    };
    let Ok(payload_len) = u16::try_from(l4 - l3 - packet::IPV6_HEADER_LEN + usize::from(udp_len))
    else {
        return false;
    };
    if data.len() < l4 + 8 {
        return false;
    }
    data.truncate(l4 + 8);
    data.extend_from_slice(answer);
    let (dst, src) = data.split_at_mut(6);
    dst.swap_with_slice(&mut src[..6]);
    data[l3 + 4..l3 + 6].copy_from_slice(&payload_len.to_be_bytes());
    data[l3 + 7] = synth::v6::ORIGIN_HOP_LIMIT;
    data[l3 + 8..l3 + 24].copy_from_slice(&info.dst.octets());
    data[l3 + 24..l3 + 40].copy_from_slice(&info.src.octets());
    let (sport, dport) = ([data[l4], data[l4 + 1]], [data[l4 + 2], data[l4 + 3]]);
    data[l4..l4 + 2].copy_from_slice(&dport);
    data[l4 + 2..l4 + 4].copy_from_slice(&sport);
    data[l4 + 4..l4 + 6].copy_from_slice(&udp_len.to_be_bytes());
    data[l4 + 6] = 0;
    data[l4 + 7] = 0;
    let sum = l4_checksum_v6(info.dst, info.src, 17, &data[l4..]);
    let sum = if sum == 0 { 0xffff } else { sum };
    data[l4 + 6..l4 + 8].copy_from_slice(&sum.to_be_bytes());
    true
}

/// Turns the query frame into the answer: Ethernet and IP addresses and ports swapped, the
/// payload replaced, lengths and checksums computed afresh. False if the frame is too odd.
fn build_reply(data: &mut Vec<u8>, c: &Classified, info: &Ipv4Info, answer: &[u8]) -> bool {
    let (l3, l4) = (c.l3_offset, c.l4_offset);
    let Ok(udp_len) = u16::try_from(8 + answer.len()) else {
        return false;
    };
    let Ok(total) = u16::try_from(l4 - l3 + usize::from(udp_len)) else {
        return false;
    };
    if data.len() < l4 + 8 {
        return false;
    }
    data.truncate(l4 + 8);
    data.extend_from_slice(answer);
    let (dst, src) = data.split_at_mut(6);
    dst.swap_with_slice(&mut src[..6]);
    data[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
    data[l3 + 8] = synth::ORIGIN_TTL;
    data[l3 + 12..l3 + 16].copy_from_slice(&info.dst.octets());
    data[l3 + 16..l3 + 20].copy_from_slice(&info.src.octets());
    data[l3 + 10] = 0;
    data[l3 + 11] = 0;
    let ip_sum = internet_checksum(&data[l3..l4]);
    data[l3 + 10..l3 + 12].copy_from_slice(&ip_sum.to_be_bytes());
    let (sport, dport) = ([data[l4], data[l4 + 1]], [data[l4 + 2], data[l4 + 3]]);
    data[l4..l4 + 2].copy_from_slice(&dport);
    data[l4 + 2..l4 + 4].copy_from_slice(&sport);
    data[l4 + 4..l4 + 6].copy_from_slice(&udp_len.to_be_bytes());
    data[l4 + 6] = 0;
    data[l4 + 7] = 0;
    let sum = l4_checksum(info.dst, info.src, 17, &data[l4..]);
    let sum = if sum == 0 { 0xffff } else { sum };
    data[l4 + 6..l4 + 8].copy_from_slice(&sum.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        Ipv4Addr::new(172, 18, 0, last).into()
    }

    #[test]
    fn one_name_at_a_time_builds_the_same_table() {
        // As the store lists them: by address.
        let leases = [
            ("web", ip(2)),
            ("DB", ip(3)),
            ("Web", ip(4)),
            ("cache", ip(5)),
        ];
        let whole = DnsTable::new(leases.iter().map(|&(n, a)| (n.to_string(), a)));
        let mut step = DnsTable::default();
        // Connected in another order than their addresses.
        for &(n, a) in leases.iter().rev() {
            step.insert(n, a);
        }
        assert_eq!(step.names, whole.names);
        assert_eq!(step.lookup("web"), Some(vec![ip(2), ip(4)]));
        assert_eq!(step.lookup("db"), Some(vec![ip(3)]));
        step.insert("web", ip(2));
        assert_eq!(step.lookup("web"), Some(vec![ip(2), ip(4)]), "idempotent");
        // "Web" leaves; "web" keeps its own address.
        assert!(step.remove("Web", ip(4)));
        assert!(!step.remove("Web", ip(4)));
        assert_eq!(step.lookup("web"), Some(vec![ip(2)]));
        assert!(step.remove("DB", ip(3)));
        assert_eq!(step.lookup("db"), None);
        let rest = DnsTable::new([("web".to_string(), ip(2)), ("cache".to_string(), ip(5))]);
        assert_eq!(step.names, rest.names);
        assert_eq!(step.len(), 2);
    }

    #[test]
    fn a_dual_stack_name_keeps_ipv4_before_ipv6_in_address_order() {
        let v6 = |s: &str| IpAddr::from(s.parse::<std::net::Ipv6Addr>().unwrap());
        let mut t = DnsTable::default();
        t.insert("web", v6("fd00::3"));
        t.insert("web", ip(3));
        t.insert("web", v6("fd00::2"));
        t.insert("web", ip(2));
        assert_eq!(
            t.lookup("web"),
            Some(vec![ip(2), ip(3), v6("fd00::2"), v6("fd00::3")])
        );
        assert!(t.remove("web", v6("fd00::2")));
        assert_eq!(t.lookup("web").map(|v| v.len()), Some(3));
    }

    #[test]
    fn a_name_in_the_domain_is_found_with_the_domain_stripped() {
        let t = DnsTable::new([(format!("host.{DOMAIN}"), ip(254))]);
        // `host.vswitch.internal` reaches the lookup as `host`.
        assert_eq!(t.lookup("host"), Some(vec![ip(254)]));
        assert_eq!(t.lookup("other"), None);
    }
}
