//! The vswitch pipeline: per-network L2 bridges (FDB with learning, aging, station moves,
//! flooding), each network's gateway (ARP, ICMP, routing to the uplink with conntrack and NAT),
//! and the stages composed over one batch of frames.
//!
//! Layout: [`pipeline`] composes the L2 stage (`bridge`, over [`fdb`], with `multicast`
//! snooping) and the L3 stage (`l3`: routing, ICMP errors, fragments, DNS, [`neighbor`] tables)
//! over one frame context (`frame`); [`overlay`] carries overlay networks between hosts in
//! VXLAN, [`vlan`] macvlan networks onto the uplink's LAN, with 802.1Q tags.
//!
//! Nothing here reads a clock or makes a syscall: drivers (pcap replay, the bench, the packet
//! loops) pass frames and `now` in, and take frames out.

pub mod affinity;
mod bridge;
pub mod config;
pub mod counters;
pub mod fdb;
mod frame;
mod l3;
mod multicast;
pub mod overlay;
pub mod pipeline;
pub mod runtime;
pub mod saved;
pub mod synth;
pub mod vlan;

pub use config::{Config, ConfigError, NetworkId, PortAddress, PortId, PortKind, Topology};
pub use counters::{BridgeCounters, DropReason, PortCounters};
pub use l3::dns as dns_gateway;
pub use l3::{fragments, neighbor};
pub use pipeline::{
    FlowCacheStats, GroupRowNamed, NANOS_PER_SEC, Packet, Pipeline, PortError, PortSnapshot,
    Snapshot,
};
