//! What a frame to a multicast MAC is to the snooping switch: to flood, to a group's listeners,
//! or a membership report to learn from. Reads IGMPv1/v2/v3 (RFC 1112, 2236, 3376) and MLDv1/v2
//! (RFC 2710, 3810) through smoltcp's views, with bounds checks and the messages' checksums
//! verified: a report changes who receives a group, so a corrupted one must not add or remove a
//! listener (Linux's bridge verifies both checksums too).
//!
//! Source lists are skipped, not kept: the switch does not filter by source (no SSM), so a host
//! that listens to any source of a group gets all of the group's traffic. A record is a join
//! unless it says INCLUDE{} (IS_IN or TO_IN with no source), which is a leave; ALLOW and BLOCK
//! count as joins, as in Linux's bridge without source tracking.

use crate::counters::DropReason;
use packet::{
    ETH_HEADER_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, Icmpv6Packet, IgmpPacket, IpProtocol, Ipv4Addr,
    Ipv4Packet, Ipv6Addr, Ipv6ExtHeader, Ipv6OptionRepr, Ipv6OptionsIterator, Ipv6Packet,
    MldAddressRecord, MldRecordType, ethertype,
};

/// A multicast group address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Group {
    /// An IPv4 group (224.0.0.0/4), learned by IGMP.
    V4(Ipv4Addr),
    /// An IPv6 group (ff00::/8), learned by MLD.
    V6(Ipv6Addr),
}

impl Group {
    /// Whether every port gets this group's traffic whatever the reports say: IPv4 link-local
    /// control (224.0.0.0/24, RFC 4541 2.1.2) and IPv6 all-nodes (ff02::1), as Linux floods them.
    pub(crate) fn always_flooded(self) -> bool {
        match self {
            Group::V4(a) => a.octets()[..3] == [224, 0, 0],
            Group::V6(a) => a == Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
        }
    }

    /// The protocol family, as an index.
    pub(crate) fn family(self) -> Family {
        match self {
            Group::V4(_) => Family::V4,
            Group::V6(_) => Family::V6,
        }
    }
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Group::V4(a) => a.fmt(f),
            Group::V6(a) => a.fmt(f),
        }
    }
}

/// IGMP (IPv4) or MLD (IPv6): hosts report each separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    /// IPv4, IGMP.
    V4 = 0,
    /// IPv6, MLD.
    V6 = 1,
}

/// What a host's record says about one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// It listens (joined, or still listening).
    Join,
    /// It stopped listening.
    Leave,
}

/// A validated membership report or leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Report<'a> {
    /// IGMPv1/v2 report, IGMPv2 leave, MLDv1 report or done: one group.
    Single(Family, Group, Change),
    /// IGMPv3 or MLDv2 report: `count` group records in `records`, whose lengths were checked.
    Records {
        /// Which protocol (sets the address length of a record).
        family: Family,
        /// Number of records.
        count: u16,
        /// The records' bytes.
        records: &'a [u8],
    },
}

impl<'a> Report<'a> {
    /// The family the reporting host spoke.
    pub(crate) fn family(&self) -> Family {
        match self {
            Report::Single(f, ..) | Report::Records { family: f, .. } => *f,
        }
    }

    /// Each group the report is about, and what it says.
    pub(crate) fn changes(self) -> impl Iterator<Item = (Group, Change)> + 'a {
        let (single, family, count, mut rest) = match self {
            Report::Single(_, g, c) => (Some((g, c)), Family::V4, 0, &[][..]),
            Report::Records {
                family,
                count,
                records,
            } => (None, family, count, records),
        };
        let records = (0..count).filter_map(move |_| {
            let (record, after) = split_record(family, rest)?;
            rest = after;
            record
        });
        single.into_iter().chain(records)
    }
}

/// What the switch does with a frame sent to a multicast (or broadcast) MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    /// To every port: broadcast, non-IP multicast, link-local control groups, all-nodes, and
    /// what cannot be attributed to a group (a later fragment of an IGMP message).
    Flood,
    /// Data, or a query, for the listeners of a group.
    ToGroup(Group),
    /// A membership report or leave, for the switch alone.
    Report(Report<'a>),
}

