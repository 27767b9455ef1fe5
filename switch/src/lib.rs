//! The vswitch pipeline: per-network L2 bridges (FDB with learning, aging, station moves,
//! flooding), each network's gateway (ARP, ICMP, routing to the uplink with conntrack and NAT),
//! and the stages composed over one batch of frames.
//!
//! Nothing here reads a clock or makes a syscall: drivers (pcap replay, the bench, the packet
//! loops) pass frames and `now` in, and take frames out.

pub mod affinity;
pub mod config;
pub mod counters;
pub mod dns_gateway;
pub mod fdb;
pub mod fragments;
mod gateway;
pub mod neighbor;
pub mod pipeline;
pub mod runtime;
pub mod synth;

pub use config::{Config, ConfigError, NetworkId, PortAddress, PortId, PortKind, Topology};
pub use counters::{BridgeCounters, DropReason, PortCounters};
pub use pipeline::{NANOS_PER_SEC, Packet, Pipeline, PortError, Snapshot};
