//! 802.1Q tags on the uplink (a trunk) and the table of macvlan networks by VLAN.
//!
//! A macvlan network (see [`crate::config::Macvlan`]) has a port of kind
//! [`crate::PortKind::Parent`] that stands for the uplink. Frames the uplink receives with the
//! network's tag (or untagged, for an untagged macvlan network) enter the network through it,
//! their tag removed: containers' ports are access ports. Frames the network sends to it leave
//! through the uplink with the tag put back. Frames with stacked tags (QinQ) or a tag no network
//! has are counted drops; priority-tagged frames (VLAN id 0, 802.1p) are untagged ones whose
//! priority (PCP) is kept when they leave tagged.

use crate::config::{Macvlan, MacvlanMode, NetworkId, PortId};
use packet::ETHERTYPE_VLAN;
use rustc_hash::FxHashMap;

/// 802.1ad's service tag (the outer tag of QinQ).
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// A frame's outer tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// No 802.1Q tag (or a truncated one, left to the later checks).
    Untagged,
    /// One tag: its VLAN id (0 for a priority tag) and priority.
    Vlan {
        /// VLAN id, 0..=4095.
        vid: u16,
        /// Priority code point, 0..=7.
        pcp: u8,
    },
    /// Two tags (QinQ), or an 802.1ad service tag.
    Stacked,
}

/// The outer tag of `frame`.
pub fn tag_of(frame: &[u8]) -> Tag {
    let ty = |at: usize| {
        frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    match ty(12) {
        Some(ETHERTYPE_QINQ) => Tag::Stacked,
        Some(ETHERTYPE_VLAN) => match (ty(14), ty(16)) {
            (_, Some(ETHERTYPE_VLAN | ETHERTYPE_QINQ)) => Tag::Stacked,
            (Some(tci), _) => Tag::Vlan {
                vid: tci & 0x0fff,
                pcp: (tci >> 13) as u8,
            },
            (None, _) => Tag::Untagged,
        },
        _ => Tag::Untagged,
    }
}

/// Removes the outer tag of a tagged `frame` (in place).
pub fn pop(frame: &mut Vec<u8>) {
    if frame.len() >= 18 {
        frame.drain(12..16);
    }
}

/// Tags `frame` with `vid` and priority `pcp`, after its MACs (in place).
pub fn push(frame: &mut Vec<u8>, vid: u16, pcp: u8) {
    if frame.len() < 12 {
        return;
    }
    let tci = (u16::from(pcp & 7) << 13) | (vid & 0x0fff);
    let [t0, t1] = ETHERTYPE_VLAN.to_be_bytes();
    let [c0, c1] = tci.to_be_bytes();
    frame.splice(12..12, [t0, t1, c0, c1]);
}

/// The macvlan networks of one pipeline: their parent ports, by network and by VLAN.
#[derive(Debug, Default)]
pub(crate) struct Parents {
    by_network: FxHashMap<NetworkId, (PortId, Macvlan)>,
    by_vlan: FxHashMap<Option<u16>, NetworkId>,
}

impl Parents {
    /// Whether any network is a macvlan network.
    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        !self.by_network.is_empty()
    }

    /// The macvlan network on `vlan` (None: untagged), if any.
    pub(crate) fn on_vlan(&self, vlan: Option<u16>) -> Option<NetworkId> {
        self.by_vlan.get(&vlan).copied()
    }

    /// The parent port and settings of `network`.
    #[inline]
    pub(crate) fn of(&self, network: NetworkId) -> Option<(PortId, Macvlan)> {
        self.by_network.get(&network).copied()
    }

    /// Whether `network` is a macvlan network in private mode.
    #[inline]
    pub(crate) fn private(&self, network: NetworkId) -> Option<PortId> {
        self.by_network
            .get(&network)
            .filter(|(_, m)| m.mode == MacvlanMode::Private)
            .map(|(p, _)| *p)
    }

    pub(crate) fn add(&mut self, network: NetworkId, port: PortId, m: Macvlan) {
        self.by_network.insert(network, (port, m));
        self.by_vlan.insert(m.vlan, network);
    }

    pub(crate) fn remove(&mut self, network: NetworkId) -> Option<PortId> {
        let (port, m) = self.by_network.remove(&network)?;
        self.by_vlan.remove(&m.vlan);
        Some(port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        f.extend_from_slice(&[0; 28]);
        f
    }

    #[test]
    fn tags_go_on_and_off_after_the_macs() {
        let plain = frame();
        assert_eq!(tag_of(&plain), Tag::Untagged);
        let mut f = plain.clone();
        push(&mut f, 20, 5);
        assert_eq!(&f[12..18], &[0x81, 0x00, 0xa0, 20, 0x08, 0x06]);
        assert_eq!(tag_of(&f), Tag::Vlan { vid: 20, pcp: 5 });
        let mut qinq = f.clone();
        push(&mut qinq, 30, 0);
        assert_eq!(tag_of(&qinq), Tag::Stacked);
        let mut ad = plain.clone();
        ad.splice(12..12, [0x88, 0xa8, 0, 7]);
        assert_eq!(tag_of(&ad), Tag::Stacked);
        pop(&mut f);
        assert_eq!(f, plain);
        assert_eq!(tag_of(&[0; 13]), Tag::Untagged);
    }
}
