//! Topology TOML text for tests: a small builder and the canned topologies tests share.
//!
//! The builder writes the layout of the committed fixtures (`pcap-fixtures/*/topo.toml`): one
//! table per block, blocks separated by one blank line, `key = value` lines in call order. It
//! returns text; callers parse it with `switch::Config::from_toml`, so a typo in a test's topology
//! fails the same way a user's file does.

/// The uplink's address in the canned topologies.
pub const UPLINK_ADDRESS: &str = "203.0.113.2";
/// The uplink's subnet.
pub const UPLINK_SUBNET: &str = "203.0.113.0/24";
/// The uplink's next hop (the "router").
pub const NEXT_HOP: &str = "203.0.113.1";
/// The next hop's static MAC, where a topology sets one.
pub const NEXT_HOP_MAC: &str = "02:00:00:00:00:fe";

/// Topology text being built, block by block.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Topo {
    blocks: Vec<String>,
}

/// A TOML basic string.
fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

impl Topo {
    /// An empty topology.
    pub fn new() -> Topo {
        Topo::default()
    }

    /// Starts a block `[name]` (a table) or `[[name]]` (`array = true`).
    pub fn block(mut self, name: &str, array: bool) -> Topo {
        self.blocks.push(if array {
            format!("[[{name}]]\n")
        } else {
            format!("[{name}]\n")
        });
        self
    }

    /// Adds `key = value` to the last block; `value` is TOML as written (`2`, `false`,
    /// `"text"`, `["a"]`).
    ///
    /// # Panics
    /// If no block has been started.
    pub fn set(mut self, key: &str, value: impl std::fmt::Display) -> Topo {
        let last = self.blocks.last_mut().expect("set() needs a block first");
        last.push_str(&format!("{key} = {value}\n"));
        self
    }

    /// Adds `key = "value"` to the last block.
    pub fn set_str(self, key: &str, value: &str) -> Topo {
        self.set(key, quoted(value))
    }

    /// `[bridge]` with its settings as `(key, value)` TOML pairs.
    pub fn bridge(self, settings: &[(&str, &str)]) -> Topo {
        settings
            .iter()
            .fold(self.block("bridge", false), |t, (k, v)| t.set(k, v))
    }

    /// An L2-only network (no subnet, no gateway).
    pub fn network(self, name: &str) -> Topo {
        self.block("network", true).set_str("name", name)
    }

    /// A network with a subnet and a gateway; options (`icc`, `internal`, ...) follow with
    /// [`Topo::set`].
    pub fn routed(self, name: &str, subnet: &str, gateway: &str) -> Topo {
        self.network(name)
            .set_str("subnet", subnet)
            .set_str("gateway", gateway)
    }

    /// A port of `kind` on `network`, or with no network (the uplink's port).
    pub fn port_of(self, name: &str, kind: &str, network: Option<&str>) -> Topo {
        let t = self
            .block("port", true)
            .set_str("name", name)
            .set_str("kind", kind);
        match network {
            Some(n) => t.set_str("network", n),
            None => t,
        }
    }

    /// A pcap port on `network`.
    pub fn port(self, name: &str, network: &str) -> Topo {
        self.port_of(name, "pcap", Some(network))
    }

    /// Pcap ports `names` on `network`, in order.
    pub fn ports(self, network: &str, names: &[&str]) -> Topo {
        names.iter().fold(self, |t, n| t.port(n, network))
    }

    /// A pcap port with no network: the uplink's.
    pub fn uplink_port(self, name: &str) -> Topo {
        self.port_of(name, "pcap", None)
    }

    /// The standard uplink on `port`: [`UPLINK_ADDRESS`] in [`UPLINK_SUBNET`], next hop
    /// [`NEXT_HOP`] resolved by ARP.
    pub fn uplink(self, port: &str) -> Topo {
        self.block("uplink", false)
            .set_str("port", port)
            .set_str("address", UPLINK_ADDRESS)
            .set_str("subnet", UPLINK_SUBNET)
            .set_str("next_hop", NEXT_HOP)
    }

