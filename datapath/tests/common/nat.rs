//! Addresses, topologies and frame helpers of the gateway/NAT golden scenarios (`golden_nat.rs`,
//! `golden_offload.rs`): inputs built with `testkit::frames` (etherparse), and the frames NAT
//! must turn them into, edited field by field with every checksum recomputed from scratch —
//! independently of the code under test.

use packet::MacAddr;
use std::net::Ipv4Addr;
use testkit::frames::{self as build, ones_sum};
use testkit::topology;

// ---------------------------------------------------------------------------------------------
// Addresses.

pub const GW: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
pub const C1: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
pub const C2: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);
pub const UP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// Hosts on the internet (off-link: reached through the router).
pub const WEB: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
pub const DNS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
pub const FAR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);
pub const ROUTER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xfe]);

pub fn mac(ip: Ipv4Addr) -> MacAddr {
    MacAddr::docker(ip)
}

/// Gateway MAC of a network: derived from its gateway address, as the README says.
pub fn gw_mac(gw: Ipv4Addr) -> MacAddr {
    MacAddr::docker(gw)
}

// ---------------------------------------------------------------------------------------------
// Topologies.

/// The standard topology (bridge c1 c2, static uplink, 8080 published), then `extra`.
pub fn standard_topo(extra: &str) -> String {
    topology::standard().build() + extra
}

// ---------------------------------------------------------------------------------------------
// Frames: inputs and the frames NAT must turn them into, built independently of the pipeline.

pub fn tcp(
    from: (Ipv4Addr, u16),
    to: (Ipv4Addr, u16),
    macs: (MacAddr, MacAddr),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    build::tcp(
        macs.0, macs.1, from.0, to.0, from.1, to.1, seq, ack, flags, payload,
    )
}

pub fn udp(
    from: (Ipv4Addr, u16),
    to: (Ipv4Addr, u16),
    macs: (MacAddr, MacAddr),
    payload: &[u8],
) -> Vec<u8> {
    build::udp(macs.0, macs.1, from.0, to.0, from.1, to.1, payload)
}

pub fn ping(from: Ipv4Addr, to: Ipv4Addr, macs: (MacAddr, MacAddr), id: u16, seq: u16) -> Vec<u8> {
    build::icmp_echo(macs.0, macs.1, from, to, true, id, seq, b"vswitch ping")
}

pub fn pong(from: Ipv4Addr, to: Ipv4Addr, macs: (MacAddr, MacAddr), id: u16, seq: u16) -> Vec<u8> {
    build::icmp_echo(macs.0, macs.1, from, to, false, id, seq, b"vswitch ping")
}

pub fn checksum(acc: u32, bytes: &[u8]) -> u16 {
    !(ones_sum(acc, bytes) as u16)
}

/// An untagged Ethernet II / IPv4 frame being edited field by field; [`Edit::done`] recomputes
/// the IPv4 header checksum and the TCP/UDP/ICMP checksum from scratch.
pub struct Edit(pub Vec<u8>);

impl Edit {
    pub fn new(frame: &[u8]) -> Edit {
        assert_eq!(&frame[12..14], &[0x08, 0x00], "not IPv4");
        Edit(frame.to_vec())
    }

    pub fn l4(&self) -> usize {
        14 + usize::from(self.0[14] & 0x0f) * 4
    }

    pub fn ip_end(&self) -> usize {
        14 + usize::from(u16::from_be_bytes([self.0[16], self.0[17]]))
    }

    pub fn proto(&self) -> u8 {
        self.0[23]
    }

    pub fn set_macs(&mut self, (src, dst): (MacAddr, MacAddr)) {
        self.0[0..6].copy_from_slice(&dst.0);
        self.0[6..12].copy_from_slice(&src.0);
    }

    pub fn set_u16(&mut self, at: usize, v: u16) {
        self.0[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Source and destination endpoints; for an ICMP echo the port is the identifier.
    pub fn set_endpoints(&mut self, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) {
        self.0[26..30].copy_from_slice(&src.0.octets());
        self.0[30..34].copy_from_slice(&dst.0.octets());
        let l4 = self.l4();
        match self.proto() {
            6 | 17 => {
                self.set_u16(l4, src.1);
                self.set_u16(l4 + 2, dst.1);
            }
            1 if matches!(self.0[l4], 0 | 8) => self.set_u16(l4 + 4, src.1),
            _ => {}
        }
    }

    pub fn swap_addresses(&mut self) {
        let (d, s) = (self.0[0..6].to_vec(), self.0[6..12].to_vec());
        self.0[0..6].copy_from_slice(&s);
        self.0[6..12].copy_from_slice(&d);
        let (si, di) = (self.0[26..30].to_vec(), self.0[30..34].to_vec());
        self.0[26..30].copy_from_slice(&di);
        self.0[30..34].copy_from_slice(&si);
    }

    pub fn ttl(&mut self, ttl: u8) -> &mut Edit {
        self.0[22] = ttl;
        self
    }

    pub fn done(mut self) -> Vec<u8> {
        let (l4, end) = (self.l4(), self.ip_end());
        self.0[24..26].fill(0);
        let c = checksum(0, &self.0[14..l4]);
        self.set_u16(24, c);
        let at = match self.proto() {
            6 => l4 + 16,
            17 => l4 + 6,
            1 => l4 + 2,
            _ => return self.0,
        };
        self.0[at..at + 2].fill(0);
        let pseudo = if self.proto() == 1 {
            0
        } else {
            let mut ph = self.0[26..34].to_vec();
            ph.extend_from_slice(&[0, self.proto()]);
            ph.extend_from_slice(&((end - l4) as u16).to_be_bytes());
            ones_sum(0, &ph)
        };
        let mut c = checksum(pseudo, &self.0[l4..end]);
        if c == 0 && self.proto() == 17 {
            c = 0xffff;
        }
        self.set_u16(at, c);
        self.0
    }
}

/// What a routed frame looks like on its way out: new MACs, endpoints after NAT, TTL - 1.
pub fn routed(
    frame: &[u8],
    macs: (MacAddr, MacAddr),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
) -> Vec<u8> {
    let mut e = Edit::new(frame);
    e.set_macs(macs);
    e.set_endpoints(src, dst);
    let ttl = frame[22] - 1;
    e.ttl(ttl);
    e.done()
}
