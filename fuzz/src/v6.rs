//! IPv6 frames for the fuzz targets: addresses of the dual-stack fuzz topology, extension
//! header chains (hop-by-hop, routing, fragment, destination options, and garbage), neighbour
//! discovery, echo, TCP, UDP and ICMPv6 errors quoting anything, with checksums computed by
//! etherparse (independent of the code under test).

use super::{MacPick, PortPick, TcpSpec, cut};
use arbitrary::Arbitrary;
use etherparse::{Icmpv6Header, Icmpv6Type, TcpHeader, UdpHeader};
use std::net::Ipv6Addr;

/// IPv6 gateway of `bridge`.
pub const GW6_A: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 1);
/// The uplink's IPv6 address.
pub const UPLINK6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// The uplink's IPv6 next hop.
pub const NEXT_HOP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

/// Longest extension-header chain built (beyond the parser's bound, so the bound is tried).
const MAX_EXTENSIONS: usize = 10;

/// An IPv6 address the pipeline has an opinion about, or any.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Addr6Pick {
    /// A host of `bridge` (fd00:17::2 + x).
    Host(u8),
    /// The gateway's address.
    Gw,
    /// A link-local address of a MAC (the gateway's, a host's, anything).
    LinkLocal(MacPick),
    /// The uplink's address.
    Uplink,
    /// The uplink's next hop.
    NextHop,
    /// A host on the internet.
    Remote(u8),
    /// `::`.
    Unspecified,
    /// All nodes, all routers, or the solicited-node group of a host.
    Multicast(u8),
    /// Anything.
    Any([u8; 16]),
}

impl Addr6Pick {
    /// The address.
    pub fn addr(self) -> Ipv6Addr {
        match self {
            Addr6Pick::Host(x) => Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 2 + u16::from(x % 4)),
            Addr6Pick::Gw => GW6_A,
            Addr6Pick::LinkLocal(m) => m.mac().link_local(),
            Addr6Pick::Uplink => UPLINK6,
            Addr6Pick::NextHop => NEXT_HOP6,
            Addr6Pick::Remote(x) => Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, u16::from(x % 8)),
            Addr6Pick::Unspecified => Ipv6Addr::UNSPECIFIED,
            Addr6Pick::Multicast(x) => match x % 3 {
                0 => Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                1 => Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2),
                _ => Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 2 + u16::from(x % 4)),
            },
            Addr6Pick::Any(a) => Ipv6Addr::from(a),
        }
    }
}

/// One extension header.
#[derive(Arbitrary, Debug, Clone)]
pub enum ExtSpec {
    /// Hop-by-hop options (type 0) with these option bytes.
    HopByHop(Vec<u8>),
    /// A routing header (43).
    Routing(Vec<u8>),
    /// A fragment header (44): offset in 8-byte units, more fragments, identification.
    Fragment(u16, bool, u32),
    /// Destination options (60).
    DestOpts(Vec<u8>),
    /// A header of another number with these bytes (its length byte as the fuzzer says).
    Garbage(u8, Vec<u8>),
}

/// The fixed header's fields and the extension chain.
#[derive(Arbitrary, Debug, Clone)]
pub struct Ipv6Spec {
    /// Source.
    pub src: Addr6Pick,
    /// Destination.
    pub dst: Addr6Pick,
    /// Hop limit.
    pub hop_limit: u8,
    /// Extension headers, in order.
    pub ext: Vec<ExtSpec>,
}

/// What an ICMPv6 error quotes.
#[derive(Arbitrary, Debug, Clone)]
pub enum Quoted6 {
    /// A UDP datagram.
    Udp(PortPick, PortPick),
    /// A TCP segment.
    Tcp(TcpSpec),
    /// An echo request or reply.
    Echo(bool, u16),
    /// Any next header and bytes.
    Garbage(u8, Vec<u8>),
}

/// The IPv6 payload.
#[derive(Arbitrary, Debug, Clone)]
pub enum L6Spec {
    /// TCP.
    Tcp(TcpSpec),
    /// UDP.
    Udp(PortPick, PortPick, Vec<u8>),
    /// Echo request (`true`) or reply.
    Echo(bool, u16, u16, Vec<u8>),
    /// Neighbour discovery: type 133..=137 (by `ty % 5`), code, the target, a link-layer
    /// option (or none), more option bytes.
    Nd(u8, u8, Addr6Pick, Option<MacPick>, Vec<u8>),
    /// An ICMPv6 error (type 1..=4 by `ty % 4`), code, the 4-byte field, the quoted packet's
    /// header and payload, cut to a length.
    Error(u8, u8, [u8; 4], Box<Ipv6Spec>, Quoted6, Option<u16>),
    /// Any ICMPv6 type.
    Icmp(u8, u8, [u8; 4], Vec<u8>),
    /// Any next header.
    Other(u8, Vec<u8>),
}

