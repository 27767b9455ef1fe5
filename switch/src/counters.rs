//! Counters: one per drop reason, per port, so every frame is accounted for.
//!
//! Invariant checked by tests: for every port, `rx_frames = forwarded + local + dropped()`,
//! where `forwarded` counts received frames that left through at least one port and `local`
//! counts frames the gateway consumed (answered or absorbed) without forwarding them.

use serde::ser::{Serialize, SerializeMap, Serializer};

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// Why the pipeline dropped a frame. `Copy`, counted per port, never a string on the fast path.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum DropReason {
            $(#[doc = $doc] $variant,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// Stable snake_case name used in JSON and CLI output.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
        }
    };
}

drop_reasons! {
    Runt => "runt", "Shorter than an Ethernet header.";
    Oversize => "oversize", "Longer than the MTU allows (a super-frame: its headers and one segment).";
    BadOffload => "bad_offload", "Its virtio-net offload state does not match its headers, or it could not be segmented.";
    InvalidSrcMac => "invalid_src_mac", "Source MAC is multicast, broadcast or zero.";
    SpoofedMac => "spoofed_mac", "Anti-spoofing: source MAC is not the one assigned to the port.";
    SpoofedIp => "spoofed_ip", "Anti-spoofing: IPv4 source is neither the port's address nor 0.0.0.0 (or hidden behind a VLAN tag).";
    SpoofedArp => "spoofed_arp", "Anti-spoofing: ARP sender MAC or address is not the port's own.";
    SpoofedIpv6 => "spoofed_ipv6", "Anti-spoofing: IPv6 source is neither the port's address, the link-local address of its MAC nor :: (for duplicate address detection and MLD only).";
    SpoofedNd => "spoofed_nd", "Anti-spoofing: a neighbour advertisement for an address not the port's, or neighbour discovery naming another link-layer address.";
    RaGuard => "ra_guard", "RA guard (RFC 6105): a router advertisement or redirect from a container port.";
    SamePort => "same_port", "Destination was learned on the ingress port: never sent back out.";
    NoEgress => "no_egress", "Flooded, but the network has no other port.";
    IccBlocked => "icc_blocked", "Inter-container traffic on a network with icc = false.";
    Malformed => "malformed", "IPv4/IPv6/ARP header, extension header chain or transport header truncated or inconsistent.";
    NotForUs => "not_for_us", "Arrived on the uplink for another host or protocol.";
    SpoofedSource => "spoofed_source", "Source address impossible for the port it came from.";
    GatewayUnsupported => "gateway_unsupported", "Addressed to the gateway itself, and not something it answers.";
    UplinkPortClosed => "uplink_port_closed", "From a container to the uplink address on a port nothing is published on; refused with a TCP RST or an ICMP port unreachable.";
    InterNetwork => "inter_network", "Routed toward another network: networks do not route to each other.";
    InternalNetwork => "internal_network", "Routed out of an internal network (no uplink).";
    NoRoute => "no_route", "No uplink or next hop for the destination.";
    TtlExceeded => "ttl_exceeded", "TTL ran out; an ICMP time-exceeded went back.";
    FragNeeded => "frag_needed", "Too big with DF set; an ICMP fragmentation-needed went back.";
    NeedsFragmentation => "needs_fragmentation", "Too big for the egress MTU and fragmentation is not implemented.";
    Unsupported => "unsupported", "No port or identifier to track (non-first fragment, other protocol).";
    CtInvalid => "ct_invalid", "Invalid for conntrack (e.g. a lone ACK, an inexact RST).";
    Unsolicited => "unsolicited", "Inbound with no connection and no published port.";
    IcmpErrorNoFlow => "icmp_error_no_flow", "An ICMP error that quotes no tracked connection.";
    CtTableFull => "ct_table_full", "Conntrack full of established connections.";
    CtSourceLimit => "ct_source_limit", "The source address holds conntrack.max_per_source connections.";
    NatDestinationLimit => "nat_destination_limit", "nat.max_ports_per_destination masqueraded connections go to that address.";
    PortsExhausted => "ports_exhausted", "No free NAT source port for this destination.";
    ArpQueueFull => "arp_queue_full", "Waiting for ARP, and the pending queue was full.";
    ArpUnresolved => "arp_unresolved", "The next hop never answered ARP.";
    DnsDropped => "dns_dropped", "A DNS query to the gateway that could not be read or forwarded.";
    NoMulticastListener => "no_multicast_listener", "To a multicast group no other port listens to (snooping: no report, and every port snooped).";
    MalformedReport => "malformed_report", "An IGMP or MLD report or leave that is truncated, inconsistent or fails its checksum.";
    VxlanMalformed => "vxlan_malformed", "VXLAN to the uplink address that is truncated, has inconsistent lengths, a wrong UDP checksum or no valid-VNI flag.";
    VxlanUnknownVni => "vxlan_unknown_vni", "VXLAN for a VNI no overlay network here has.";
    VxlanUnknownVtep => "vxlan_unknown_vtep", "VXLAN from a VTEP the overlay network does not know (not in its flood list, no endpoint behind it).";
    VlanUnknown => "vlan_unknown", "From the uplink with an 802.1Q tag no macvlan network here has.";
    VlanQinq => "vlan_qinq", "From the uplink with stacked tags (QinQ) or an 802.1ad service tag: not supported.";
    MacvlanPrivate => "macvlan_private", "Between two containers of a macvlan network in private mode.";
    OverlayGatewayMac => "overlay_gateway_mac", "Decapsulated from another host with the network's gateway MAC as its source: every host has its own gateway.";
}

