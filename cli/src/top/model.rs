//! What `vswitch top` shows, without a terminal: a [`Sample`] read from the daemon's `status`,
//! `stats` and `conntrack` answers, and a [`Frame`] of rows with rates made from two samples
//! and the time between them.
//!
//! The daemon's JSON is read field by field: a field that is missing (an older daemon, a
//! counter that does not exist yet) reads as zero or `-`, never as an error.

use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// One port's counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PortSample {
    pub name: String,
    pub network: String,
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Drops by reason, with the kernel's receive-ring drops (`rx_kernel_drops`) and the
    /// device's transmit refusals (`tx_errors`) as reasons of their own.
    pub drops: BTreeMap<String, u64>,
}

impl PortSample {
    fn dropped(&self) -> u64 {
        self.drops.values().sum()
    }
}

/// A container attached to a network.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerSample {
    pub name: String,
    pub network: String,
    pub ip: String,
    pub port: String,
}

/// A network.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetworkSample {
    pub name: String,
    pub subnet: String,
}

/// A tracked connection's identity: its original tuple.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub proto: String,
    pub src: String,
    pub src_port: u64,
    pub dst: String,
    pub dst_port: u64,
}

/// A tracked connection's counters, both directions together.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlowSample {
    pub key: FlowKey,
    /// TCP state, or `replied` / `unreplied` for UDP and ICMP.
    pub state: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Everything one refresh reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub version: String,
    pub uptime_secs: u64,
    pub workers: usize,
    pub networks: Vec<NetworkSample>,
    pub containers: Vec<ContainerSample>,
    pub ports: Vec<PortSample>,
    pub flows: Vec<FlowSample>,
    /// Entries in the conntrack tables (expired ones not yet reclaimed included), when the
    /// daemon says; else the entries it listed.
    pub ct_entries: u64,
    /// Sum of the tables' limits, when the daemon says.
    pub ct_capacity: Option<u64>,
    /// The fullest table's fill, 0..=1, when the daemon says.
    pub ct_fullest: Option<f64>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The sum of a per-direction counter (`[original, reply]`) or a plain number.
fn both_directions(v: &Value) -> u64 {
    match v.as_array() {
        Some(a) => a.iter().map(num).sum(),
        None => num(v),
    }
}

fn flow_state(state: &Value) -> String {
    if let Some(s) = state["state"].as_str() {
        return s.to_string();
    }
    match state["replied"].as_bool() {
        Some(true) => "replied".into(),
        Some(false) => "unreplied".into(),
        None => "-".into(),
    }
}

