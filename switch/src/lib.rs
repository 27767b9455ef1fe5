//! The vswitch pipeline: per-network L2 bridges (FDB with learning, aging, station moves,
//! flooding), and the stages composed over one batch of frames.
//!
//! Nothing here reads a clock or makes a syscall: drivers (pcap replay, the bench, the packet
//! loops) pass frames and `now` in, and take frames out.

pub mod config;
pub mod counters;
pub mod fdb;
pub mod pipeline;

pub use config::{Config, ConfigError, NetworkId, PortId, PortKind, Topology};
pub use counters::{BridgeCounters, DropReason, PortCounters};
pub use pipeline::{NANOS_PER_SEC, Packet, Pipeline, Snapshot};