/// IGMP message types (RFC 3376 4, RFC 2236 2.1).
const IGMP_V1_REPORT: u8 = 0x12;
const IGMP_V2_REPORT: u8 = 0x16;
const IGMP_V2_LEAVE: u8 = 0x17;
const IGMP_V3_REPORT: u8 = 0x22;
/// MLD message types (RFC 2710 3, RFC 3810 5.2).
const MLD_V1_REPORT: u8 = 131;
const MLD_V1_DONE: u8 = 132;
const MLD_V2_REPORT: u8 = 143;
/// An MLDv1 message: type, code, checksum, maximum response delay, reserved, group.
const MLD_V1_LEN: usize = 24;
/// IGMPv3 and MLDv2 reports: type, reserved, checksum, reserved, number of records.
const REPORT_V3_HEADER_LEN: usize = 8;
/// Extension headers walked before giving up on finding the upper layer: the bound of
/// `packet::classify`, so both agree on which chains are too long.
const MAX_EXTENSION_HEADERS: usize = packet::MAX_EXTENSION_HEADERS;

/// Classifies a frame whose destination MAC is multicast (broadcast included). `Err` for an IP
/// header that cannot be read (`Malformed`) and for an IGMP or MLD report that is truncated,
/// inconsistent or fails its checksum (`MalformedReport`).
pub(crate) fn classify(frame: &[u8]) -> Result<Kind<'_>, DropReason> {
    let (Some(dst), Some(payload)) = (frame.get(..3), frame.get(ETH_HEADER_LEN..)) else {
        return Ok(Kind::Flood);
    };
    match ethertype(frame) {
        // 01:00:5e carries IPv4 groups (RFC 1112 6.4), 33:33 IPv6 ones (RFC 2464 7).
        Some(ETHERTYPE_IPV4) if dst == [0x01, 0x00, 0x5e] => ipv4(payload),
        Some(ETHERTYPE_IPV6) if dst[..2] == [0x33, 0x33] => ipv6(payload),
        _ => Ok(Kind::Flood),
    }
}

/// Data goes by its destination group; a unicast address in a multicast frame is flooded.
fn to_group(group: Group, multicast: bool) -> Kind<'static> {
    if !multicast || group.always_flooded() {
        Kind::Flood
    } else {
        Kind::ToGroup(group)
    }
}

fn ipv4(bytes: &[u8]) -> Result<Kind<'_>, DropReason> {
    let ip = Ipv4Packet::new_checked(bytes).map_err(|_| DropReason::Malformed)?;
    let dst = ip.dst_addr();
    let data = to_group(Group::V4(dst), dst.is_multicast());
    let whole = !ip.more_frags() && ip.frag_offset() == 0;
    if ip.next_header() != IpProtocol::Igmp || !whole {
        return Ok(data);
    }
    let igmp = ip.payload();
    let Some(&ty) = igmp.first() else {
        return Err(DropReason::MalformedReport);
    };
    if !matches!(
        ty,
        IGMP_V1_REPORT | IGMP_V2_REPORT | IGMP_V2_LEAVE | IGMP_V3_REPORT
    ) {
        // Queries and unknown types travel as data to their destination.
        return Ok(data);
    }
    let msg = IgmpPacket::new_checked(igmp).map_err(|_| DropReason::MalformedReport)?;
    if !msg.verify_checksum() || !ip.verify_checksum() {
        return Err(DropReason::MalformedReport);
    }
    let report = if ty == IGMP_V3_REPORT {
        records(Family::V4, igmp)?
    } else {
        let group = msg.group_addr();
        if !group.is_multicast() {
            return Err(DropReason::MalformedReport);
        }
        let change = if ty == IGMP_V2_LEAVE {
            Change::Leave
        } else {
            Change::Join
        };
        Report::Single(Family::V4, Group::V4(group), change)
    };
    Ok(Kind::Report(report))
}

