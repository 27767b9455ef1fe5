//! Counters of the gateway, shared with other threads through atomics.
//!
//! Invariant (checked by tests): `frames_rx` equals the frames handled
//! (`arp_rx + ndp_rx + tcp_rx + udp_rx + icmp_rx`, IPv6 included) plus every `drop_*` counter of received frames.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Live counters, updated by the gateway thread (relaxed atomics).
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A plain copy of [`Counters`] at one moment.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct CountersSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            /// Reads every counter.
            pub fn snapshot(&self) -> CountersSnapshot {
                CountersSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Frames received from the switch.
    frames_rx,
    /// Frames sent to the switch.
    frames_tx,
    /// ARP frames handled (requests answered or others ignored).
    arp_rx,
    /// IPv6 neighbour solicitations handled (answered, or ignored: duplicate address detection,
    /// a node asking for its own address).
    ndp_rx,
    /// TCP segments handed to the TCP engine (or used to start a connection).
    tcp_rx,
    /// UDP datagrams handled.
    udp_rx,
    /// ICMP and ICMPv6 echo requests handled.
    icmp_rx,
    /// ARP replies sent.
    arp_replies,
    /// IPv6 neighbour advertisements sent (answers to solicitations).
    ndp_replies,
    /// Received frames dropped: too short or inconsistent headers, bad IPv4 header checksum.
    drop_malformed,
    /// Received frames dropped: not addressed to the gateway's MAC, or not from U.
    drop_not_for_us,
    /// Received frames dropped: other EtherTypes, IP protocols (other ICMP and ICMPv6 messages,
    /// IPv6 extension headers), fragments, broadcast and multicast, IPv6 when not configured.
    drop_unsupported,
    /// Received frames dropped: a SYN retransmitted while its host connect is in progress.
    drop_syn_pending,
    /// Received frames dropped: ICMP echo when unprivileged ICMP sockets are not allowed.
    drop_icmp_unavailable,
    /// Received frames dropped: the host socket could not take the datagram.
    drop_host_send,
    /// Received datagrams dropped: a destination containers may not reach through host
    /// sockets (the host's loopback unless mapped, broadcast, multicast).
    drop_forbidden,
    /// Frames to the switch dropped: larger than the MTU.
    drop_too_big,
    /// Frames to the switch dropped: the link refused them (not a full buffer).
    drop_link_tx,
    /// TCP connections opened from the switch (host connect succeeded).
    tcp_opened,
    /// TCP connections from the switch refused (host connect failed or timed out; RST sent).
    tcp_refused,
    /// TCP connections accepted on published ports.
    tcp_published,
    /// TCP flows freed.
    tcp_closed,
    /// TCP flows ended by a reset or an error on either side.
    tcp_reset,
    /// UDP flows opened (outbound and published clients).
    udp_opened,
    /// UDP and ICMP flows closed after being idle.
    dgram_expired,
    /// ICMP echo flows opened.
    icmp_opened,
    /// Payload bytes from the switch to host sockets.
    bytes_to_host,
    /// Payload bytes from host sockets to the switch.
    bytes_from_host,
}

impl Counters {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

impl CountersSnapshot {
    /// Sum of the `drop_*` counters that count received frames.
    pub fn rx_dropped(&self) -> u64 {
        self.drop_malformed
            + self.drop_not_for_us
            + self.drop_unsupported
            + self.drop_syn_pending
            + self.drop_icmp_unavailable
            + self.drop_host_send
            + self.drop_forbidden
    }

    /// Received frames that were handled rather than dropped.
    pub fn rx_handled(&self) -> u64 {
        self.arp_rx + self.ndp_rx + self.tcp_rx + self.udp_rx + self.icmp_rx
    }
}
