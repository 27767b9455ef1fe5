//! Network address translation for vswitch: the pure, per-packet half of NAT.
//!
//! This crate owns:
//! - [`rewrite`]: in-place rewrite of an IPv4 packet's addresses and TCP/UDP ports or ICMP query
//!   identifier, with incremental checksum updates (RFC 1624), and [`rewrite_prepared`], the
//!   same with a flow's checksum terms summed once ([`Prepared`]);
//! - [`icmp_error_inner`] and [`rewrite_icmp_error`]: translation of ICMP errors, whose quoted
//!   packet must be translated along with the outer header (RFC 5508, RFC 3022 section 4.3);
//! - [`rewrite6`]: the same for IPv6 (NAT66), whose upper-layer checksums all cover the
//!   pseudo-header;
//! - [`allocate_port`]: deterministic source-port selection for masquerade;
//! - [`EimTable`]: the RFC 4787 endpoint-independent mapping table for UDP.
//!
//! It keeps no connection state of its own (conntrack does) and is pure: no syscalls, no clock
//! (callers pass `now` in nanoseconds), no randomness (callers pass a seed, see [`hash_seed`]),
//! and no allocation per packet.
//!
//! Invariants of every rewrite: frames are untrusted, so nothing here panics on any input;
//! on error the frame is left unchanged; only fields whose value changes are written; bytes after
//! the IPv4 total length (Ethernet padding) are neither written nor summed; and a checksum that
//! was wrong before a rewrite is still wrong by the same amount after it (never "fixed").
//!
//! # ICMP query identifiers
//! ICMP queries (echo, timestamp, information, address mask) have no ports; their identifier
//! plays the part of the querier's port (RFC 5508). An [`Endpoint`]'s `port` is the
//! identifier, and the convention is: **a request takes its identifier from the source endpoint
//! (`src.port`), a reply from the destination endpoint (`dst.port`)**, since the querier sends the
//! request and receives the reply. [`icmp_error_inner`] reports quoted queries the same way.

mod eim;
mod icmp_error;
mod port;
mod prepared;
mod rewrite;
mod rewrite6;
mod wire;

pub use eim::EimTable;
pub use icmp_error::{InnerPacket, icmp_error_inner, is_icmp_error, rewrite_icmp_error};
pub use port::{PortRange, allocate_port, hash_seed};
pub use prepared::{Prepared, rewrite_prepared};
pub use rewrite::{is_query_reply, is_query_request, rewrite, rewrite_offloaded};
pub use rewrite6::{Endpoint6, rewrite6};

use std::fmt;
use std::net::Ipv4Addr;

/// One side of a flow: an IPv4 address and a TCP/UDP port, or for ICMP queries the identifier
/// (see the crate docs for which side carries it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// IPv4 address.
    pub addr: Ipv4Addr,
    /// TCP/UDP port, or ICMP query identifier.
    pub port: u16,
}

impl Endpoint {
    /// An endpoint from its address and port.
    #[inline]
    pub const fn new(addr: Ipv4Addr, port: u16) -> Self {
        Self { addr, port }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.port)
    }
}

/// Why a packet could not be rewritten. The frame is left unchanged in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// The frame was not classified as the IP version the rewrite is for.
    #[error(
        "frame is not of the IP version this rewrite is for: use rewrite for IPv4, rewrite6 for IPv6"
    )]
    NotIpv4,
    /// An offset of the classification falls outside the frame or a header is cut short.
    #[error(
        "packet is truncated or does not match its classification: classify the frame again \
         and drop it if it is malformed"
    )]
    Truncated,
    /// The packet is not an ICMP error whose quoted packet can be translated, or the
    /// [`InnerPacket`] given does not describe this frame.
    #[error(
        "ICMP message has no translatable quoted packet (or the InnerPacket is from another \
         frame): parse it with icmp_error_inner first, and drop it if that returns None"
    )]
    NotTranslatable,
}

/// Errors of NAT resource management.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NatError {
    /// Every candidate port is in use for this destination.
    #[error(
        "no free NAT source port in {first}-{last} for this destination: widen the port range \
         or wait for connections to time out"
    )]
    PortsExhausted {
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
    },
    /// The configured range holds no port.
    #[error("NAT port range {first}-{last} is empty: set first <= last (e.g. 32768-60999)")]
    InvalidPortRange {
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
    },
}

#[cfg(test)]
pub(crate) mod testutil;
