//! Shared pieces of the fuzz targets: the fixed topology of the `pipeline` target and
//! structured frames built with etherparse (an implementation independent of the code under
//! test), so that the fuzzer reaches NAT, conntrack, ICMP errors, fragments, DNS and ARP instead
//! of spending its time on frames that fail the first length check.

use arbitrary::{Arbitrary, Unstructured};
use etherparse::{
    Icmpv4Header, Icmpv4Type, IpFragOffset, IpNumber, Ipv4Header, Ipv4Options, TcpHeader, UdpHeader,
};
use packet::MacAddr;
use testkit::topology::Topo;
use std::net::Ipv4Addr;

pub mod v6;

/// Gateway of the `bridge` network.
pub const GW_A: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
/// Gateway of the `backend` network.
pub const GW_B: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);
/// The uplink's address.
pub const UPLINK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// The uplink's next hop.
pub const NEXT_HOP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The next hop's (static) MAC.
pub const NEXT_HOP_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);
/// The upstream DNS resolver.
pub const RESOLVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);

/// The topology of the `pipeline` target: the addresses of the pcap fixtures (so their captures
/// are meaningful seeds), `bridge` dual-stack with the uplink's IPv6 side (its next hop
/// resolved by neighbour discovery), a second network with embedded DNS, published ports, a tiny conntrack
/// table (eviction), a tiny NAT port range (exhaustion) and a tiny per-port MAC limit.
/// `eim` sets `udp_endpoint_independent`.
pub fn topology(eim: bool) -> String {
    Topo::new()
        .bridge(&[("aging_secs", "60"), ("max_macs_per_port", "4")])
        .routed("bridge", "172.17.0.0/16", "172.17.0.1")
        .set_str("subnet6", "fd00:17::/64")
        .routed("backend", "172.18.0.0/16", "172.18.0.1")
        .set("icc", false)
        .ports("bridge", &["c1", "c2"])
        .port("b1", "backend")
        .uplink_port("up")
        .uplink_static("up")
        .block("uplink.ipv6", false)
        .set_str("address", "2001:db8::2")
        .set_str("subnet", "2001:db8::/64")
        .set_str("next_hop", "2001:db8::1")
        .block("nat", false)
        .set("port_first", 50000)
        .set("port_last", 50007)
        .set("udp_endpoint_independent", eim)
        .block("conntrack", false)
        .set("max_entries", 64)
        .block("dns", false)
        .set("upstream", "[\"198.51.100.53\"]")
        .publish("tcp", 8080, "172.17.0.3", 80)
        .publish("udp", 5353, "172.18.0.2", 53)
        .build()
}

/// Port names of [`topology`], in id order.
pub const PORTS: [&str; 4] = ["c1", "c2", "b1", "up"];

/// An address the pipeline has an opinion about, or any address.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum AddrPick {
    /// A host of `bridge`.
    HostA(u8),
    /// A host of `backend`.
    HostB(u8),
    /// The published container.
    Published,
    /// Gateway of `bridge`.
    GwA,
    /// Gateway of `backend`.
    GwB,
    /// The uplink address.
    Uplink,
    /// The next hop.
    NextHop,
    /// The DNS resolver.
    Resolver,
    /// A host on the internet.
    Remote(u8),
    /// Limited broadcast.
    Broadcast,
    /// Anything.
    Any([u8; 4]),
}

impl AddrPick {
    /// The address.
    pub fn addr(self) -> Ipv4Addr {
        match self {
            AddrPick::HostA(x) => Ipv4Addr::new(172, 17, 0, 2 + x % 4),
            AddrPick::HostB(x) => Ipv4Addr::new(172, 18, 0, 2 + x % 4),
            AddrPick::Published => Ipv4Addr::new(172, 17, 0, 3),
            AddrPick::GwA => GW_A,
            AddrPick::GwB => GW_B,
            AddrPick::Uplink => UPLINK,
            AddrPick::NextHop => NEXT_HOP,
            AddrPick::Resolver => RESOLVER,
            AddrPick::Remote(x) => Ipv4Addr::new(198, 51, 100, x % 8),
            AddrPick::Broadcast => Ipv4Addr::BROADCAST,
            AddrPick::Any(a) => Ipv4Addr::from(a),
        }
    }
}

