//! Overlay networks: one L2 network over several hosts, carried between them in VXLAN
//! ([`wire`], RFC 7348) through each host's uplink; this host's uplink address is its VTEP.
//!
//! Each overlay network has a port of kind [`crate::PortKind::Overlay`] that stands for every
//! other host: the bridge floods to it and forwards to it like to any port, and decapsulated
//! frames come in on it, so split horizon (nothing goes back out of the port it came in on)
//! keeps a remote frame from being sent to the remote hosts again. What leaves through it is
//! encapsulated by the pipeline's overlay stage to:
//! - the VTEP of the destination MAC: an endpoint the control plane gave (the cluster's
//!   MAC → VTEP records) or one learned from a decapsulated frame's inner source;
//! - otherwise (broadcast, multicast, unknown unicast) every VTEP of the network's flood list:
//!   head-end replication, one copy per remote host.
//!
//! Frames from a network's gateway MAC never cross: every host has the network's gateway, with
//! the same address and MAC, and routes its own containers' traffic out of its own uplink.
//! ARP requests for a remote endpoint's address are answered here (ARP suppression) when the
//! control plane gave its MAC, so they need not be flooded to every host.
//!
//! Owns: per overlay network, the flood list, the endpoints (given and learned, the learned
//! ones aged like FDB entries and capped), and frames waiting for a VTEP's next hop to answer
//! ARP. Decapsulation accepts only VTEPs the network knows (its flood list and its endpoints'
//! VTEPs), so a host outside the overlay cannot inject frames into it.

pub mod wire;

use crate::config::{NetworkId, PortId};
use packet::{ETH_HEADER_LEN, MacAddr};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use std::net::Ipv4Addr;

/// Remote MACs learned per network at most (a peer cannot grow the table without bound).
pub const MAX_LEARNED: usize = 65_536;
/// Frames held per VTEP next hop while its ARP is pending.
const MAX_WAITING: usize = 16;
/// How long frames wait for a VTEP's next hop to resolve.
const WAIT_TIMEOUT: u64 = 3_000_000_000;
/// Minimum time between two ARP requests for one next hop.
const ASK_EVERY: u64 = 1_000_000_000;

/// A remote endpoint: where frames to its MAC go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Endpoint {
    vtep: Ipv4Addr,
    ip: Option<Ipv4Addr>,
    /// When it was last seen, for a learned one; `None` for one the control plane gave.
    learned_at: Option<u64>,
}

/// One overlay network.
#[derive(Debug)]
struct OverlayNet {
    vni: u32,
    port: PortId,
    /// The flood list, as given.
    peers: Vec<Ipv4Addr>,
    /// Remote endpoints by MAC.
    endpoints: FxHashMap<MacAddr, Endpoint>,
    /// Given endpoints by address, for ARP suppression.
    by_ip: FxHashMap<Ipv4Addr, MacAddr>,
    /// VTEPs decapsulation accepts: the flood list and the given endpoints' VTEPs.
    accepted: FxHashSet<Ipv4Addr>,
    learned: usize,
}

impl OverlayNet {
    fn recompute_accepted(&mut self) {
        self.accepted = self.peers.iter().copied().collect();
        self.accepted.extend(
            self.endpoints
                .values()
                .filter(|e| e.learned_at.is_none())
                .map(|e| e.vtep),
        );
    }
}

/// Encapsulated frames waiting for one next hop's MAC.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    pub(crate) frames: Vec<Vec<u8>>,
    pub(crate) since: u64,
    pub(crate) asked: u64,
}

/// Where a frame toward the overlay goes.
pub(crate) enum Targets<'a> {
    /// One VTEP.
    One(Ipv4Addr),
    /// Every VTEP of the flood list.
    Flood(&'a [Ipv4Addr]),
}

/// The overlay state of one pipeline.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    nets: FxHashMap<NetworkId, OverlayNet>,
    by_vni: FxHashMap<u32, NetworkId>,
    /// Encapsulated frames per next hop, waiting for ARP.
    pub(crate) waiting: FxHashMap<Ipv4Addr, Waiting>,
    /// The next outer IPv4 identification.
    ip_id: u16,
    /// Learned entries live this long without news (the bridge's aging).
    aging: u64,
    /// When learned entries were last swept.
    last_sweep: u64,
}

/// One overlay network's state, for `vswitch overlay` and JSON output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OverlayRow {
    /// The network's name.
    pub network: String,
    /// Its VNI.
    pub vni: u32,
    /// Its flood list.
    pub peers: Vec<Ipv4Addr>,
    /// Its remote endpoints, by MAC.
    pub endpoints: Vec<OverlayEndpointRow>,
}