fn ipv6(bytes: &[u8]) -> Result<Kind<'_>, DropReason> {
    let ip = Ipv6Packet::new_checked(bytes).map_err(|_| DropReason::Malformed)?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let data = to_group(Group::V6(dst), dst.is_multicast());
    let (mut next, mut rest) = (ip.next_header(), ip.payload());
    let mut router_alert = false;
    for _ in 0..MAX_EXTENSION_HEADERS {
        match next {
            IpProtocol::HopByHop | IpProtocol::Ipv6Route | IpProtocol::Ipv6Opts => {
                let ext = Ipv6ExtHeader::new_checked(rest).map_err(|_| DropReason::Malformed)?;
                if next == IpProtocol::HopByHop {
                    router_alert |= Ipv6OptionsIterator::new(ext.payload())
                        .any(|o| matches!(o, Ok(Ipv6OptionRepr::RouterAlert(_))));
                }
                // The header is its payload and the two bytes in front of it.
                let len = ext.payload().len() + 2;
                (next, rest) = (ext.next_header(), rest.get(len..).unwrap_or_default());
            }
            IpProtocol::Icmpv6 => {
                return mld(rest, router_alert, (src, dst)).map(|r| r.unwrap_or(data));
            }
            // A fragment, or any other upper layer: data, by its destination.
            _ => return Ok(data),
        }
    }
    Ok(data)
}

/// An MLD report or done in the ICMPv6 message `msg`; `None` if it is another message. RFC 3810
/// 5 (and RFC 2710 3) send MLD with a Router Alert in a Hop-by-Hop header: without one it is
/// not MLD to a router, and is treated as data.
fn mld(
    msg: &[u8],
    router_alert: bool,
    (src, dst): (Ipv6Addr, Ipv6Addr),
) -> Result<Option<Kind<'_>>, DropReason> {
    let Some(&ty) = msg.first() else {
        return Err(DropReason::Malformed);
    };
    if !router_alert || !matches!(ty, MLD_V1_REPORT | MLD_V1_DONE | MLD_V2_REPORT) {
        return Ok(None);
    }
    let min_len = if ty == MLD_V2_REPORT {
        REPORT_V3_HEADER_LEN
    } else {
        MLD_V1_LEN
    };
    if msg.len() < min_len || !Icmpv6Packet::new_unchecked(msg).verify_checksum(&src, &dst) {
        return Err(DropReason::MalformedReport);
    }
    let report = if ty == MLD_V2_REPORT {
        records(Family::V6, msg)?
    } else {
        let group = msg
            .get(8..MLD_V1_LEN)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Ipv6Addr::from)
            .filter(Ipv6Addr::is_multicast)
            .ok_or(DropReason::MalformedReport)?;
        let change = if ty == MLD_V1_DONE {
            Change::Leave
        } else {
            Change::Join
        };
        Report::Single(Family::V6, Group::V6(group), change)
    };
    Ok(Some(Kind::Report(report)))
}

/// An IGMPv3 or MLDv2 report (`msg` from its type on, checksum verified): every record must fit.
fn records(family: Family, msg: &[u8]) -> Result<Report<'_>, DropReason> {
    let count = msg
        .get(6..8)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(DropReason::MalformedReport)?;
    let records = msg
        .get(REPORT_V3_HEADER_LEN..)
        .ok_or(DropReason::MalformedReport)?;
    let mut rest = records;
    for _ in 0..count {
        rest = split_record(family, rest)
            .ok_or(DropReason::MalformedReport)?
            .1;
    }
    Ok(Report::Records {
        family,
        count,
        records,
    })
}