/// A MAC address the pipeline has an opinion about, or any.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum MacPick {
    /// Gateway of `bridge`.
    GwA,
    /// Gateway of `backend`.
    GwB,
    /// The uplink's MAC.
    Uplink,
    /// The next hop's MAC.
    NextHop,
    /// One of a few host MACs (the Docker-style MAC of a host address).
    Host(AddrPick),
    /// Broadcast.
    Broadcast,
    /// Anything.
    Any([u8; 6]),
}

impl MacPick {
    /// The MAC.
    pub fn mac(self) -> MacAddr {
        match self {
            MacPick::GwA => MacAddr::docker(GW_A),
            MacPick::GwB => MacAddr::docker(GW_B),
            MacPick::Uplink => MacAddr::docker(UPLINK),
            MacPick::NextHop => NEXT_HOP_MAC,
            MacPick::Host(a) => MacAddr::docker(a.addr()),
            MacPick::Broadcast => MacAddr::BROADCAST,
            MacPick::Any(m) => MacAddr(m),
        }
    }
}

/// A TCP/UDP port the pipeline has an opinion about, or any.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum PortPick {
    /// DNS.
    Dns,
    /// The published TCP host port.
    PublishedTcp,
    /// The published UDP host port.
    PublishedUdp,
    /// The published container port.
    Http,
    /// One of the NAT range's ports.
    Nat(u8),
    /// Anything.
    Any(u16),
}

impl PortPick {
    /// The port.
    pub fn port(self) -> u16 {
        match self {
            PortPick::Dns => 53,
            PortPick::PublishedTcp => 8080,
            PortPick::PublishedUdp => 5353,
            PortPick::Http => 80,
            PortPick::Nat(x) => 50000 + u16::from(x % 9),
            PortPick::Any(p) => p,
        }
    }
}

/// IPv4 header fields.
#[derive(Arbitrary, Debug, Clone)]
pub struct Ipv4Spec {
    /// Source.
    pub src: AddrPick,
    /// Destination.
    pub dst: AddrPick,
    /// TTL (small values are interesting: TTL expiry).
    pub ttl: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment.
    pub df: bool,
    /// More Fragments.
    pub mf: bool,
    /// Fragment offset in 8-byte units (masked to 13 bits).
    pub frag_offset: Option<u16>,
    /// Options (cut to a multiple of 4, at most 40 bytes).
    pub options: Option<Vec<u8>>,
}

/// A DNS question.
#[derive(Arbitrary, Debug, Clone)]
pub struct DnsQuery {
    /// Message id.
    pub id: u16,
    /// Flags byte 2 (QR, opcode, AA, TC, RD).
    pub flags: u8,
    /// The name.
    pub name: NamePick,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS 1 (IN) unless this says otherwise.
    pub qclass: Option<u16>,
    /// EDNS payload size, if an OPT record is added.
    pub edns: Option<u16>,
}

/// A DNS name.
#[derive(Arbitrary, Debug, Clone)]
pub enum NamePick {
    /// A container of `backend`.
    Container(u8, bool),
    /// The domain apex.
    Apex,
    /// Any labels.
    Labels(Vec<Vec<u8>>),
}

const NAMES: [&str; 4] = ["b1", "web", "db", "nobody"];

impl DnsQuery {
    /// Wire bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&self.id.to_be_bytes());
        v.push(self.flags);
        v.push(0);
        v.extend_from_slice(&1u16.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 0]);
        v.extend_from_slice(&u16::from(self.edns.is_some()).to_be_bytes());
        let labels: Vec<Vec<u8>> = match &self.name {
            NamePick::Container(i, in_domain) => {
                let mut l = vec![NAMES[usize::from(*i) % NAMES.len()].as_bytes().to_vec()];
                if *in_domain {
                    l.push(b"vswitch".to_vec());
                    l.push(b"internal".to_vec());
                }
                l
            }
            NamePick::Apex => vec![b"vswitch".to_vec(), b"internal".to_vec()],
            NamePick::Labels(l) => l.clone(),
        };
        for l in labels.iter().take(8) {
            let l = &l[..l.len().min(63)];
            v.push(l.len() as u8);
            v.extend_from_slice(l);
        }
        v.push(0);
        v.extend_from_slice(&self.qtype.to_be_bytes());
        v.extend_from_slice(&self.qclass.unwrap_or(1).to_be_bytes());
        if let Some(size) = self.edns {
            v.push(0);
            v.extend_from_slice(&41u16.to_be_bytes());
            v.extend_from_slice(&size.to_be_bytes());
            v.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        v
    }
}