/// A remote endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OverlayEndpointRow {
    /// Its MAC.
    pub mac: String,
    /// Its address, when the control plane gave it.
    pub ip: Option<Ipv4Addr>,
    /// The VTEP of its host.
    pub vtep: Ipv4Addr,
    /// `cluster` (given by the control plane) or `learned` (from its traffic).
    pub origin: &'static str,
}

impl Overlay {
    /// No overlay networks; learned entries age after `aging` ns.
    pub(crate) fn new(aging: u64) -> Overlay {
        Overlay {
            aging,
            ..Overlay::default()
        }
    }

    /// Whether any network is an overlay (the pipeline skips the stage otherwise).
    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        !self.nets.is_empty()
    }

    /// Makes `network` an overlay with `vni`, whose remote side is `port`.
    pub(crate) fn add(&mut self, network: NetworkId, vni: u32, port: PortId, peers: &[Ipv4Addr]) {
        let mut net = OverlayNet {
            vni,
            port,
            peers: Vec::new(),
            endpoints: FxHashMap::default(),
            by_ip: FxHashMap::default(),
            accepted: FxHashSet::default(),
            learned: 0,
        };
        net.peers = sorted(peers);
        net.recompute_accepted();
        self.nets.insert(network, net);
        self.by_vni.insert(vni, network);
    }

    /// Forgets `network`; its overlay port, if it was one.
    pub(crate) fn remove(&mut self, network: NetworkId) -> Option<PortId> {
        let net = self.nets.remove(&network)?;
        self.by_vni.remove(&net.vni);
        Some(net.port)
    }

    /// The overlay port of `network`, if it is an overlay network.
    #[inline]
    pub(crate) fn port(&self, network: NetworkId) -> Option<PortId> {
        self.nets.get(&network).map(|n| n.port)
    }

    /// The VNI of `network`.
    pub(crate) fn vni(&self, network: NetworkId) -> Option<u32> {
        self.nets.get(&network).map(|n| n.vni)
    }

    /// Whether `vni` is taken by a network.
    pub(crate) fn has_vni(&self, vni: u32) -> bool {
        self.by_vni.contains_key(&vni)
    }

    /// The network of `vni` and its overlay port, if decapsulation may take a frame from
    /// `vtep` into it: `Err(true)` for an unknown VNI, `Err(false)` for a VTEP it does not know.
    pub(crate) fn accept(&self, vni: u32, vtep: Ipv4Addr) -> Result<(NetworkId, PortId), bool> {
        let id = *self.by_vni.get(&vni).ok_or(true)?;
        let net = self.nets.get(&id).ok_or(true)?;
        if !net.accepted.contains(&vtep) {
            return Err(false);
        }
        Ok((id, net.port))
    }

    /// Replaces `network`'s flood list; false if it is not an overlay network.
    pub(crate) fn set_peers(&mut self, network: NetworkId, peers: &[Ipv4Addr]) -> bool {
        let Some(net) = self.nets.get_mut(&network) else {
            return false;
        };
        net.peers = sorted(peers);
        net.recompute_accepted();
        true
    }

    /// Records the control plane's word that `mac` (at `ip`) is behind `vtep`.
    pub(crate) fn set_endpoint(
        &mut self,
        network: NetworkId,
        mac: MacAddr,
        ip: Option<Ipv4Addr>,
        vtep: Ipv4Addr,
    ) -> bool {
        let Some(net) = self.nets.get_mut(&network) else {
            return false;
        };
        let old = net.endpoints.insert(
            mac,
            Endpoint {
                vtep,
                ip,
                learned_at: None,
            },
        );
        match old {
            Some(Endpoint {
                learned_at: Some(_),
                ..
            }) => net.learned -= 1,
            Some(Endpoint { ip: Some(old), .. }) if net.by_ip.get(&old) == Some(&mac) => {
                net.by_ip.remove(&old);
            }
            _ => {}
        }
        if let Some(ip) = ip {
            net.by_ip.insert(ip, mac);
        }
        net.recompute_accepted();
        true
    }

    /// Forgets a remote endpoint (given or learned); false if it was not there.
    pub(crate) fn remove_endpoint(&mut self, network: NetworkId, mac: MacAddr) -> bool {
        let Some(net) = self.nets.get_mut(&network) else {
            return false;
        };
        let Some(e) = net.endpoints.remove(&mac) else {
            return false;
        };
        if e.learned_at.is_some() {
            net.learned -= 1;
        }
        if let Some(ip) = e.ip
            && net.by_ip.get(&ip) == Some(&mac)
        {
            net.by_ip.remove(&ip);
        }
        net.recompute_accepted();
        true
    }

    /// Learns that `mac` is behind `vtep` (a decapsulated frame's inner source). A given
    /// endpoint is never overridden by traffic. False when the cap kept it out.
    pub(crate) fn learn(
        &mut self,
        network: NetworkId,
        mac: MacAddr,
        vtep: Ipv4Addr,
        now: u64,
    ) -> bool {
        let Some(net) = self.nets.get_mut(&network) else {
            return true;
        };
        match net.endpoints.get_mut(&mac) {
            Some(e) if e.learned_at.is_none() => true,
            Some(e) => {
                e.vtep = vtep;
                e.learned_at = Some(now);
                true
            }
            None if net.learned >= MAX_LEARNED => false,
            None => {
                net.learned += 1;
                net.endpoints.insert(
                    mac,
                    Endpoint {
                        vtep,
                        ip: None,
                        learned_at: Some(now),
                    },
                );
                true
            }
        }
    }

    /// Whether frames to unicast `mac` on `network` have a VTEP (so need not be flooded).
    #[inline]
    pub(crate) fn knows(&self, network: NetworkId, mac: MacAddr, now: u64) -> bool {
        self.nets
            .get(&network)
            .and_then(|n| n.endpoints.get(&mac))
            .is_some_and(|e| self.alive(e, now))
    }

    fn alive(&self, e: &Endpoint, now: u64) -> bool {
        e.learned_at
            .is_none_or(|t| now.saturating_sub(t) < self.aging)
    }

    /// Where a frame to `dst` on `network` goes, with the network's VNI.
    pub(crate) fn targets(
        &self,
        network: NetworkId,
        dst: MacAddr,
        now: u64,
    ) -> Option<(u32, Targets<'_>)> {
        let net = self.nets.get(&network)?;
        let known = (!dst.is_multicast())
            .then(|| net.endpoints.get(&dst))
            .flatten()
            .filter(|e| self.alive(e, now));
        Some(match known {
            Some(e) => (net.vni, Targets::One(e.vtep)),
            None => (net.vni, Targets::Flood(&net.peers)),
        })
    }

    /// ARP suppression: the reply to `request` (an ARP request frame) when it asks for a
    /// remote endpoint's address the control plane gave.
    pub(crate) fn arp_reply(&self, network: NetworkId, request: &[u8]) -> Option<Vec<u8>> {
        let net = self.nets.get(&network)?;
        let arp = request.get(ETH_HEADER_LEN..ETH_HEADER_LEN + 28)?;
        // Ethernet/IPv4, operation 1 (request).
        if arp[..8] != [0, 1, 8, 0, 6, 4, 0, 1] {
            return None;
        }
        let target = Ipv4Addr::new(arp[24], arp[25], arp[26], arp[27]);
        let mac = *net.by_ip.get(&target)?;
        let sender_mac = MacAddr::from_slice(&arp[8..14])?;
        let sender_ip = Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]);
        Some(crate::synth::arp_reply(mac, target, sender_mac, sender_ip))
    }

    /// Ages learned entries out; how many went.
    pub(crate) fn sweep(&mut self, now: u64) -> usize {
        let aging = self.aging;
        let mut gone = 0;
        for net in self.nets.values_mut() {
            let before = net.endpoints.len();
            net.endpoints
                .retain(|_, e| e.learned_at.is_none_or(|t| now.saturating_sub(t) < aging));
            let n = before - net.endpoints.len();
            net.learned -= n;
            gone += n;
        }
        gone
    }

    /// [`Overlay::sweep`] at most once a second (it walks every entry).
    pub(crate) fn maybe_sweep(&mut self, now: u64) -> usize {
        if now.saturating_sub(self.last_sweep) < 1_000_000_000 {
            return 0;
        }
        self.last_sweep = now;
        self.sweep(now)
    }

    /// The next outer IPv4 identification.
    pub(crate) fn next_ip_id(&mut self) -> u16 {
        self.ip_id = self.ip_id.wrapping_add(1);
        self.ip_id
    }

    /// Holds `frame` for next hop `hop`; whether an ARP request should go now. False (and the
    /// frame not held) when the hop's queue is full: `Err`.
    pub(crate) fn wait(&mut self, hop: Ipv4Addr, frame: Vec<u8>, now: u64) -> Result<bool, ()> {
        let w = self.waiting.entry(hop).or_insert_with(|| Waiting {
            frames: Vec::new(),
            since: now,
            asked: 0,
        });
        if w.frames.len() >= MAX_WAITING {
            return Err(());
        }
        w.frames.push(frame);
        let ask = w.asked == 0 || now.saturating_sub(w.asked) >= ASK_EVERY;
        if ask {
            w.asked = now.max(1);
        }
        Ok(ask)
    }

    /// Whether frames waiting since `since` waited too long at `now`.
    pub(crate) fn expired(since: u64, now: u64) -> bool {
        now.saturating_sub(since) >= WAIT_TIMEOUT
    }

    /// Every overlay network's state, with `name` giving network names.
    pub(crate) fn rows(&self, now: u64, name: impl Fn(NetworkId) -> String) -> Vec<OverlayRow> {
        let mut rows: Vec<OverlayRow> = self
            .nets
            .iter()
            .map(|(&id, n)| {
                let mut endpoints: Vec<OverlayEndpointRow> = n
                    .endpoints
                    .iter()
                    .filter(|(_, e)| self.alive(e, now))
                    .map(|(mac, e)| OverlayEndpointRow {
                        mac: mac.to_string(),
                        ip: e.ip,
                        vtep: e.vtep,
                        origin: if e.learned_at.is_some() {
                            "learned"
                        } else {
                            "cluster"
                        },
                    })
                    .collect();
                endpoints.sort_by(|a, b| (a.vtep, &a.mac).cmp(&(b.vtep, &b.mac)));
                OverlayRow {
                    network: name(id),
                    vni: n.vni,
                    peers: n.peers.clone(),
                    endpoints,
                }
            })
            .collect();
        rows.sort_by_key(|r| r.vni);
        rows
    }
}

