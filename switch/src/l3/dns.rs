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
//! DNS, and the pipeline's `set_dns_table` replaces them.
//!
//! Invariant: a network's table only ever holds its own containers, so a name on one network is
//! never answered on another.

use super::{Datagram, Gateway};
use crate::config::NetworkId;
use crate::frame::Frame;
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

impl Gateway {
    /// A UDP query to the gateway's port 53 from a port of `network`: answer it in place (the
    /// answer goes back out of the ingress port), or say where to forward it.
    pub(super) fn dns_query(
        &mut self,
        f: &mut Frame<'_>,
        network: NetworkId,
        dg: &mut Datagram,
    ) -> DnsOutcome {
        let Some(table) = self.dns.get(&network) else {
            return DnsOutcome::Drop;
        };
        let (c, info) = (&dg.c, &dg.info);
        let payload_at = c.l4_offset + 8;
        let Some(query) = dg.data.get(payload_at..c.ip_end) else {
            return DnsOutcome::Drop;
        };
        let lookup = |name: &str| table.lookup(name);
        let zone = ::dns::Zone {
            domain: Some(DOMAIN),
            lookup: &lookup,
        };
        match ::dns::respond(query, &zone) {
            ::dns::Decision::Answer(answer) => {
                if build_reply(&mut dg.data, c, info, &answer) {
                    f.events().dns_answered += 1;
                    f.reply(std::mem::take(&mut dg.data));
                    DnsOutcome::Answered
                } else {
                    DnsOutcome::Drop
                }
            }
            ::dns::Decision::Forward => match f.topo.dns_upstream.first() {
                Some(&up) if !f.topo.networks[usize::from(network.0)].internal => {
                    DnsOutcome::Forward(up)
                }
                _ => DnsOutcome::Drop,
            },
            ::dns::Decision::Drop => DnsOutcome::Drop,
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