/// A UDP payload.
#[derive(Arbitrary, Debug, Clone)]
pub enum UdpPayload {
    /// Bytes.
    Raw(Vec<u8>),
    /// A DNS query.
    Dns(DnsQuery),
}

/// A transport header (and payload) that an ICMP error may quote.
#[derive(Arbitrary, Debug, Clone)]
pub enum Quoted {
    /// TCP.
    Tcp(TcpSpec),
    /// UDP.
    Udp(PortPick, PortPick, Vec<u8>),
    /// An ICMP echo.
    Echo(bool, u16, u16),
    /// Garbage with any protocol number.
    Garbage(u8, Vec<u8>),
}

/// TCP header fields.
#[derive(Arbitrary, Debug, Clone)]
pub struct TcpSpec {
    /// Source port.
    pub sport: PortPick,
    /// Destination port.
    pub dport: PortPick,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags (FIN SYN RST PSH ACK URG ECE CWR).
    pub flags: u8,
    /// Window.
    pub window: u16,
    /// Payload.
    pub payload: Vec<u8>,
}

/// The IPv4 payload.
#[derive(Arbitrary, Debug, Clone)]
pub enum L4Spec {
    /// TCP.
    Tcp(TcpSpec),
    /// UDP; `true`: send with checksum 0.
    Udp(PortPick, PortPick, bool, UdpPayload),
    /// ICMP echo request (`true`) or reply.
    Echo(bool, u16, u16, Vec<u8>),
    /// An ICMP error (type chosen among 3, 4, 11, 12, 5, or any) quoting a packet, cut to
    /// `cut` bytes of the quote when given.
    Error {
        /// Type selector.
        ty: u8,
        /// Code.
        code: u8,
        /// Bytes 4..8 of the ICMP header.
        rest: [u8; 4],
        /// The quoted packet's IPv4 header.
        ip: Ipv4Spec,
        /// The quoted transport.
        quoted: Quoted,
        /// Cut the quote to this many bytes.
        cut: Option<u8>,
    },
    /// Any ICMP message.
    Icmp(u8, u8, [u8; 4], Vec<u8>),
    /// Any protocol.
    Other(u8, Vec<u8>),
}

/// An ARP packet.
#[derive(Arbitrary, Debug, Clone)]
pub struct ArpSpec {
    /// Request (`true`) or reply.
    pub request: bool,
    /// Sender address.
    pub sender: AddrPick,
    /// Target address.
    pub target: AddrPick,
    /// Destination MAC of a reply.
    pub reply_to: MacPick,
}

/// What an Ethernet frame carries.
#[derive(Arbitrary, Debug, Clone)]
pub enum Body {
    /// IPv4.
    Ipv4(Ipv4Spec, L4Spec),
    /// ARP.
    Arp(ArpSpec),
    /// IPv6.
    Ipv6(v6::Ipv6Spec, v6::L6Spec),
    /// Anything.
    Raw(u16, Vec<u8>),
}

/// An Ethernet frame, then damaged a little if the fuzzer wants.
#[derive(Arbitrary, Debug, Clone)]
pub struct FrameSpec {
    /// Source MAC.
    pub src: MacPick,
    /// Destination MAC.
    pub dst: MacPick,
    /// An 802.1Q tag.
    pub vlan: Option<u16>,
    /// Payload.
    pub body: Body,
    /// Cut the frame to this length.
    pub truncate: Option<u16>,
    /// Add Ethernet padding.
    pub pad: Option<u8>,
    /// XOR one byte (index, value).
    pub flip: Option<(u16, u8)>,
}

const MAX_PAYLOAD: usize = 1400;

pub(crate) fn cut(v: &[u8]) -> &[u8] {
    &v[..v.len().min(MAX_PAYLOAD)]
}

