//! Requests: one JSON object per line, a tagged enum
//! (`{"cmd":"connect","network":"bridge","netns":"/run/netns/c1"}`). A line longer than the limit
//! ([`MAX_REQUEST`] by default), not UTF-8 or not a known request is refused with a
//! [`DecodeError`] whose text tells the client what to send; the connection carries on.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Longest request line accepted by default (`limits.control_request_bytes`).
pub const MAX_REQUEST: usize = 64 * 1024;

/// A control request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Daemon status: uptime, ports, containers.
    Status,
    /// Per-port counters and drops by reason.
    Stats,
    /// The FDB.
    Fdb,
    /// Overlay networks: their VTEP peers and remote endpoints (`network`, `vni`, `peers`,
    /// `endpoints` of `mac`, `ip`, `vtep`, `origin` = `cluster` or `learned`).
    Overlay,
    /// Tracked connections.
    Conntrack,
    /// Forget every tracked connection.
    ConntrackFlush,
    /// Attach a container's network namespace to a network. The answer is the container
    /// (`name`, `network`, `port`, `ip`, `mac`, `netns`, `ifname`, `peer`, `prefix_len`,
    /// `gateway`, `dns`, and on a dual-stack network `ip6`, `prefix_len6`, `gateway6`).
    Connect {
        /// Network name.
        network: String,
        /// Path of the namespace (/run/netns/NAME or /proc/PID/ns/net); none with
        /// `peer_in_host`.
        #[serde(default)]
        netns: Option<String>,
        /// Container name (defaults to the namespace's file name, `pid-PID` for
        /// /proc/PID/ns/net).
        #[serde(default)]
        name: Option<String>,
        /// Interface name inside the namespace (default eth0).
        #[serde(default)]
        ifname: Option<String>,
        /// Address to use (default: lowest free).
        #[serde(default)]
        ip: Option<Ipv4Addr>,
        /// IPv6 address to use on a dual-stack network (default: lowest free from ::2).
        #[serde(default)]
        ip6: Option<std::net::Ipv6Addr>,
        /// MAC to use (default: derived from the address).
        #[serde(default)]
        mac: Option<String>,
        /// Leave the container's end of the veth pair in the daemon's namespace, down, with
        /// its MAC and MTU set but no address (its name is the answer's `peer`): a runtime
        /// such as Docker moves it into the container and configures it.
        #[serde(default)]
        peer_in_host: bool,
    },
    /// Detach a container. Its published ports stay recorded and come back when a container
    /// of that name connects to the network again (as Docker's do across restarts), unless
    /// `unpublish`.
    Disconnect {
        /// Network name.
        network: String,
        /// Container name.
        name: String,
        /// Also remove the container's published ports.
        #[serde(default)]
        unpublish: bool,
        /// Succeed (answering null) when no such container is connected.
        #[serde(default)]
        missing_ok: bool,
        /// Only when the container was attached from this namespace path: a container that
        /// has since taken the name from another namespace stays (answering null with
        /// `missing_ok`, else an error). Closes the race between a runtime's late delete of
        /// an old container and a new one of that name.
        #[serde(default)]
        netns: Option<String>,
    },
    /// Checks that a connected container's network is as it was made: the host end on the
    /// switch and, when its namespace is known, its interface there up with its address and
    /// MAC. The answer is the container, or an error naming what differs.
    ContainerCheck {
        /// Network name.
        network: String,
        /// Container name.
        name: String,
    },
    /// Create a network.
    NetworkCreate {
        /// Name.
        name: String,
        /// Subnet (default: next free /16 of the pool).
        #[serde(default)]
        subnet: Option<ipnet::Ipv4Net>,
        /// Gateway (default: first host).
        #[serde(default)]
        gateway: Option<Ipv4Addr>,
        /// Allocate from this range only.
        #[serde(default)]
        ip_range: Option<ipnet::Ipv4Net>,
        /// No uplink.
        #[serde(default)]
        internal: bool,
        /// Inter-container communication.
        #[serde(default = "yes")]
        icc: bool,
        /// Containers may send only from their own MAC and address.
        #[serde(default = "yes")]
        anti_spoofing: bool,
        /// MTU.
        #[serde(default)]
        mtu: Option<u16>,
        /// Labels.
        #[serde(default)]
        labels: std::collections::BTreeMap<String, String>,
        /// Dual-stack: an IPv6 prefix beside the IPv4 subnet (Docker's `--ipv6`).
        #[serde(default)]
        ipv6: bool,
        /// The IPv6 prefix (default: the next free /64 of fd00:7673:7700::/48); implies
        /// `ipv6`.
        #[serde(default)]
        subnet6: Option<ipnet::Ipv6Net>,
        /// The IPv6 gateway (default: the prefix's ::1).
        #[serde(default)]
        gateway6: Option<std::net::Ipv6Addr>,
        /// `overlay`: a network shared by every daemon of the cluster (`vswitch daemon
        /// --cluster`), carried between hosts in VXLAN; `macvlan`: bridged onto the uplink's
        /// LAN (its `subnet` and `gateway` are the LAN's, no NAT, no DNS of vswitch's);
        /// default (`vswitch`, `bridge`): this host's alone.
        #[serde(default)]
        driver: Option<String>,
        /// A macvlan network's 802.1Q VLAN id on the uplink (1-4094; driver `macvlan` only).
        #[serde(default)]
        vlan: Option<u16>,
        /// A macvlan network's mode: `bridge` (default: its containers reach each other) or
        /// `private` (they reach the LAN only); driver `macvlan` only.
        #[serde(default)]
        macvlan_mode: Option<String>,
        /// Addresses of the subnet never handed out, by name (Docker's `--aux-address`).
        #[serde(default)]
        aux_addresses: std::collections::BTreeMap<String, Ipv4Addr>,
    },
    /// List networks.
    NetworkLs,
    /// Inspect networks (JSON shaped like `docker network inspect`).
    NetworkInspect {
        /// Network names.
        names: Vec<String>,
    },
    /// Remove a network without containers.
    NetworkRm {
        /// Name.
        name: String,
    },
    /// Publish a host port (or a range of them) to a container.
    PortPublish {
        /// Network of the container.
        network: String,
        /// Container name.
        container: String,
        /// Host address to listen on: none or 0.0.0.0 for every address (the uplink's and the
        /// host's own), a loopback address for the host only.
        #[serde(default)]
        host_ip: Option<Ipv4Addr>,
        /// Port on the host.
        host_port: u16,
        /// Last port of a range `host_port..=host_port_last`; container ports advance in step.
        #[serde(default)]
        host_port_last: Option<u16>,
        /// Port in the container.
        container_port: u16,
        /// tcp or udp.
        proto: String,
        /// Let the host's own connections (localhost, its addresses) in through the daemon's
        /// host proxy (default). Off for a runtime that holds the host port itself.
        #[serde(default = "yes")]
        host_proxy: bool,
    },
    /// List published ports.
    PortLs,
    /// Remove a published port (or a range).
    PortRm {
        /// tcp or udp.
        proto: String,
        /// Host port.
        host_port: u16,
        /// Last port of a range.
        #[serde(default)]
        host_port_last: Option<u16>,
    },
    /// Live capture: after the `ok` line (whose result names the ports taken), the connection
    /// carries [`crate::capture::Record`]s until the client shuts down its writing half.
    Capture {
        /// A port (`vsw3`, `up0`), a container (`NAME` or `NETWORK/NAME`) or a network.
        target: String,
        /// A filter in tcpdump's syntax.
        #[serde(default)]
        filter: Option<String>,
        /// Bytes kept of each frame (default 262144: all of a super-frame).
        #[serde(default)]
        snaplen: Option<u32>,
        /// `in` (read from the port), `out` (written to it, after NAT) or `both` (default).
        #[serde(default)]
        direction: Option<String>,
    },
    /// Stream events (conntrack, containers, ports, limits): after the `ok` line, one JSON
    /// object per line until the client closes (see `vswitch events`).
    Events,
    /// Make a part of the daemon fail, to test what follows: `panic_loop` panics packet loop
    /// `worker`. Refused unless the daemon runs with `--fault-injection`.
    FaultInject {
        /// What to break: `panic_loop`.
        action: String,
        /// The packet loop.
        #[serde(default)]
        worker: usize,
    },
    /// Stop the daemon (removing the links it created).
    Shutdown,
    /// Stop the daemon keeping its state (as SIGTERM with `--keep-state`): the links stay and
    /// the connections are written for the next start to restore.
    Upgrade,
}