fn sorted(peers: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let mut p = peers.to_vec();
    p.sort();
    p.dedup();
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: NetworkId = NetworkId(1);
    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);

    fn vtep(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 51, 100, n)
    }

    fn overlay() -> Overlay {
        let mut o = Overlay::new(10);
        o.add(NET, 256, PortId(5), &[vtep(2), vtep(3)]);
        o
    }

    #[test]
    fn given_endpoints_win_over_learning_and_leave_cleanly() {
        let mut o = overlay();
        assert!(o.learn(NET, A, vtep(3), 0));
        assert!(matches!(o.targets(NET, A, 1), Some((256, Targets::One(v))) if v == vtep(3)));
        assert!(o.set_endpoint(NET, A, Some(Ipv4Addr::new(10, 77, 0, 5)), vtep(9)));
        assert!(o.learn(NET, A, vtep(3), 2), "accepted but ignored");
        assert!(matches!(o.targets(NET, A, 100), Some((_, Targets::One(v))) if v == vtep(9)));
        assert_eq!(
            o.accept(256, vtep(9)),
            Ok((NET, PortId(5))),
            "an endpoint's VTEP is accepted"
        );
        assert_eq!(o.accept(256, vtep(7)), Err(false));
        assert_eq!(o.accept(257, vtep(2)), Err(true));
        assert!(o.remove_endpoint(NET, A));
        assert_eq!(o.accept(256, vtep(9)), Err(false));
        assert!(
            matches!(o.targets(NET, A, 100), Some((_, Targets::Flood(p))) if p == [vtep(2), vtep(3)])
        );
        assert_eq!(o.nets[&NET].learned, 0);
    }

    #[test]
    fn learned_entries_age_and_are_capped() {
        let mut o = overlay();
        assert!(o.learn(NET, A, vtep(2), 0));
        assert!(o.knows(NET, A, 9));
        assert!(!o.knows(NET, A, 10), "aged");
        assert_eq!(o.sweep(10), 1);
        for i in 0..MAX_LEARNED {
            let b = (i as u32).to_be_bytes();
            assert!(o.learn(NET, MacAddr([2, 1, b[0], b[1], b[2], b[3]]), vtep(2), 20));
        }
        assert!(!o.learn(NET, A, vtep(2), 20), "the cap holds");
    }

    #[test]
    fn arp_for_a_given_endpoint_is_answered_here() {
        let mut o = overlay();
        let ip = Ipv4Addr::new(10, 77, 0, 5);
        o.set_endpoint(NET, A, Some(ip), vtep(2));
        let asker = MacAddr([2, 0, 0, 0, 0, 0xb]);
        let req = crate::synth::arp_request(asker, Ipv4Addr::new(10, 77, 0, 6), ip);
        let reply = o.arp_reply(NET, &req).unwrap();
        assert_eq!(&reply[..6], &asker.0);
        assert_eq!(&reply[6..12], &A.0);
        assert_eq!(&reply[28..32], &ip.octets());
        let other = crate::synth::arp_request(asker, Ipv4Addr::new(10, 77, 0, 6), vtep(1));
        assert_eq!(o.arp_reply(NET, &other), None);
        assert_eq!(o.arp_reply(NET, &reply), None, "a reply is not a request");
    }

    #[test]
    fn waiting_frames_are_bounded_and_ask_once_a_second() {
        let mut o = overlay();
        assert_eq!(o.wait(vtep(2), vec![1], 0), Ok(true));
        assert_eq!(o.wait(vtep(2), vec![2], 10), Ok(false));
        assert_eq!(o.wait(vtep(2), vec![3], ASK_EVERY + 10), Ok(true));
        for i in 3..MAX_WAITING {
            assert!(o.wait(vtep(2), vec![i as u8], 20).is_ok());
        }
        assert_eq!(o.wait(vtep(2), vec![0], 30), Err(()));
        assert!(Overlay::expired(0, WAIT_TIMEOUT));
    }
}
