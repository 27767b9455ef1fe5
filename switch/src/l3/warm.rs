//! Cache warming for large conntrack tables: before a chunk of frames is processed, the flow
//! cache slots, conntrack entries and neighbor entries their routing will need are read, so
//! the CPU overlaps those cache misses across frames instead of taking them one frame at a
//! time (a software stand-in for a prefetch stage).
//!
//! Owns nothing and changes nothing: purely a performance hint over the [`Gateway`]'s tables.
//! It parses nothing either: the pipeline classifies each gateway-bound frame of the chunk
//! once, hands the result here, and passes the same result on to the gateway when the frame's
//! turn comes.

use super::Gateway;
use super::flow_cache::FlowKey;
use super::neighbor::Side;
use super::route::tuple_of;
use crate::config::Topology;
use crate::pipeline::Packet;
use conntrack::Direction;
use packet::{Classified, L3};

/// Frames warmed at a time.
pub(crate) const WARM_CHUNK: usize = 32;

impl Gateway {
    /// Reads, for every frame of `chunk` (at most [`WARM_CHUNK`]) that `parsed` classifies,
    /// the flow cache slot, conntrack entry and neighbor entries its processing will need,
    /// without changing anything. The probes are independent of each other and each pass is
    /// a short loop.
    #[inline(never)]
    pub(crate) fn warm(
        &self,
        topo: &Topology,
        now: u64,
        chunk: &[Packet],
        parsed: &[Option<Classified>],
    ) {
        let mut sink = 0u64;
        let mut keys = [None; WARM_CHUNK];
        for ((pkt, c), key) in chunk.iter().zip(parsed).zip(&mut keys) {
            if let Some(Classified {
                l3: L3::Ipv4(info),
                l4,
                ..
            }) = c
                && info.frag_offset == 0
                && let Some((tuple, _)) = tuple_of(info, l4)
            {
                let network = topo
                    .ports
                    .get(usize::from(pkt.port.0))
                    .and_then(|p| p.network);
                *key = Some((tuple, network.map(|n| n.0), pkt.port));
            }
        }
        // Gleaning looks the sender up on its network.
        for (k, net, _) in keys.iter().flatten() {
            if let Some(net) = net {
                sink += u64::from(
                    self.neighbors
                        .lookup(Side::Network(*net), k.src, now)
                        .is_some(),
                );
            }
        }
        // A cached flow needs its slot and its conntrack entry (tracked per packet); the rest
        // need the conntrack lookup and, for replies, the neighbor entry.
        let cached = !self.flows.bypassing();
        let mut misses = [None; WARM_CHUNK];
        for ((k, _, port), miss) in keys.iter().flatten().zip(&mut misses) {
            match self.flows.peek(FlowKey::new(*port, k)).filter(|_| cached) {
                Some(a) => sink = sink.wrapping_add(u64::from(self.ct.mark(a.id).is_some())),
                None => *miss = Some(k),
            }
        }
        let mut hits = [None; WARM_CHUNK];
        for (k, hit) in misses.iter().flatten().zip(&mut hits) {
            *hit = self.ct.peek_route(k);
        }
        // A reply toward a container: its MAC is looked up on the way out.
        for (original, mark, dir) in hits.iter().flatten() {
            if *dir == Direction::Reply
                && let Ok(net) = u16::try_from(*mark)
            {
                sink += u64::from(
                    self.neighbors
                        .lookup(Side::Network(net), original.src, now)
                        .is_some(),
                );
            }
        }
        std::hint::black_box(sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, PortId};
    use packet::{MacAddr, classify};
    use testkit::frames as build;

    #[test]
    fn warm_tolerates_any_frame_and_classification() {
        let cfg =
            Config::from_toml("[[network]]\nname='n'\n[[port]]\nname='a'\nkind='tap'\nnetwork='n'")
                .unwrap();
        let topo = Topology::new(&cfg).unwrap();
        let gw = Gateway::new(&topo);
        let frame = build::udp(
            MacAddr([2, 0, 0, 0, 0, 1]),
            MacAddr([2, 0, 0, 0, 0, 2]),
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
            1111,
            2222,
            b"x",
        );
        // Every truncation of the frame, frames on unknown ports, classifications that do not
        // match their frames: no panic.
        let mut batch: Vec<Packet> = (0..WARM_CHUNK - 1)
            .map(|n| Packet::new(PortId(0), frame[..n.min(frame.len())].to_vec()))
            .collect();
        batch.push(Packet::new(PortId(9), frame.clone()));
        let parsed: Vec<Option<Classified>> = (0..WARM_CHUNK)
            .map(|i| {
                if i % 2 == 0 {
                    classify(&frame).ok()
                } else {
                    None
                }
            })
            .collect();
        gw.warm(&topo, 0, &batch, &parsed);
        gw.warm(&topo, 0, &batch[..3], &parsed);
    }
}
