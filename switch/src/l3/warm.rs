//! Cache warming for large conntrack tables: before a chunk of frames is processed, the flow
//! cache slots, conntrack entries and neighbor entries their routing will need are read, so
//! the CPU overlaps those cache misses across frames instead of taking them one frame at a
//! time (a software stand-in for a prefetch stage).
//!
//! Owns nothing and changes nothing: purely a performance hint over the [`Gateway`]'s tables. A
//! frame this cheap parser misreads only warms the wrong lines.

use super::Gateway;
use super::flow_cache::FlowKey;
use super::neighbor::Side;
use crate::config::{PortId, Topology};
use crate::pipeline::Packet;
use conntrack::{Direction, Tuple};
use packet::{ETH_HEADER_LEN, L4Proto};
use std::net::Ipv4Addr;

/// Frames warmed at a time.
pub(crate) const WARM_CHUNK: usize = 32;

impl Gateway {
    /// Reads, for every frame of `input`, the conntrack entry and the neighbor entries its
    /// processing will need, without changing anything. The probes are independent of each
    /// other and each pass is a short loop.
    #[inline(never)]
    pub(crate) fn warm(&self, topo: &Topology, now: u64, input: &[Packet]) {
        const CHUNK: usize = WARM_CHUNK;
        let mut sink = 0u64;
        for chunk in input.chunks(CHUNK) {
            let mut keys = [(
                Tuple::new(
                    L4Proto::Udp,
                    Ipv4Addr::UNSPECIFIED,
                    0,
                    Ipv4Addr::UNSPECIFIED,
                    0,
                ),
                None,
                PortId(0),
            ); CHUNK];
            let mut n = 0;
            for pkt in chunk {
                if let Some(k) = warm_key(topo, pkt) {
                    keys[n] = k;
                    n += 1;
                }
            }
            let keys = &keys[..n];
            // Gleaning looks the sender up on its network.
            for (k, net, _) in keys {
                if let Some(net) = net {
                    sink += u64::from(
                        self.neighbors
                            .lookup(Side::Network(*net), k.src, now)
                            .is_some(),
                    );
                }
            }
            // A cached flow needs its slot and its conntrack entry (tracked per packet); the
            // rest need the conntrack lookup and, for replies, the neighbor entry.
            let mut misses = [None; CHUNK];
            let cached = !self.flows.bypassing();
            for ((k, _, port), miss) in keys.iter().zip(&mut misses) {
                match self.flows.peek(FlowKey::new(*port, k)).filter(|_| cached) {
                    Some(a) => sink = sink.wrapping_add(u64::from(self.ct.mark(a.id).is_some())),
                    None => *miss = Some(k),
                }
            }
            let mut hits = [None; CHUNK];
            for (k, hit) in misses.iter().flatten().zip(&mut hits) {
                *hit = self.ct.peek(k);
            }
            // A reply toward a container: its MAC is looked up on the way out.
            for (e, dir) in hits.iter().flatten() {
                sink = sink.wrapping_add(e.expires_at);
                if *dir == Direction::Reply
                    && let Ok(net) = u16::try_from(e.mark)
                {
                    sink += u64::from(
                        self.neighbors
                            .lookup(Side::Network(net), e.original.src, now)
                            .is_some(),
                    );
                }
            }
        }
        std::hint::black_box(sink);
    }
}

/// The conntrack key of an IPv4 TCP/UDP/ICMP frame (not a later fragment), and the network
/// it enters from.
fn warm_key(topo: &Topology, pkt: &Packet) -> Option<(Tuple, Option<u16>, PortId)> {
    let d = pkt.data.as_slice();
    let h = d.get(..ETH_HEADER_LEN + 20)?;
    if h[12..14] != [0x08, 0x00] || (h[20] & 0x1f) | h[21] != 0 {
        return None;
    }
    let proto = L4Proto::from_number(h[23])?;
    let src = Ipv4Addr::new(h[26], h[27], h[28], h[29]);
    let dst = Ipv4Addr::new(h[30], h[31], h[32], h[33]);
    let l4 = ETH_HEADER_LEN + usize::from(h[14] & 0x0f) * 4;
    let t = d.get(l4..l4 + 8)?;
    let (src_port, dst_port) = match proto {
        L4Proto::Icmp => {
            let id = u16::from_be_bytes([t[4], t[5]]);
            (id, id)
        }
        _ => (
            u16::from_be_bytes([t[0], t[1]]),
            u16::from_be_bytes([t[2], t[3]]),
        ),
    };
    let network = topo.ports.get(usize::from(pkt.port.0))?.network;
    Some((
        Tuple::new(proto, src, src_port, dst, dst_port),
        network.map(|n| n.0),
        pkt.port,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use packet::MacAddr;
    use testkit::frames as build;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    #[test]
    fn warm_parses_keys_and_tolerates_any_frame() {
        let cfg =
            Config::from_toml("[[network]]\nname='n'\n[[port]]\nname='a'\nkind='tap'\nnetwork='n'")
                .unwrap();
        let topo = Topology::new(&cfg).unwrap();
        let gw = Gateway::new(&topo);
        let frame = build::udp(
            mac(1),
            mac(2),
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
            1111,
            2222,
            b"x",
        );
        let pkt = Packet::new(PortId(0), frame.clone());
        let (key, net, port) = warm_key(&topo, &pkt).unwrap();
        assert_eq!(port, PortId(0));
        assert_eq!(
            key,
            Tuple::new(
                L4Proto::Udp,
                [10, 0, 0, 1].into(),
                1111,
                [10, 0, 0, 2].into(),
                2222
            )
        );
        assert_eq!(net, Some(0));
        // Every truncation of the frame, and frames on unknown ports: no panic.
        let mut batch: Vec<Packet> = (0..frame.len())
            .map(|n| Packet::new(PortId(0), frame[..n].to_vec()))
            .collect();
        batch.push(Packet::new(PortId(9), frame));
        gw.warm(&topo, 0, &batch);
    }
}