fn yes() -> bool {
    true
}

/// Why a request line was refused; the text is sent back to the client as the error.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The line is longer than the limit.
    #[error("request longer than {0} bytes: send one JSON object per line")]
    TooLong(usize),
    /// Not UTF-8.
    #[error("request is not UTF-8 text: send one JSON object per line")]
    NotUtf8,
    /// Not a known request.
    #[error("bad request: {0} (send one JSON object per line, e.g. {{\"cmd\":\"status\"}})")]
    Json(#[from] serde_json::Error),
}

/// Decodes one request line (with or without its newline); `max` is the longest line accepted.
pub fn decode_request(line: &[u8], max: usize) -> Result<Request, DecodeError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if line.len() > max {
        return Err(DecodeError::TooLong(max));
    }
    let text = std::str::from_utf8(line).map_err(|_| DecodeError::NotUtf8)?;
    Ok(serde_json::from_str(text.trim())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_requests_and_names_what_is_wrong() {
        assert!(matches!(
            decode_request(b"{\"cmd\":\"status\"}\n", MAX_REQUEST),
            Ok(Request::Status)
        ));
        let long = vec![b' '; 100];
        assert!(matches!(
            decode_request(&long, 99),
            Err(DecodeError::TooLong(99))
        ));
        assert!(matches!(
            decode_request(b"\xff\xfe{}", MAX_REQUEST),
            Err(DecodeError::NotUtf8)
        ));
        let e = decode_request(b"{\"cmd\":\"launch\"}", MAX_REQUEST).unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
    }
}