    /// The standard uplink with the next hop's MAC set ([`NEXT_HOP_MAC`]): no ARP involved.
    pub fn uplink_static(self, port: &str) -> Topo {
        self.uplink(port).set_str("next_hop_mac", NEXT_HOP_MAC)
    }

    /// A published port: `proto` `host_port` to `container_ip`:`container_port`.
    pub fn publish(
        self,
        proto: &str,
        host_port: u16,
        container_ip: &str,
        container_port: u16,
    ) -> Topo {
        self.block("publish", true)
            .set_str("proto", proto)
            .set("host_port", host_port)
            .set_str("container_ip", container_ip)
            .set("container_port", container_port)
    }

    /// Appends the blocks of `other`.
    pub fn extend(mut self, other: Topo) -> Topo {
        self.blocks.extend(other.blocks);
        self
    }

    /// The TOML text.
    pub fn build(&self) -> String {
        self.blocks.join("\n")
    }
}

/// Network `bridge` 172.17.0.0/16 (gateway .1) with pcap ports c1 and c2, the uplink port `up`
/// with the static uplink, and tcp 8080 published to 172.17.0.3:80: the NAT golden scenarios'
/// topology. Callers add blocks after it.
pub fn standard() -> Topo {
    Topo::new()
        .routed("bridge", "172.17.0.0/16", "172.17.0.1")
        .ports("bridge", &["c1", "c2"])
        .uplink_port("up")
        .uplink_static("up")
        .publish("tcp", 8080, "172.17.0.3", 80)
}

/// Three networks, Docker style: `bridge` 172.17.0.0/16, `backend` 172.18.0.0/16 with
/// `icc = false`, `vault` 172.19.0.0/16 with `internal = true` (no ports yet).
pub fn three_networks() -> Topo {
    Topo::new()
        .routed("bridge", "172.17.0.0/16", "172.17.0.1")
        .routed("backend", "172.18.0.0/16", "172.18.0.1")
        .set("icc", false)
        .routed("vault", "172.19.0.0/16", "172.19.0.1")
        .set("internal", true)
}

/// One L2 network `lan` with pcap ports `p1`..`pN`.
pub fn lan(ports: usize) -> Topo {
    let names: Vec<String> = (1..=ports).map(|i| format!("p{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    Topo::new().network("lan").ports("lan", &names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_is_the_fixture_layout() {
        let want = "[[network]]\nname = \"bridge\"\nsubnet = \"172.17.0.0/16\"\ngateway = \"172.17.0.1\"\n\n[[port]]\nname = \"c1\"\nkind = \"pcap\"\nnetwork = \"bridge\"\n\n[[port]]\nname = \"c2\"\nkind = \"pcap\"\nnetwork = \"bridge\"\n\n[[port]]\nname = \"up\"\nkind = \"pcap\"\n\n[uplink]\nport = \"up\"\naddress = \"203.0.113.2\"\nsubnet = \"203.0.113.0/24\"\nnext_hop = \"203.0.113.1\"\nnext_hop_mac = \"02:00:00:00:00:fe\"\n\n[[publish]]\nproto = \"tcp\"\nhost_port = 8080\ncontainer_ip = \"172.17.0.3\"\ncontainer_port = 80\n";
        assert_eq!(standard().build(), want);
    }

    #[test]
    fn bridge_settings_and_lan() {
        let t = Topo::new()
            .bridge(&[("aging_secs", "2")])
            .extend(lan(2))
            .build();
        assert_eq!(
            t,
            "[bridge]\naging_secs = 2\n\n[[network]]\nname = \"lan\"\n\n[[port]]\nname = \"p1\"\nkind = \"pcap\"\nnetwork = \"lan\"\n\n[[port]]\nname = \"p2\"\nkind = \"pcap\"\nnetwork = \"lan\"\n"
        );
    }
}
