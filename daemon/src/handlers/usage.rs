//! Numbers `vswitch stats --json` and the metrics endpoint both show, beyond the pipeline's
//! snapshot: NAT source ports in use per uplink address, each packet loop's work, and the
//! control requests served.

use crate::state::{Daemon, lock};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use switch::Snapshot;

/// Masquerade source ports held by tracked connections, for one uplink address and protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct NatPorts {
    pub(crate) address: IpAddr,
    pub(crate) proto: String,
    pub(crate) ports: usize,
}

/// Counts, from the conntrack entries, the distinct (address, port) pairs masquerading took:
/// entries whose reply goes to another address than the original source.
pub(crate) fn nat_ports_in_use(s: &Snapshot) -> Vec<NatPorts> {
    let mut held: BTreeMap<(IpAddr, String), BTreeSet<u16>> = BTreeMap::new();
    let v4 = s
        .conntrack
        .iter()
        .filter(|e| e.reply.dst != e.original.src)
        .map(|e| {
            (
                IpAddr::V4(e.reply.dst),
                e.reply.proto.to_string(),
                e.reply.dst_port,
            )
        });
    let v6 = s
        .conntrack6
        .iter()
        .filter(|e| e.reply.dst != e.original.src)
        .map(|e| {
            (
                IpAddr::V6(e.reply.dst),
                e.reply.proto.to_string(),
                e.reply.dst_port,
            )
        });
    for (address, proto, port) in v4.chain(v6) {
        held.entry((address, proto)).or_default().insert(port);
    }
    held.into_iter()
        .map(|((address, proto), ports)| NatPorts {
            address,
            proto,
            ports: ports.len(),
        })
        .collect()
}

/// Control requests served, by command and result.
#[derive(Debug, Default)]
pub(crate) struct RequestCounts(std::sync::Mutex<BTreeMap<(String, &'static str), u64>>);

/// One line of [`RequestCounts`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct RequestCount {
    pub(crate) cmd: String,
    pub(crate) result: &'static str,
    pub(crate) count: u64,
}

impl RequestCounts {
    /// Counts one request `cmd` (`invalid` for a line that did not decode), `ok` or not.
    pub(crate) fn count(&self, cmd: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        *lock(&self.0).entry((cmd.to_string(), result)).or_default() += 1;
    }

    pub(crate) fn all(&self) -> Vec<RequestCount> {
        lock(&self.0)
            .iter()
            .map(|((cmd, result), n)| RequestCount {
                cmd: cmd.clone(),
                result,
                count: *n,
            })
            .collect()
    }
}

/// The name a request line's `cmd` carries.
pub(crate) fn cmd_of(req: &control::Request) -> String {
    serde_json::to_value(req)
        .ok()
        .and_then(|v| v["cmd"].as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// Each packet loop's counters, by worker.
pub(crate) fn loops(d: &Daemon) -> Option<Vec<datapath::engine::IoCounters>> {
    d.call_all(|e| e.io_counters())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switch::{Config, Packet, Pipeline, PortId};

    #[test]
    fn masqueraded_flows_count_their_ports_per_uplink_address() {
        let topo = testkit::topology::standard().build();
        let mut p = Pipeline::new(&Config::from_toml(&topo).unwrap()).unwrap();
        let (c1, gw) = ([172, 17, 0, 2].into(), [172, 17, 0, 1].into());
        let remote = [198, 51, 100, 1].into();
        let mut out = Vec::new();
        // Three UDP flows from c1 to the outside (one sent twice), and one inside the network.
        for (dst, sport) in [
            (remote, 4000),
            (remote, 4001),
            (remote, 4002),
            (remote, 4000),
        ] {
            let f = testkit::frames::udp(
                packet::MacAddr::docker(c1),
                packet::MacAddr::docker(gw),
                c1,
                dst,
                sport,
                53,
                b"q",
            );
            p.process(1_000, &mut vec![Packet::new(PortId(0), f)], &mut out);
        }
        let nat = nat_ports_in_use(&p.snapshot(2_000));
        assert_eq!(
            nat,
            [NatPorts {
                address: "203.0.113.2".parse().unwrap(),
                proto: "udp".into(),
                ports: 3
            }]
        );
    }

    #[test]
    fn requests_are_counted_by_command_and_result() {
        let r = RequestCounts::default();
        r.count("status", true);
        r.count("status", true);
        r.count("connect", false);
        let all = r.all();
        assert_eq!(all.len(), 2);
        assert!(all.contains(&RequestCount {
            cmd: "status".into(),
            result: "ok",
            count: 2
        }));
        assert_eq!(cmd_of(&control::Request::Status), "status");
    }
}