fn icmpv6(src: Ipv6Addr, dst: Ipv6Addr, ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let body = cut(body);
    let t = Icmpv6Type::Unknown {
        type_u8: ty,
        code_u8: code,
        bytes5to8: rest,
    };
    let h = Icmpv6Header::with_checksum(t, src.octets(), dst.octets(), body)
        .unwrap_or(Icmpv6Header::new(t));
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn tcp6(t: &TcpSpec, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let payload = cut(&t.payload);
    let mut h = TcpHeader::new(t.sport.port(), t.dport.port(), t.seq, t.window);
    h.acknowledgment_number = t.ack;
    h.syn = t.flags & 0x02 != 0;
    h.ack = t.flags & 0x10 != 0;
    h.fin = t.flags & 0x01 != 0;
    h.rst = t.flags & 0x04 != 0;
    h.checksum = h
        .calc_checksum_ipv6_raw(src.octets(), dst.octets(), payload)
        .unwrap_or(0);
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn udp6(sp: u16, dp: u16, payload: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let payload = cut(payload);
    let mut h = UdpHeader {
        source_port: sp,
        destination_port: dp,
        length: (8 + payload.len()) as u16,
        checksum: 0,
    };
    h.checksum = h
        .calc_checksum_ipv6_raw(src.octets(), dst.octets(), payload)
        .unwrap_or(0);
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

impl L6Spec {
    /// Next header and upper-layer bytes.
    pub fn build(&self, src: Ipv6Addr, dst: Ipv6Addr) -> (u8, Vec<u8>) {
        match self {
            L6Spec::Tcp(t) => (6, tcp6(t, src, dst)),
            L6Spec::Udp(sp, dp, p) => (17, udp6(sp.port(), dp.port(), p, src, dst)),
            L6Spec::Echo(req, id, seq, p) => {
                let [i0, i1] = id.to_be_bytes();
                let [s0, s1] = seq.to_be_bytes();
                let ty = if *req { 128 } else { 129 };
                (58, icmpv6(src, dst, ty, 0, [i0, i1, s0, s1], p))
            }
            L6Spec::Nd(ty, code, target, lladdr, more) => {
                let ty = 133 + ty % 5;
                let mut body = target.addr().octets().to_vec();
                if let Some(m) = lladdr {
                    let kind = if ty == 136 { 2 } else { 1 };
                    body.extend_from_slice(&[kind, 1]);
                    body.extend_from_slice(&m.mac().0);
                }
                body.extend_from_slice(cut(more));
                (58, icmpv6(src, dst, ty, *code, [0xe0, 0, 0, 0], &body))
            }
            L6Spec::Error(ty, code, rest, ip, quoted, n) => {
                let (isrc, idst) = (ip.src.addr(), ip.dst.addr());
                let (nh, l4) = match quoted {
                    Quoted6::Udp(sp, dp) => (17, udp6(sp.port(), dp.port(), b"quoted", isrc, idst)),
                    Quoted6::Tcp(t) => (6, tcp6(t, isrc, idst)),
                    Quoted6::Echo(req, id) => {
                        let [i0, i1] = id.to_be_bytes();
                        let ty = if *req { 128 } else { 129 };
                        (58, icmpv6(isrc, idst, ty, 0, [i0, i1, 0, 1], b"ping"))
                    }
                    Quoted6::Garbage(p, b) => (*p, cut(b).to_vec()),
                };
                let mut quote = ipv6_packet(ip, nh, &l4);
                if let Some(n) = n {
                    quote.truncate(usize::from(*n));
                }
                (58, icmpv6(src, dst, 1 + ty % 4, *code, *rest, &quote))
            }
            L6Spec::Icmp(ty, code, rest, p) => (58, icmpv6(src, dst, *ty, *code, *rest, p)),
            L6Spec::Other(nh, b) => (*nh, cut(b).to_vec()),
        }
    }
}

/// An IPv6 packet: the fixed header, `ip`'s extension chain, then `upper` of next header `nh`.
pub fn ipv6_packet(ip: &Ipv6Spec, nh: u8, upper: &[u8]) -> Vec<u8> {
    let chain = &ip.ext[..ip.ext.len().min(MAX_EXTENSIONS)];
    let mut exts: Vec<(u8, Vec<u8>)> = Vec::new();
    for e in chain {
        let (ty, body) = match e {
            ExtSpec::HopByHop(b) => (0, padded(b)),
            ExtSpec::Routing(b) => (43, padded(b)),
            ExtSpec::DestOpts(b) => (60, padded(b)),
            ExtSpec::Fragment(off, more, id) => {
                let word = (off << 3) | u16::from(*more);
                let mut b = vec![0u8; 6];
                b[..2].copy_from_slice(&word.to_be_bytes());
                b[2..].copy_from_slice(&id.to_be_bytes());
                (44, b)
            }
            ExtSpec::Garbage(ty, b) => (*ty, b[..b.len().min(64)].to_vec()),
        };
        exts.push((ty, body));
    }
    let mut payload = Vec::new();
    for (i, (_, body)) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(nh, |(t, _)| *t);
        payload.push(next);
        // The length byte in 8-byte units beyond the first 8 (garbage keeps whatever fits).
        let len = (body.len() + 2).div_ceil(8).saturating_sub(1);
        payload.push(u8::try_from(len).unwrap_or(u8::MAX));
        payload.extend_from_slice(body);
    }
    payload.extend_from_slice(upper);
    let first = exts.first().map_or(nh, |(t, _)| *t);
    let mut v = vec![0x60, 0, 0, 0];
    v.extend_from_slice(&u16::try_from(payload.len()).unwrap_or(u16::MAX).to_be_bytes());
    v.extend_from_slice(&[first, ip.hop_limit]);
    v.extend_from_slice(&ip.src.addr().octets());
    v.extend_from_slice(&ip.dst.addr().octets());
    v.extend_from_slice(&payload);
    v
}

/// Option bytes padded so that the header (2 bytes + these) is a multiple of 8 long.
fn padded(b: &[u8]) -> Vec<u8> {
    let mut v = b[..b.len().min(62)].to_vec();
    while (v.len() + 2) % 8 != 0 {
        v.push(0);
    }
    v
}