impl Sample {
    /// Reads the answers to `status`, `stats` and `conntrack`.
    pub fn from_json(status: &Value, stats: &Value, conntrack: &Value) -> Sample {
        let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
        let networks = list(&status["networks"])
            .iter()
            .map(|n| NetworkSample {
                name: text(&n["name"]),
                subnet: text(&n["subnet"]),
            })
            .collect();
        let containers = list(&status["containers"])
            .iter()
            .map(|c| ContainerSample {
                name: text(&c["name"]),
                network: text(&c["network"]),
                ip: text(&c["ip"]),
                port: text(&c["port"]),
            })
            .collect();
        let ports = list(&stats["ports"])
            .iter()
            .map(|p| {
                let mut drops: BTreeMap<String, u64> = p["drops"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), num(v))).collect())
                    .unwrap_or_default();
                for extra in ["rx_kernel_drops", "tx_errors"] {
                    if num(&p[extra]) > 0 {
                        drops.insert(extra.to_string(), num(&p[extra]));
                    }
                }
                PortSample {
                    name: text(&p["name"]),
                    network: text(&p["network"]),
                    rx_frames: num(&p["rx_frames"]),
                    rx_bytes: num(&p["rx_bytes"]),
                    tx_frames: num(&p["tx_frames"]),
                    tx_bytes: num(&p["tx_bytes"]),
                    drops,
                }
            })
            .collect();
        let entries = list(&conntrack["entries"]);
        let flows = entries
            .iter()
            .map(|e| {
                let o = &e["original"];
                FlowSample {
                    key: FlowKey {
                        proto: text(&o["proto"]),
                        src: text(&o["src"]),
                        src_port: num(&o["src_port"]),
                        dst: text(&o["dst"]),
                        dst_port: num(&o["dst_port"]),
                    },
                    state: flow_state(&e["state"]),
                    packets: both_directions(&e["packets"]),
                    bytes: both_directions(&e["bytes"]),
                }
            })
            .collect();
        let tables: Vec<&Value> = stats["conntrack_tables"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|loop_tables| [&loop_tables["ipv4"], &loop_tables["ipv6"]])
            .filter(|t| t["max_entries"].as_u64().is_some_and(|m| m > 0))
            .collect();
        let (ct_entries, ct_capacity, ct_fullest) = if tables.is_empty() {
            (entries.len() as u64, None, None)
        } else {
            let fill = |t: &&Value| num(&t["entries"]) as f64 / num(&t["max_entries"]) as f64;
            (
                tables.iter().map(|t| num(&t["entries"])).sum(),
                Some(tables.iter().map(|t| num(&t["max_entries"])).sum()),
                tables.iter().map(fill).reduce(f64::max),
            )
        };
        Sample {
            version: text(&status["version"]),
            uptime_secs: num(&status["uptime_secs"]),
            workers: status["workers"].as_array().map_or(0, Vec::len),
            networks,
            containers,
            ports,
            flows,
            ct_entries,
            ct_capacity,
            ct_fullest,
        }
    }
}

/// What the rows are ordered by (the same key for every panel).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    /// Bits per second, both directions (the default).
    #[default]
    Bits,
    /// Packets per second, both directions.
    Packets,
    /// Drops per second (flows have none: by bits per second).
    Drops,
    /// Name (flows: protocol, source, destination).
    Name,
}

impl SortKey {
    /// The next key, for the `s` / Tab key.
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Bits => SortKey::Packets,
            SortKey::Packets => SortKey::Drops,
            SortKey::Drops => SortKey::Name,
            SortKey::Name => SortKey::Bits,
        }
    }

    /// The column heading it sorts by.
    pub fn label(self) -> &'static str {
        match self {
            SortKey::Bits => "bit/s",
            SortKey::Packets => "pkt/s",
            SortKey::Drops => "drops/s",
            SortKey::Name => "name",
        }
    }
}

/// How rows are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Order {
    pub key: SortKey,
    /// Reversed: smallest (or Z) first.
    pub reversed: bool,
}

/// Rates of one port (or of a network's or a container's ports). `None` on the first frame,
/// before there is a previous sample to compare with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rates {
    pub rx_pps: f64,
    pub rx_bps: f64,
    pub tx_pps: f64,
    pub tx_bps: f64,
    pub drops_ps: f64,
}

impl Rates {
    fn add(&mut self, o: &Rates) {
        self.rx_pps += o.rx_pps;
        self.rx_bps += o.rx_bps;
        self.tx_pps += o.tx_pps;
        self.tx_bps += o.tx_bps;
        self.drops_ps += o.drops_ps;
    }