/// Number of drop reasons.
pub const DROP_REASONS: usize = DropReason::ALL.len();

/// Drop counts indexed by reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropCounts([u64; DROP_REASONS]);

// By hand: the standard library derives `Default` for arrays of at most 32 elements.
impl Default for DropCounts {
    fn default() -> Self {
        DropCounts([0; DROP_REASONS])
    }
}

impl DropCounts {
    /// Counts one drop.
    #[inline]
    pub fn add(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }

    /// Count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

impl Serialize for DropCounts {
    // Only reasons that happened, by name: short and readable, and stable across runs.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let nonzero = DropReason::ALL.iter().filter(|r| self.get(**r) > 0);
        let mut map = s.serialize_map(None)?;
        for r in nonzero {
            map.serialize_entry(r.as_str(), &self.get(*r))?;
        }
        map.end()
    }
}

/// Per-port counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PortCounters {
    /// Frames received.
    pub rx_frames: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Received frames that left through at least one port.
    pub forwarded: u64,
    /// Received frames the switch consumed: the gateway's, and IGMP/MLD reports and leaves.
    pub local: u64,
    /// Received frames waiting for ARP now.
    pub queued: u64,
    /// Received frames dropped, by reason.
    pub drops: DropCounts,
    /// Frames the kernel dropped before the switch could read them (receive ring full): the
    /// packet loop is behind. Not part of `rx_frames`.
    pub rx_kernel_drops: u64,
    /// Frames the port's device did not take on transmit (queue full, link down).
    pub tx_errors: u64,
    /// Received GSO super-frames (each counted once in `rx_frames`, whatever its segments).
    pub rx_gso: u64,
    /// Sent GSO super-frames (passed whole to a port that takes them).
    pub tx_gso: u64,
}

impl PortCounters {
    /// Total drops.
    pub fn dropped(&self) -> u64 {
        self.drops.total()
    }
}