fn tcp_segment(t: &TcpSpec, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let payload = cut(&t.payload);
    let mut h = TcpHeader::new(t.sport.port(), t.dport.port(), t.seq, t.window);
    h.acknowledgment_number = t.ack;
    h.fin = t.flags & 0x01 != 0;
    h.syn = t.flags & 0x02 != 0;
    h.rst = t.flags & 0x04 != 0;
    h.psh = t.flags & 0x08 != 0;
    h.ack = t.flags & 0x10 != 0;
    h.urg = t.flags & 0x20 != 0;
    h.ece = t.flags & 0x40 != 0;
    h.cwr = t.flags & 0x80 != 0;
    h.checksum = h
        .calc_checksum_ipv4_raw(src.octets(), dst.octets(), payload)
        .unwrap_or(0);
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn udp_datagram(
    sport: u16,
    dport: u16,
    zero: bool,
    payload: &[u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
) -> Vec<u8> {
    let payload = cut(payload);
    let mut h = UdpHeader {
        source_port: sport,
        destination_port: dport,
        length: (8 + payload.len()) as u16,
        checksum: 0,
    };
    if !zero {
        h.checksum = h
            .calc_checksum_ipv4_raw(src.octets(), dst.octets(), payload)
            .unwrap_or(0);
    }
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn icmp_message(ty: u8, code: u8, rest: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let payload = cut(payload);
    let h = Icmpv4Header::with_checksum(
        Icmpv4Type::Unknown {
            type_u8: ty,
            code_u8: code,
            bytes5to8: rest,
        },
        payload,
    );
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// An IPv4 packet with a correct header checksum around `l4`.
pub fn ipv4_packet(ip: &Ipv4Spec, protocol: u8, l4: &[u8]) -> Vec<u8> {
    let mut h = Ipv4Header::new(
        0,
        ip.ttl,
        IpNumber(protocol),
        ip.src.addr().octets(),
        ip.dst.addr().octets(),
    )
    .unwrap_or_default();
    h.identification = ip.ident;
    h.dont_fragment = ip.df;
    h.more_fragments = ip.mf;
    if let Some(off) = ip.frag_offset {
        h.fragment_offset = IpFragOffset::try_new(off & 0x1fff).unwrap_or_default();
    }
    if let Some(opts) = &ip.options {
        let n = opts.len().min(40) / 4 * 4;
        h.options = Ipv4Options::try_from(&opts[..n]).unwrap_or_default();
    }
    let _ = h.set_payload_len(l4.len());
    h.header_checksum = h.calc_header_checksum();
    let mut v = Vec::with_capacity(h.header_len() + l4.len());
    let _ = h.write(&mut v);
    v.extend_from_slice(l4);
    v
}

impl L4Spec {
    /// Protocol number and transport bytes, with correct checksums.
    pub fn build(&self, src: Ipv4Addr, dst: Ipv4Addr) -> (u8, Vec<u8>) {
        match self {
            L4Spec::Tcp(t) => (6, tcp_segment(t, src, dst)),
            L4Spec::Udp(sp, dp, zero, payload) => {
                let bytes = match payload {
                    UdpPayload::Raw(b) => b.clone(),
                    UdpPayload::Dns(q) => q.bytes(),
                };
                (
                    17,
                    udp_datagram(sp.port(), dp.port(), *zero, &bytes, src, dst),
                )
            }
            L4Spec::Echo(request, id, seq, payload) => {
                let mut rest = [0u8; 4];
                rest[..2].copy_from_slice(&id.to_be_bytes());
                rest[2..].copy_from_slice(&seq.to_be_bytes());
                (
                    1,
                    icmp_message(if *request { 8 } else { 0 }, 0, rest, payload),
                )
            }
            L4Spec::Error {
                ty,
                code,
                rest,
                ip,
                quoted,
                cut,
            } => {
                let ty = match ty % 6 {
                    0 => 3,
                    1 => 11,
                    2 => 12,
                    3 => 4,
                    4 => 5,
                    _ => *ty,
                };
                let (isrc, idst) = (ip.src.addr(), ip.dst.addr());
                let (proto, l4) = match quoted {
                    Quoted::Tcp(t) => (6, tcp_segment(t, isrc, idst)),
                    Quoted::Udp(sp, dp, p) => {
                        (17, udp_datagram(sp.port(), dp.port(), false, p, isrc, idst))
                    }
                    Quoted::Echo(req, id, seq) => {
                        let mut rest = [0u8; 4];
                        rest[..2].copy_from_slice(&id.to_be_bytes());
                        rest[2..].copy_from_slice(&seq.to_be_bytes());
                        (1, icmp_message(if *req { 8 } else { 0 }, 0, rest, b"ping"))
                    }
                    Quoted::Garbage(p, b) => (*p, b.clone()),
                };
                let mut quote = ipv4_packet(ip, proto, &l4);
                if let Some(n) = cut {
                    quote.truncate(usize::from(*n));
                }
                (1, icmp_message(ty, *code, *rest, &quote))
            }
            L4Spec::Icmp(ty, code, rest, payload) => (1, icmp_message(*ty, *code, *rest, payload)),
            L4Spec::Other(p, b) => (*p, cut(b).to_vec()),
        }
    }
}

impl FrameSpec {
    /// The IPv4 packet of an IPv4 body (no Ethernet header, no damage), for targets that take
    /// packets rather than frames.
    pub fn ipv4(ip: &Ipv4Spec, l4: &L4Spec) -> Vec<u8> {
        let (proto, seg) = l4.build(ip.src.addr(), ip.dst.addr());
        ipv4_packet(ip, proto, &seg)
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let (ethertype, payload) = match &self.body {
            Body::Ipv4(ip, l4) => (packet::ETHERTYPE_IPV4, Self::ipv4(ip, l4)),
            Body::Arp(a) => {
                let f = if a.request {
                    testkit::frames::arp_request(self.src.mac(), a.sender.addr(), a.target.addr())
                } else {
                    testkit::frames::arp_reply(
                        self.src.mac(),
                        a.sender.addr(),
                        a.reply_to.mac(),
                        a.target.addr(),
                    )
                };
                (
                    packet::ETHERTYPE_ARP,
                    f.get(14..).unwrap_or_default().to_vec(),
                )
            }
            Body::Ipv6(ip, l6) => {
                let (nh, upper) = l6.build(ip.src.addr(), ip.dst.addr());
                (packet::ETHERTYPE_IPV6, v6::ipv6_packet(ip, nh, &upper))
            }
            Body::Raw(t, b) => (*t, cut(b).to_vec()),
        };
        let mut v = Vec::with_capacity(18 + payload.len());
        v.extend_from_slice(&self.dst.mac().0);
        v.extend_from_slice(&self.src.mac().0);
        if let Some(tci) = self.vlan {
            v.extend_from_slice(&packet::ETHERTYPE_VLAN.to_be_bytes());
            v.extend_from_slice(&tci.to_be_bytes());
        }
        v.extend_from_slice(&ethertype.to_be_bytes());
        v.extend_from_slice(&payload);
        if let Some(n) = self.pad {
            v.resize(v.len() + usize::from(n), 0);
        }
        if let Some(n) = self.truncate {
            v.truncate(usize::from(n));
        }
        if let Some((i, x)) = self.flip {
            let len = v.len();
            if len > 0 {
                v[usize::from(i) % len] ^= x;
            }
        }
        v
    }
}

/// A frame from `u`: raw bytes or a [`FrameSpec`].
pub fn frame(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    if u.arbitrary::<bool>()? {
        Ok(FrameSpec::arbitrary(u)?.build())
    } else {
        let n = u.int_in_range(0..=1600usize)?;
        Ok(u.bytes(n.min(u.len()))?.to_vec())
    }
}

/// Record tags of the `pipeline` target's input: `[tag, port, len_hi, len_lo, body[len]]`.
pub mod record {
    /// Advance the clock by the body read as a big-endian number (see [`super::advance`]) and
    /// run the batch collected so far.
    pub const CLOCK: u8 = 0;
    /// Take a snapshot.
    pub const SNAPSHOT: u8 = 1;
    /// A frame built from the body with [`super::FrameSpec`].
    pub const BUILT: u8 = 2;
    /// The body is the frame.
    pub const RAW: u8 = 3;
}

/// Nanoseconds to advance the clock by for a CLOCK record body: the first byte picks the unit
/// (ms, s, min, h), the next two bytes the count.
pub fn advance(body: &[u8]) -> u64 {
    let unit: u64 = match body.first().copied().unwrap_or(0) % 4 {
        0 => 1_000_000,
        1 => 1_000_000_000,
        2 => 60_000_000_000,
        _ => 3_600_000_000_000,
    };
    let n = match body.get(1..3) {
        Some(b) => u64::from(u16::from_be_bytes([b[0], b[1]])),
        None => u64::from(body.get(1).copied().unwrap_or(1)),
    };
    unit.saturating_mul(n % 1000)
}