    fn value(&self, key: SortKey) -> f64 {
        match key {
            SortKey::Bits | SortKey::Name => self.rx_bps + self.tx_bps,
            SortKey::Packets => self.rx_pps + self.tx_pps,
            SortKey::Drops => self.drops_ps,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortRow {
    pub name: String,
    pub network: String,
    pub rates: Option<Rates>,
    pub dropped: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetworkRow {
    pub name: String,
    pub subnet: String,
    pub containers: usize,
    pub rates: Option<Rates>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContainerRow {
    pub name: String,
    pub network: String,
    pub ip: String,
    pub port: String,
    /// Its port's rates: rx is what the container sent, tx what it received.
    pub rates: Option<Rates>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlowRow {
    pub proto: String,
    pub src: String,
    pub src_port: u64,
    pub dst: String,
    pub dst_port: u64,
    pub state: String,
    /// The container at either end, if one is.
    pub container: Option<String>,
    pub pps: Option<f64>,
    pub bps: Option<f64>,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DropRow {
    pub reason: String,
    pub total: u64,
    pub per_sec: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConntrackFill {
    pub entries: u64,
    pub capacity: Option<u64>,
    pub fullest_table: Option<f64>,
    pub new_per_sec: Option<f64>,
}

/// One screen of `vswitch top`: every panel's rows, ordered.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Frame {
    pub version: String,
    pub uptime_secs: u64,
    pub workers: usize,
    pub interval_secs: Option<f64>,
    pub order: Order,
    pub networks: Vec<NetworkRow>,
    pub ports: Vec<PortRow>,
    pub containers: Vec<ContainerRow>,
    /// Every tracked connection, fastest first (by the order's key).
    pub flows: Vec<FlowRow>,
    pub conntrack: ConntrackFill,
    /// Drops by reason over all ports, most first.
    pub drops: Vec<DropRow>,
}

/// `(now - before) / secs`, 0 when a counter went backwards (the daemon restarted).
fn rate(now: u64, before: u64, secs: f64) -> f64 {
    now.saturating_sub(before) as f64 / secs
}

fn port_rates(now: &PortSample, before: &PortSample, secs: f64) -> Rates {
    Rates {
        rx_pps: rate(now.rx_frames, before.rx_frames, secs),
        rx_bps: 8.0 * rate(now.rx_bytes, before.rx_bytes, secs),
        tx_pps: rate(now.tx_frames, before.tx_frames, secs),
        tx_bps: 8.0 * rate(now.tx_bytes, before.tx_bytes, secs),
        drops_ps: rate(now.dropped(), before.dropped(), secs),
    }
}

fn by<T>(rows: &mut [T], order: Order, value: impl Fn(&T) -> f64, name: impl Fn(&T) -> String) {
    rows.sort_by(|a, b| {
        let o = match order.key {
            SortKey::Name => name(a).cmp(&name(b)),
            // Largest first, ties by name.
            _ => value(b)
                .total_cmp(&value(a))
                .then_with(|| name(a).cmp(&name(b))),
        };
        if order.reversed { o.reverse() } else { o }
    });
}

impl Frame {
    /// The rows of `now`, with rates against `before` taken `secs` earlier (none without it).
    pub fn new(before: Option<&Sample>, now: &Sample, secs: f64, order: Order) -> Frame {
        let before = before.filter(|_| secs > 0.0);
        let old_ports: HashMap<&str, &PortSample> = before
            .map(|b| b.ports.iter().map(|p| (p.name.as_str(), p)).collect())
            .unwrap_or_default();
        // A port that appeared since the last sample counts from zero.
        let fresh = PortSample::default();
        let rates_of = |p: &PortSample| {
            before.map(|_| {
                let old = old_ports.get(p.name.as_str()).copied().unwrap_or(&fresh);
                port_rates(p, old, secs)
            })
        };
        let mut ports: Vec<PortRow> = now
            .ports
            .iter()
            .map(|p| PortRow {
                name: p.name.clone(),
                network: p.network.clone(),
                rates: rates_of(p),
                dropped: p.dropped(),
            })
            .collect();
        let port_rate: HashMap<&str, Option<Rates>> =
            ports.iter().map(|p| (p.name.as_str(), p.rates)).collect();
        let mut networks: Vec<NetworkRow> = now
            .networks
            .iter()
            .map(|n| {
                let rates = before.map(|_| {
                    let mut sum = Rates::default();
                    for p in ports.iter().filter(|p| p.network == n.name) {
                        sum.add(&p.rates.unwrap_or_default());
                    }
                    sum
                });
                NetworkRow {
                    name: n.name.clone(),
                    subnet: n.subnet.clone(),
                    containers: now
                        .containers
                        .iter()
                        .filter(|c| c.network == n.name)
                        .count(),
                    rates,
                }
            })
            .collect();
        let mut containers: Vec<ContainerRow> = now
            .containers
            .iter()
            .map(|c| ContainerRow {
                name: c.name.clone(),
                network: c.network.clone(),
                ip: c.ip.clone(),
                port: c.port.clone(),
                rates: port_rate.get(c.port.as_str()).copied().flatten(),
            })
            .collect();
        let owner: HashMap<&str, &str> = now
            .containers
            .iter()
            .map(|c| (c.ip.as_str(), c.name.as_str()))
            .collect();
        let old_flows: HashMap<&FlowKey, &FlowSample> = before
            .map(|b| b.flows.iter().map(|f| (&f.key, f)).collect())
            .unwrap_or_default();
        let mut flows: Vec<FlowRow> = now
            .flows
            .iter()
            .map(|f| {
                // A connection new since the last sample counts from zero.
                let (old_packets, old_bytes) = old_flows
                    .get(&f.key)
                    .map_or((0, 0), |o| (o.packets, o.bytes));
                let k = &f.key;
                let container = [k.src.as_str(), k.dst.as_str()]
                    .iter()
                    .find_map(|a| owner.get(a).map(|n| n.to_string()));
                FlowRow {
                    proto: k.proto.clone(),
                    src: k.src.clone(),
                    src_port: k.src_port,
                    dst: k.dst.clone(),
                    dst_port: k.dst_port,
                    state: f.state.clone(),
                    container,
                    pps: before.map(|_| rate(f.packets, old_packets, secs)),
                    bps: before.map(|_| 8.0 * rate(f.bytes, old_bytes, secs)),
                    packets: f.packets,
                    bytes: f.bytes,
                }
            })
            .collect();
        let mut drops: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for p in &now.ports {
            for (reason, n) in &p.drops {
                drops.entry(reason).or_default().0 += n;
            }
        }
        for p in before.iter().flat_map(|b| &b.ports) {
            for (reason, n) in &p.drops {
                drops.entry(reason).or_default().1 += n;
            }
        }
        let mut drops: Vec<DropRow> = drops
            .into_iter()
            .filter(|(_, (total, _))| *total > 0)
            .map(|(reason, (total, old))| DropRow {
                reason: reason.to_string(),
                total,
                per_sec: before.map(|_| rate(total, old, secs)),
            })
            .collect();
        drops.sort_by(|a, b| {
            let ps = |d: &DropRow| d.per_sec.unwrap_or(0.0);
            ps(b)
                .total_cmp(&ps(a))
                .then(b.total.cmp(&a.total))
                .then_with(|| a.reason.cmp(&b.reason))
        });

        let port_value = |r: &Option<Rates>| r.unwrap_or_default().value(order.key);
        by(
            &mut ports,
            order,
            |p| port_value(&p.rates),
            |p| p.name.clone(),
        );
        by(
            &mut networks,
            order,
            |n| port_value(&n.rates),
            |n| n.name.clone(),
        );
        by(
            &mut containers,
            order,
            |c| port_value(&c.rates),
            |c| c.name.clone(),
        );
        by(
            &mut flows,
            order,
            |f| {
                let v = match order.key {
                    SortKey::Packets => f.pps,
                    _ => f.bps,
                };
                // Before rates exist: the biggest connections first.
                v.unwrap_or(f.bytes as f64)
            },
            |f| {
                format!(
                    "{} {}:{} {}:{}",
                    f.proto, f.src, f.src_port, f.dst, f.dst_port
                )
            },
        );
        let new_ct = now
            .flows
            .iter()
            .filter(|f| !old_flows.contains_key(&f.key))
            .count();
        Frame {
            version: now.version.clone(),
            uptime_secs: now.uptime_secs,
            workers: now.workers,
            interval_secs: before.map(|_| secs),
            order,
            networks,
            ports,
            containers,
            flows,
            conntrack: ConntrackFill {
                entries: now.ct_entries,
                capacity: now.ct_capacity,
                fullest_table: now.ct_fullest,
                new_per_sec: before.map(|_| new_ct as f64 / secs),
            },
            drops,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status() -> Value {
        json!({
            "version": "0.1.0",
            "uptime_secs": 42,
            "networks": [
                {"name": "bridge", "subnet": "172.17.0.0/16"},
                {"name": "other", "subnet": "172.18.0.0/16"}
            ],
            "containers": [
                {"name": "c1", "network": "bridge", "ip": "172.17.0.2", "port": "vsw1"},
                {"name": "c2", "network": "other", "ip": "172.18.0.2", "port": "vsw2"}
            ],
            "workers": [{}, {}]
        })
    }

    fn port(name: &str, net: &str, rx: u64, rx_bytes: u64, tx: u64, drops: Value) -> Value {
        json!({
            "name": name, "network": net, "rx_frames": rx, "rx_bytes": rx_bytes,
            "tx_frames": tx, "tx_bytes": tx * 100, "drops": drops, "rx_kernel_drops": 0
        })
    }

    fn entry(sport: u64, packets: [u64; 2], bytes: [u64; 2]) -> Value {
        json!({
            "original": {"proto": "tcp", "src": "172.17.0.2", "dst": "172.18.0.2",
                         "src_port": sport, "dst_port": 5201},
            "state": {"proto": "tcp", "state": "ESTABLISHED"},
            "packets": packets, "bytes": bytes
        })
    }

    fn sample(vsw1: (u64, u64), drops: u64, entries: Vec<Value>) -> Sample {
        let stats = json!({
            "ports": [
                port("vsw1", "bridge", vsw1.0, vsw1.1, 10, json!({"no_route": drops})),
                port("vsw2", "other", 5, 500, 7, json!({})),
            ],
            "conntrack_tables": [
                {"ipv4": {"entries": entries.len(), "max_entries": 100},
                 "ipv6": {"entries": 0, "max_entries": 100}},
                {"ipv4": {"entries": 0, "max_entries": 100},
                 "ipv6": {"entries": 0, "max_entries": 100}}
            ]
        });
        Sample::from_json(&status(), &stats, &json!({ "entries": entries }))
    }

    #[test]
    fn rates_are_the_counters_differences_over_the_interval() {
        let before = sample((100, 10_000), 1, vec![entry(40000, [10, 5], [1000, 500])]);
        let now = sample(
            (300, 1_010_000),
            5,
            vec![
                entry(40000, [210, 105], [1_001_000, 500_500]),
                entry(40001, [4, 0], [400, 0]),
            ],
        );
        let f = Frame::new(Some(&before), &now, 2.0, Order::default());
        assert_eq!(f.interval_secs, Some(2.0));
        // vsw1 moved 200 frames and 1 MB in 2 s; vsw2 did not move.
        let vsw1 = f.ports.iter().find(|p| p.name == "vsw1").unwrap();
        let r = vsw1.rates.unwrap();
        assert_eq!(r.rx_pps, 100.0);
        assert_eq!(r.rx_bps, 4_000_000.0);
        assert_eq!(r.drops_ps, 2.0);
        assert_eq!(f.ports[0].name, "vsw1", "fastest first");
        // The container shows its port's rates; its network the sum of its ports.
        let c1 = f.containers.iter().find(|c| c.name == "c1").unwrap();
        assert_eq!(c1.rates, vsw1.rates);
        let bridge = f.networks.iter().find(|n| n.name == "bridge").unwrap();
        assert_eq!(bridge.containers, 1);
        assert_eq!(bridge.rates.unwrap().rx_bps, 4_000_000.0);
        // Flows: both directions, per second; the new one counts from zero.
        assert_eq!(f.flows.len(), 2);
        let top = &f.flows[0];
        assert_eq!((top.src_port, top.dst_port), (40000, 5201));
        assert_eq!(top.pps, Some(150.0));
        assert_eq!(top.bps, Some(8.0 * 1_500_000.0 / 2.0));
        assert_eq!(top.container.as_deref(), Some("c1"));
        assert_eq!(top.state, "ESTABLISHED");
        assert_eq!(f.flows[1].pps, Some(2.0));
        // Drops by reason: the total and its rate.
        assert_eq!(f.drops.len(), 1);
        assert_eq!(f.drops[0].reason, "no_route");
        assert_eq!((f.drops[0].total, f.drops[0].per_sec), (5, Some(2.0)));
        // Conntrack: 2 of 400 entries over 4 tables, the fullest at 2 %.
        assert_eq!(f.conntrack.entries, 2);
        assert_eq!(f.conntrack.capacity, Some(400));
        assert_eq!(f.conntrack.fullest_table, Some(0.02));
        assert_eq!(f.conntrack.new_per_sec, Some(0.5));
    }

    #[test]
    fn the_first_frame_has_totals_but_no_rates() {
        let now = sample((1, 2), 0, vec![entry(1, [1, 0], [60, 0])]);
        let f = Frame::new(None, &now, 1.0, Order::default());
        assert!(f.ports.iter().all(|p| p.rates.is_none()));
        assert!(f.networks.iter().all(|n| n.rates.is_none()));
        assert_eq!(f.flows[0].bps, None);
        assert_eq!(f.flows[0].bytes, 60);
        assert_eq!(f.interval_secs, None);
    }

    #[test]
    fn counters_that_went_backwards_give_zero_not_a_huge_rate() {
        let before = sample((1000, 100_000), 9, vec![entry(1, [100, 0], [9000, 0])]);
        let now = sample((10, 1000), 0, vec![entry(1, [1, 0], [60, 0])]);
        let f = Frame::new(Some(&before), &now, 1.0, Order::default());
        let vsw1 = f.ports.iter().find(|p| p.name == "vsw1").unwrap();
        assert_eq!(vsw1.rates.unwrap().rx_bps, 0.0);
        assert_eq!(f.flows[0].bps, Some(0.0));
        assert_eq!(f.drops.len(), 0, "no drops now: {:?}", f.drops);
    }

    #[test]
    fn sorting_by_each_key_and_reversed() {
        let before = sample((0, 0), 0, vec![]);
        let mut now = before.clone();
        // vsw1: few big frames; vsw2: many small ones.
        now.ports[0].rx_frames += 2;
        now.ports[0].rx_bytes += 3000;
        now.ports[1].rx_frames += 50;
        now.ports[1].rx_bytes += 50 * 40;
        let order = |key, reversed| Order { key, reversed };
        let names = |o| {
            let f = Frame::new(Some(&before), &now, 1.0, o);
            f.ports.iter().map(|p| p.name.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(order(SortKey::Bits, false)), ["vsw1", "vsw2"]);
        assert_eq!(names(order(SortKey::Bits, true)), ["vsw2", "vsw1"]);
        assert_eq!(names(order(SortKey::Packets, false)), ["vsw2", "vsw1"]);
        assert_eq!(names(order(SortKey::Name, false)), ["vsw1", "vsw2"]);
        assert_eq!(names(order(SortKey::Name, true)), ["vsw2", "vsw1"]);
        let mut k = SortKey::Bits;
        for _ in 0..4 {
            k = k.next();
        }
        assert_eq!(k, SortKey::Bits, "the keys cycle");
    }

    #[test]
    fn missing_fields_read_as_nothing() {
        let s = Sample::from_json(&json!({}), &json!({"ports": [{}]}), &json!(null));
        assert_eq!(s.ports.len(), 1);
        assert_eq!(s.ports[0].name, "-");
        assert_eq!(s.ct_capacity, None);
        let f = Frame::new(Some(&s), &s, 1.0, Order::default());
        assert_eq!(f.ports[0].rates.unwrap().rx_pps, 0.0);
        assert!(f.flows.is_empty() && f.drops.is_empty());
        // An older daemon without conntrack_tables: the listed entries, no limit.
        let s = Sample::from_json(
            &json!({}),
            &json!({}),
            &json!({"entries": [{"state": {"proto": "udp", "replied": false}}]}),
        );
        assert_eq!((s.ct_entries, s.ct_capacity), (1, None));
        assert_eq!(s.flows[0].state, "unreplied");
    }
}