/// Bridge-wide event counters (not drops).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BridgeCounters {
    /// Frames that named a port the topology does not have (caller error; nothing to attribute to).
    pub unknown_port: u64,
    /// New FDB entries.
    pub fdb_learned: u64,
    /// Station moves.
    pub fdb_moved: u64,
    /// Sources not learned because their port had reached its cap.
    pub fdb_cap_reached: u64,
    /// Entries removed by aging.
    pub fdb_aged: u64,
    /// Frames sent out by flooding to every port of a network (one per copy).
    pub flooded_copies: u64,
    /// Frames to a multicast (or broadcast) MAC flooded to every port: broadcast, non-IP
    /// multicast, IPv4 224.0.0.0/24, IPv6 ff02::1.
    pub multicast_flooded: u64,
    /// Frames to a snooped multicast group sent only to its listeners (member ports and ports
    /// not snooped yet).
    pub multicast_to_listeners: u64,
    /// Copies those frames left as (one per listener port).
    pub multicast_listener_copies: u64,
    /// IGMP and MLD reports and leaves learned from (each also counted `local`).
    pub multicast_reports: u64,
    /// IGMP and MLD general queries sent (one per port and protocol).
    pub multicast_queries_sent: u64,
    /// Joins not learned because their port had reached `bridge.max_groups_per_port`.
    pub multicast_group_cap_reached: u64,
    /// Plain frames made in software from offloaded ones, for ports that cannot take them
    /// (segments of GSO super-frames, frames whose partial checksum was finished).
    pub gso_segments: u64,
    /// Offloaded frames that could not be segmented on their way out (should stay 0: the
    /// ingress check refuses what segmentation cannot cut).
    pub gso_failed: u64,
    /// ARP requests the gateway sent.
    pub arp_requests_sent: u64,
    /// ARP replies the gateway sent.
    pub arp_replies_sent: u64,
    /// ICMP echo replies the gateway sent.
    pub echo_replies_sent: u64,
    /// Neighbour solicitations the gateway sent (IPv6's ARP requests).
    pub neighbor_solicitations_sent: u64,
    /// Neighbour advertisements the gateway sent (IPv6's ARP replies).
    pub neighbor_advertisements_sent: u64,
    /// Router advertisements the gateway sent.
    pub router_advertisements_sent: u64,
    /// ICMP errors the gateway originated (time exceeded, fragmentation needed).
    pub icmp_errors_sent: u64,
    /// Packets translated by NAT.
    pub nat_translated: u64,
    /// DNS queries the gateway answered itself.
    pub dns_answered: u64,
    /// Frames sent to another host in VXLAN (one per copy: a flood to three hosts is three).
    pub vxlan_encapsulated: u64,
    /// Frames received from another host in VXLAN.
    pub vxlan_decapsulated: u64,
    /// Frames for another host dropped: its VTEP's next hop did not answer ARP in time, or too
    /// many were waiting for it.
    pub vxlan_unresolved: u64,
    /// Frames for another host dropped: too long for the uplink's MTU once encapsulated.
    pub vxlan_too_big: u64,
    /// Frames from a gateway MAC kept on this host (each host has its own gateway).
    pub vxlan_gateway_kept: u64,
    /// ARP requests for remote endpoints answered here instead of flooded to every host.
    pub arp_suppressed: u64,
    /// Remote MACs not learned: the overlay network holds the most it learns.
    pub overlay_learn_cap_reached: u64,
    /// Learned remote MACs removed by aging.
    pub overlay_aged: u64,
}

impl DropCounts {
    /// Adds another set of counts (merging workers' counters).
    pub fn merge(&mut self, other: &DropCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }
}

impl PortCounters {
    /// Adds another port's counters (merging workers' counters).
    pub fn merge(&mut self, o: &PortCounters) {
        self.rx_frames += o.rx_frames;
        self.rx_bytes += o.rx_bytes;
        self.tx_frames += o.tx_frames;
        self.tx_bytes += o.tx_bytes;
        self.forwarded += o.forwarded;
        self.local += o.local;
        self.queued += o.queued;
        self.drops.merge(&o.drops);
        self.rx_kernel_drops += o.rx_kernel_drops;
        self.tx_errors += o.tx_errors;
        self.rx_gso += o.rx_gso;
        self.tx_gso += o.tx_gso;
    }
}

impl BridgeCounters {
    /// Adds another worker's bridge counters.
    pub fn merge(&mut self, o: &BridgeCounters) {
        self.unknown_port += o.unknown_port;
        self.fdb_learned += o.fdb_learned;
        self.fdb_moved += o.fdb_moved;
        self.fdb_cap_reached += o.fdb_cap_reached;
        self.fdb_aged += o.fdb_aged;
        self.flooded_copies += o.flooded_copies;
        self.multicast_flooded += o.multicast_flooded;
        self.multicast_to_listeners += o.multicast_to_listeners;
        self.multicast_listener_copies += o.multicast_listener_copies;
        self.multicast_reports += o.multicast_reports;
        self.multicast_queries_sent += o.multicast_queries_sent;
        self.multicast_group_cap_reached += o.multicast_group_cap_reached;
        self.gso_segments += o.gso_segments;
        self.gso_failed += o.gso_failed;
        self.arp_requests_sent += o.arp_requests_sent;
        self.arp_replies_sent += o.arp_replies_sent;
        self.echo_replies_sent += o.echo_replies_sent;
        self.neighbor_solicitations_sent += o.neighbor_solicitations_sent;
        self.neighbor_advertisements_sent += o.neighbor_advertisements_sent;
        self.router_advertisements_sent += o.router_advertisements_sent;
        self.icmp_errors_sent += o.icmp_errors_sent;
        self.nat_translated += o.nat_translated;
        self.dns_answered += o.dns_answered;
        self.vxlan_encapsulated += o.vxlan_encapsulated;
        self.vxlan_decapsulated += o.vxlan_decapsulated;
        self.vxlan_unresolved += o.vxlan_unresolved;
        self.vxlan_too_big += o.vxlan_too_big;
        self.vxlan_gateway_kept += o.vxlan_gateway_kept;
        self.arp_suppressed += o.arp_suppressed;
        self.overlay_learn_cap_reached += o.overlay_learn_cap_reached;
        self.overlay_aged += o.overlay_aged;
    }
}
