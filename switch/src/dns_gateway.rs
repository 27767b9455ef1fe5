//! The embedded DNS server of user-defined networks: the gateway address answers UDP port 53.
//!
//! Names of containers on the same network (and `NAME.vswitch.internal`) are answered from the
//! pipeline's own table; nothing else is known here. Other queries are forwarded: the query is
//! sent on to the first upstream resolver through masquerade like any other flow, with its
//! destination rewritten from the gateway to the resolver, and the answer comes back to the
//! container from the gateway address (conntrack undoes both rewrites). The default `bridge`
//! network has no embedded DNS, as in Docker.
//!
//! Invariant: a network's table only ever holds its own containers, so a name on one network is
//! never answered on another.

use crate::config::NetworkId;
use crate::pipeline::{Packet, Pipeline};
use crate::synth;
use packet::checksum::{internet_checksum, l4_checksum};
use packet::{Classified, Ipv4Info};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The domain every network answers for, besides bare container names.
pub const DOMAIN: &str = "vswitch.internal";

/// What the gateway did with a DNS query.
pub(crate) enum DnsOutcome {
    /// Answered: the reply is on its way.
    Answered,
    /// Not a local name: forward to this upstream resolver.
    Forward(Ipv4Addr),
    /// Garbage, or no resolver to forward to: drop, counted.
    Drop,
}

/// Names of the containers on one network.
#[derive(Debug, Default, Clone)]
pub struct DnsTable {
    names: BTreeMap<String, Vec<Ipv4Addr>>,
}

impl DnsTable {
    /// A table from (name, address) pairs; names are matched without case.
    pub fn new(entries: impl IntoIterator<Item = (String, Ipv4Addr)>) -> DnsTable {
        let mut names: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
        for (name, ip) in entries {
            names.entry(name.to_ascii_lowercase()).or_default().push(ip);
        }
        DnsTable { names }
    }

    fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        self.names.get(name).cloned()
    }
}

impl Pipeline {
    /// Replaces the DNS table of `network` (the control plane calls this on every connect and
    /// disconnect). A network without a table has no embedded DNS.
    pub fn set_dns_table(&mut self, network: NetworkId, table: Option<DnsTable>) {
        match table {
            Some(t) => {
                self.dns.insert(network, t);
            }
            None => {
                self.dns.remove(&network);
            }
        }
    }

    /// Resolvers that forwarded queries go to (the first one is used).
    pub fn set_dns_upstream(&mut self, resolvers: Vec<Ipv4Addr>) {
        self.topo.dns_upstream = resolvers;
    }

    /// Whether `network` serves DNS on its gateway.
    pub(crate) fn serves_dns(&self, network: NetworkId) -> bool {
        self.dns.contains_key(&network)
    }

    /// A UDP query to the gateway's port 53: answer it in place, or say where to forward it.
    pub(crate) fn gateway_dns(
        &mut self,
        network: NetworkId,
        ingress: crate::PortId,
        data: &mut Vec<u8>,
        c: &Classified,
        info: &Ipv4Info,
        output: &mut Vec<Packet>,
    ) -> DnsOutcome {
        let Some(table) = self.dns.get(&network) else {
            return DnsOutcome::Drop;
        };
        let payload_at = c.l4_offset + 8;
        let Some(query) = data.get(payload_at..c.ip_end) else {
            return DnsOutcome::Drop;
        };
        let lookup = |name: &str| table.lookup(name);
        let zone = dns::Zone {
            domain: Some(DOMAIN),
            lookup: &lookup,
        };
        match dns::respond(query, &zone) {
            dns::Decision::Answer(answer) => {
                if build_reply(data, c, info, &answer) {
                    self.bridge.dns_answered += 1;
                    self.emit(
                        Packet {
                            port: ingress,
                            data: std::mem::take(data),
                        },
                        output,
                    );
                    DnsOutcome::Answered
                } else {
                    DnsOutcome::Drop
                }
            }
            dns::Decision::Forward => match self.topo.dns_upstream.first() {
                Some(&up) if !self.topo.networks[usize::from(network.0)].internal => {
                    DnsOutcome::Forward(up)
                }
                _ => DnsOutcome::Drop,
            },
            dns::Decision::Drop => DnsOutcome::Drop,
        }
    }
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
