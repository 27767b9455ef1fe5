//! The general queries the switch sends as its networks' querier: IGMPv3 (RFC 3376 4.1) and
//! MLDv2 (RFC 3810 5.1), laid out as Linux's bridge sends them (`br_ip4_multicast_alloc_query`,
//! `br_ip6_multicast_alloc_query`). Hosts of every version answer them: an IGMPv2 or MLDv1 host
//! reads the first 8 (24) bytes as its own version's query.
//!
//! Built through smoltcp's views into fresh buffers of fixed size: nothing here depends on
//! received bytes, so nothing can fail.

use super::timing::{MAX_RESPONSE_DECISECS, QUERY_INTERVAL_SECS, ROBUSTNESS};
use crate::synth::ethernet_header;
use packet::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, Icmpv6Packet, IgmpPacket, IpProtocol, Ipv4Addr, Ipv4Packet,
    Ipv6Addr, Ipv6ExtHeader, Ipv6HopByHopHeader, Ipv6HopByHopRepr, Ipv6Packet, MacAddr, MldRepr,
};

/// 224.0.0.1, all systems.
const ALL_SYSTEMS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 1);
/// ff02::1, all nodes.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// IPv4 header with the 4-byte Router Alert option (RFC 2113), which RFC 3376 4 asks for.
const IPV4_HEADER_LEN: usize = 24;
/// IGMPv3 query without sources.
const IGMP_QUERY_LEN: usize = 12;
/// Hop-by-Hop header: next header, length, Router Alert (4 bytes), PadN (2 bytes).
const HOP_BY_HOP_LEN: usize = 8;
/// MLDv2 query without sources.
const MLD_QUERY_LEN: usize = 28;
/// IGMP type of a membership query.
const IGMP_QUERY: u8 = 0x11;
/// IP precedence 6 (internetwork control), as Linux marks its queries.
const DSCP_CS6: u8 = 0x30;

/// The link-local address of `mac` by modified EUI-64 (RFC 4291 2.5.1, appendix A).
pub(crate) fn link_local(mac: MacAddr) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// An IGMPv3 general query from `src_mac`/`src_ip` to 224.0.0.1.
pub(crate) fn igmp_general_query(src_mac: MacAddr, src_ip: Ipv4Addr) -> Vec<u8> {
    let total = IPV4_HEADER_LEN + IGMP_QUERY_LEN;
    let mut f = Vec::with_capacity(14 + total);
    ethernet_header(
        &mut f,
        src_mac,
        multicast_mac_v4(ALL_SYSTEMS),
        ETHERTYPE_IPV4,
    );
    f.resize(14 + total, 0);
    let (_, l3) = f.split_at_mut(14);
    let (header, igmp) = l3.split_at_mut(IPV4_HEADER_LEN);
    {
        let mut q = IgmpPacket::new_unchecked(&mut *igmp);
        q.set_msg_type(IGMP_QUERY.into());
        q.set_max_resp_code(MAX_RESPONSE_DECISECS);
        q.set_group_address(Ipv4Addr::UNSPECIFIED);
    }
    // Resv|S|QRV, QQIC (exact below 128, RFC 3376 4.1.7), number of sources: 0.
    igmp[8] = ROBUSTNESS;
    igmp[9] = QUERY_INTERVAL_SECS as u8;
    IgmpPacket::new_unchecked(&mut *igmp).fill_checksum();
    // Router Alert: type 148, length 4, value 0 (every router examines the packet).
    header[20..].copy_from_slice(&[0x94, 0x04, 0, 0]);
    let mut ip = Ipv4Packet::new_unchecked(header);
    ip.set_version(4);
    ip.set_header_len(IPV4_HEADER_LEN as u8);
    ip.set_dscp(DSCP_CS6);
    ip.set_total_len(total as u16);
    ip.clear_flags();
    ip.set_dont_frag(true);
    ip.set_hop_limit(1);
    ip.set_next_header(IpProtocol::Igmp);
    ip.set_src_addr(src_ip);
    ip.set_dst_addr(ALL_SYSTEMS);
    ip.fill_checksum();
    f
}

/// An MLDv2 general query from `src_mac` (and its link-local address) to ff02::1, with the
/// Router Alert that RFC 3810 5 requires.
pub(crate) fn mld_general_query(src_mac: MacAddr) -> Vec<u8> {
    let src = link_local(src_mac);
    let payload = HOP_BY_HOP_LEN + MLD_QUERY_LEN;
    let mut f = Vec::with_capacity(14 + 40 + payload);
    ethernet_header(&mut f, src_mac, multicast_mac_v6(ALL_NODES), ETHERTYPE_IPV6);
    f.resize(14 + 40 + payload, 0);
    let mut ip = Ipv6Packet::new_unchecked(&mut f[14..]);
    ip.set_version(6);
    ip.set_payload_len(payload as u16);
    ip.set_next_header(IpProtocol::HopByHop);
    ip.set_hop_limit(1);
    ip.set_src_addr(src);
    ip.set_dst_addr(ALL_NODES);
    let (hop_by_hop, mld) = ip.payload_mut().split_at_mut(HOP_BY_HOP_LEN);
    let mut ext = Ipv6ExtHeader::new_unchecked(&mut *hop_by_hop);
    ext.set_next_header(IpProtocol::Icmpv6);
    ext.set_header_len(0);
    let mut options = Ipv6HopByHopRepr::mldv2_router_alert();
    options.push_padn_option(0);
    options.emit(&mut Ipv6HopByHopHeader::new_unchecked(ext.payload_mut()));
    let query = MldRepr::Query {
        max_resp_code: u16::from(MAX_RESPONSE_DECISECS) * 100,
        mcast_addr: Ipv6Addr::UNSPECIFIED,
        s_flag: false,
        qrv: ROBUSTNESS,
        qqic: QUERY_INTERVAL_SECS as u8,
        num_srcs: 0,
        data: &[],
    };
    let mut icmp = Icmpv6Packet::new_unchecked(&mut *mld);
    query.emit(&mut icmp);
    icmp.fill_checksum(&src, &ALL_NODES);
    f
}

/// 01:00:5e and the low 23 bits of an IPv4 group (RFC 1112 6.4).
fn multicast_mac_v4(group: Ipv4Addr) -> MacAddr {
    let o = group.octets();
    MacAddr([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]])
}

/// 33:33 and the low 32 bits of an IPv6 group (RFC 2464 7).
fn multicast_mac_v6(group: Ipv6Addr) -> MacAddr {
    let o = group.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}