/// Reads the group record at the start of `bytes`: what it says (`None` for a record type this
/// switch does not know, or a group that is not multicast, both skipped), and the bytes after
/// it. `None` when the record does not fit.
#[allow(clippy::type_complexity)]
fn split_record(family: Family, bytes: &[u8]) -> Option<(Option<(Group, Change)>, &[u8])> {
    // Both layouts: type, aux data length (in words), number of sources, group, sources, aux.
    let (addr_len, group) = match family {
        Family::V4 => {
            let addr = <[u8; 4]>::try_from(bytes.get(4..8)?).ok()?;
            (4, Group::V4(Ipv4Addr::from(addr)))
        }
        Family::V6 => {
            let record = MldAddressRecord::new_checked(bytes).ok()?;
            (16, Group::V6(record.mcast_addr()))
        }
    };
    let num_srcs = usize::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]));
    let aux_len = usize::from(*bytes.get(1)?) * 4;
    let len = 4 + addr_len + num_srcs * addr_len + aux_len;
    let after = bytes.get(len..)?;
    // IGMPv3 (RFC 3376 4.2.12) numbers its record types as MLDv2 (RFC 3810 5.2.12) does.
    let change = match (MldRecordType::from(bytes[0]), num_srcs) {
        (MldRecordType::ModeIsInclude | MldRecordType::ChangeToInclude, 0) => Some(Change::Leave),
        (MldRecordType::Unknown(_), _) => None,
        _ => Some(Change::Join),
    };
    let multicast = match group {
        Group::V4(a) => a.is_multicast(),
        Group::V6(a) => a.is_multicast(),
    };
    Some((change.filter(|_| multicast).map(|c| (group, c)), after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use packet::MacAddr;
    use testkit::frames::{self as build, record};

    const HOST: MacAddr = MacAddr([0x02, 0x42, 172, 17, 0, 2]);
    const HOST_IP: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
    const GROUP: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);
    const LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x42, 0xacff, 0xfe11, 2);
    const SOLICITED: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff11, 2);

    /// An MLDv2 report as Linux sends it during DAD: from ::, to ff02::16, Hop-by-Hop with
    /// Router Alert, one CHANGE_TO_EXCLUDE{} record for the solicited-node group ff02::1:ff11:2.
    static LINUX_MLDV2_JOIN: [u8; 90] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x16, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, //
        0x86, 0xdd, 0x60, 0x00, 0x00, 0x00, 0x00, 0x24, 0x00, 0x01, 0x00, 0x00, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0x00, 0x00, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x16, 0x3a, 0x00, 0x05, 0x02, 0x00, 0x00, //
        0x01, 0x00, 0x8f, 0x00, 0x6f, 0x77, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00, //
        0x00, 0x00, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0x00, 0x01, 0xff, 0x11, 0x00, 0x02,
    ];

    fn changes(frame: &[u8]) -> Vec<(Group, Change)> {
        match classify(frame) {
            Ok(Kind::Report(r)) => r.changes().collect(),
            other => panic!("not a report: {other:?}"),
        }
    }

    #[test]
    fn igmp_v2_report_and_leave() {
        let join = build::igmpv2_report(HOST, HOST_IP, GROUP);
        assert_eq!(changes(&join), vec![(Group::V4(GROUP), Change::Join)]);
        let leave = build::igmpv2_leave(HOST, HOST_IP, GROUP);
        assert_eq!(changes(&leave), vec![(Group::V4(GROUP), Change::Leave)]);
        // IGMPv1: the same message with type 0x12 (checksum fixed for the new type).
        let mut v1 = join.clone();
        v1[38] = IGMP_V1_REPORT;
        let sum =
            u16::from_be_bytes([v1[40], v1[41]]) + (IGMP_V2_REPORT - IGMP_V1_REPORT) as u16 * 256;
        v1[40..42].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(changes(&v1), vec![(Group::V4(GROUP), Change::Join)]);
    }

    #[test]
    fn igmp_v3_records() {
        let src = Ipv4Addr::new(198, 51, 100, 7);
        let g = |n| Ipv4Addr::new(239, 0, 0, n);
        let f = build::igmpv3_report(
            HOST,
            HOST_IP,
            &[
                (record::TO_EXCLUDE, g(1), &[]),
                (record::TO_INCLUDE, g(2), &[]),
                (record::IS_INCLUDE, g(3), &[src]),
                (record::IS_INCLUDE, g(4), &[]),
                (record::ALLOW, g(5), &[src, src]),
                (record::BLOCK, g(6), &[src]),
                (9, g(7), &[]),
                (record::IS_EXCLUDE, Ipv4Addr::new(10, 0, 0, 1), &[]),
                (record::IS_EXCLUDE, g(8), &[]),
            ],
        );
        let j = |n| (Group::V4(g(n)), Change::Join);
        let l = |n| (Group::V4(g(n)), Change::Leave);
        // The unknown record type and the unicast "group" are skipped, the rest read in order.
        assert_eq!(changes(&f), vec![j(1), l(2), j(3), l(4), j(5), j(6), j(8)]);
        let empty = build::igmpv3_report(HOST, HOST_IP, &[]);
        assert_eq!(changes(&empty), vec![]);
    }

    #[test]
    fn mld_v1_and_v2() {
        let join = build::mldv1(HOST, LINK_LOCAL, SOLICITED, false);
        assert_eq!(changes(&join), vec![(Group::V6(SOLICITED), Change::Join)]);
        let done = build::mldv1(HOST, LINK_LOCAL, SOLICITED, true);
        assert_eq!(changes(&done), vec![(Group::V6(SOLICITED), Change::Leave)]);
        assert_eq!(
            changes(&LINUX_MLDV2_JOIN),
            vec![(Group::V6(SOLICITED), Change::Join)]
        );
        let mdns = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb);
        let v2 = build::mldv2_report(
            HOST,
            LINK_LOCAL,
            &[
                (record::TO_INCLUDE, SOLICITED, &[]),
                (record::IS_INCLUDE, mdns, &[LINK_LOCAL]),
            ],
        );
        assert_eq!(
            changes(&v2),
            vec![
                (Group::V6(SOLICITED), Change::Leave),
                (Group::V6(mdns), Change::Join)
            ]
        );
    }

    #[test]
    fn extension_chain_is_walked() {
        use etherparse::{IpHeaders, IpNumber, Ipv6Extensions, Ipv6Header, Ipv6RawExtHeader};
        // Hop-by-Hop (Router Alert) then Destination Options (padding) before the MLD report.
        let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16);
        let ext = Ipv6Extensions {
            hop_by_hop_options: Some(
                Ipv6RawExtHeader::new_raw(IpNumber(0), &[5, 2, 0, 0, 1, 0]).unwrap(),
            ),
            destination_options: Some(
                Ipv6RawExtHeader::new_raw(
                    IpNumber(0),
                    &[1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                )
                .unwrap(),
            ),
            ..Default::default()
        };
        let header = Ipv6Header {
            hop_limit: 1,
            source: LINK_LOCAL.octets(),
            destination: dst.octets(),
            ..Default::default()
        };
        let mut record = vec![record::TO_EXCLUDE, 0, 0, 0];
        record.extend_from_slice(&SOLICITED.octets());
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2(HOST.0, build::multicast_mac_v6(dst).0)
            .ip(IpHeaders::Ipv6(header, ext))
            .icmpv6_raw(MLD_V2_REPORT, 0, [0, 0, 0, 1])
            .write(&mut f, &record)
            .unwrap();
        assert_eq!(changes(&f), vec![(Group::V6(SOLICITED), Change::Join)]);
    }

    #[test]
    fn data_goes_by_destination() {
        let to = |g: Ipv4Addr| build::udp(HOST, build::multicast_mac_v4(g), HOST_IP, g, 1, 2, b"x");
        assert_eq!(classify(&to(GROUP)), Ok(Kind::ToGroup(Group::V4(GROUP))));
        let mdns = Ipv4Addr::new(224, 0, 0, 251);
        assert_eq!(classify(&to(mdns)), Ok(Kind::Flood));
        let ns = build::neighbor_solicitation(HOST, Ipv6Addr::UNSPECIFIED, LINK_LOCAL);
        assert_eq!(classify(&ns), Ok(Kind::ToGroup(Group::V6(SOLICITED))));
        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let ra =
            build::icmpv6_multicast(HOST, LINK_LOCAL, all_nodes, false, 134, 0, [0; 4], &[0; 12]);
        assert_eq!(classify(&ra), Ok(Kind::Flood));
        let rs_to = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
        let rs = build::icmpv6_multicast(HOST, LINK_LOCAL, rs_to, false, 133, 0, [0; 4], &[]);
        assert_eq!(classify(&rs), Ok(Kind::ToGroup(Group::V6(rs_to))));
        // A query from a container is data to its destination (all systems: flooded).
        let mut query = build::igmpv2_report(HOST, HOST_IP, GROUP);
        query[38] = 0x11;
        assert_eq!(classify(&query), Ok(Kind::ToGroup(Group::V4(GROUP))));
        // MLD without Router Alert is not MLD to a router: data to ff02::16.
        let bare = build::icmpv6_multicast(
            HOST,
            LINK_LOCAL,
            SOLICITED,
            false,
            MLD_V1_REPORT,
            0,
            [0; 4],
            &SOLICITED.octets(),
        );
        assert_eq!(classify(&bare), Ok(Kind::ToGroup(Group::V6(SOLICITED))));
        // Not IP, or not the IP a multicast MAC carries: flooded as before.
        let lldp = build::ethernet(
            HOST,
            MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x0e]),
            0x88cc,
            &[0; 30],
        );
        assert_eq!(classify(&lldp), Ok(Kind::Flood));
        let odd = build::ethernet(HOST, MacAddr([0x33, 0x33, 0, 0, 0, 1]), 0x0800, &[0; 30]);
        assert_eq!(classify(&odd), Ok(Kind::Flood));
        let arp = build::arp_request(HOST, HOST_IP, Ipv4Addr::new(172, 17, 0, 1));
        assert_eq!(classify(&arp), Ok(Kind::Flood));
    }

    #[test]
    fn malformed_reports_are_refused() {
        // A wrong checksum (one bit of the group flipped).
        let mut bad = build::igmpv2_report(HOST, HOST_IP, GROUP);
        bad[45] ^= 1;
        assert_eq!(classify(&bad), Err(DropReason::MalformedReport));
        let mut bad6 = LINUX_MLDV2_JOIN;
        bad6[89] ^= 1;
        assert_eq!(classify(&bad6), Err(DropReason::MalformedReport));
        // Two records announced, one present (checksum right).
        let mut rec = vec![record::TO_EXCLUDE, 0, 0, 0];
        rec.extend_from_slice(&SOLICITED.octets());
        let short = build::icmpv6_multicast(
            HOST,
            LINK_LOCAL,
            SOLICITED,
            true,
            MLD_V2_REPORT,
            0,
            [0, 0, 0, 2],
            &rec,
        );
        assert_eq!(classify(&short), Err(DropReason::MalformedReport));
        // A record whose sources run past the end.
        let mut f = build::igmpv3_report(HOST, HOST_IP, &[(record::IS_INCLUDE, GROUP, &[HOST_IP])]);
        // IGMP from 38 (Ethernet, IPv4 with Router Alert); the record's source count at 48.
        f[48..50].copy_from_slice(&3u16.to_be_bytes());
        f[40..42].fill(0);
        let sum = !(build::ones_sum(0, &f[38..]) as u16);
        f[40..42].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(classify(&f), Err(DropReason::MalformedReport));
        f[48..50].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(classify(&f), Err(DropReason::MalformedReport), "checksum");
        // An MLDv1 message too short for its group, with a right checksum.
        let tiny = build::icmpv6_multicast(
            HOST,
            LINK_LOCAL,
            SOLICITED,
            true,
            MLD_V1_REPORT,
            0,
            [0; 4],
            &[0xff, 2],
        );
        assert_eq!(classify(&tiny), Err(DropReason::MalformedReport));
        // An IGMPv2 report for a unicast address.
        let unicast = build::igmpv2_report(HOST, HOST_IP, HOST_IP);
        let mut unicast = unicast;
        unicast[0..6].copy_from_slice(&build::multicast_mac_v4(GROUP).0);
        assert_eq!(classify(&unicast), Err(DropReason::MalformedReport));
        // Truncated anywhere: never a panic; a cut IP header is malformed.
        for frame in [
            build::igmpv2_report(HOST, HOST_IP, GROUP),
            build::igmpv3_report(HOST, HOST_IP, &[(record::IS_EXCLUDE, GROUP, &[])]),
            LINUX_MLDV2_JOIN.to_vec(),
            build::mldv1(HOST, LINK_LOCAL, SOLICITED, true),
        ] {
            for len in 0..frame.len() {
                let cut = classify(&frame[..len]);
                assert!(!matches!(cut, Ok(Kind::Report(_))), "{len}: {cut:?}");
            }
        }
    }
}
