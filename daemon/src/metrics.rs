//! The optional Prometheus endpoint (`vswitch daemon --metrics ADDR`, off by default): one HTTP
//! thread answering `GET /metrics` with the OpenMetrics text format (prometheus-client), built
//! afresh from one snapshot of every packet loop per scrape, so it costs the datapath nothing
//! between scrapes.
//!
//! Names follow Prometheus conventions: a `vswitch_` prefix, `_total` on counters (added by the
//! encoder), `_bytes` for byte counts, labels for what varies (port, network, reason, family,
//! proto, state, event). The figures are the ones `vswitch stats --json` shows.

use crate::handlers::usage;
use crate::state::{Daemon, snapshot};
use anyhow::{Context, Result};
use datapath::engine::IoCounters;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use switch::{DropReason, Snapshot};

/// The content type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Starts the endpoint on `addr` in a thread of its own, stopping with the daemon.
pub(crate) fn serve(d: &Arc<Daemon>, addr: SocketAddr) -> Result<()> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot serve metrics on {addr} (is the port taken?)"))?;
    let d = Arc::clone(d);
    std::thread::Builder::new()
        .name("vswitch-metrics".into())
        .spawn(move || {
            while !d.shutdown.load(Ordering::Relaxed) {
                match server.recv_timeout(Duration::from_millis(300)) {
                    Ok(Some(req)) => answer(&d, req),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!("metrics endpoint: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .context("starting the metrics thread")?;
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    Ok(())
}

fn answer(d: &Daemon, req: tiny_http::Request) {
    let response = match (req.method(), req.url()) {
        (tiny_http::Method::Get, "/metrics") => match render(d) {
            Ok(text) => {
                let r = tiny_http::Response::from_string(text);
                // A fixed, valid header: `from_bytes` does not fail on it.
                match tiny_http::Header::from_bytes(&b"Content-Type"[..], CONTENT_TYPE) {
                    Ok(h) => r.with_header(h),
                    Err(()) => r,
                }
            }
            Err(e) => tiny_http::Response::from_string(format!("{e:#}\n")).with_status_code(500),
        },
        _ => tiny_http::Response::from_string("only GET /metrics is served here\n")
            .with_status_code(404),
    };
    if let Err(e) = req.respond(response) {
        tracing::debug!("metrics client went away: {e}");
    }
}

/// The text of one scrape.
pub(crate) fn render(d: &Daemon) -> Result<String> {
    let snapshot = snapshot(d)?;
    let tables = d
        .call_all(|e| {
            let (v4, v6) = (e.pipeline().conntrack(), e.pipeline().conntrack6());
            [
                (v4.len(), v4.config().max_entries),
                (v6.len(), v6.config().max_entries),
            ]
        })
        .context("the packet loop is not running")?;
    let scrape = Scrape {
        nat: usage::nat_ports_in_use(&snapshot),
        snapshot,
        workers: d.engines.len(),
        containers: crate::state::lock(&d.containers).len(),
        loops: usage::loops(d).context("the packet loop is not running")?,
        tables,
        requests: d.requests.all(),
    };
    encode(scrape)
}

fn encode(scrape: Scrape) -> Result<String> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .context("encoding the metrics")?;
    Ok(text)
}

/// What one scrape reports.
#[derive(Debug)]
struct Scrape {
    snapshot: Snapshot,
    workers: usize,
    containers: usize,
    /// Each loop's work, by worker.
    loops: Vec<IoCounters>,
    /// Each loop's conntrack tables: (entries, max_entries) for IPv4, then IPv6.
    tables: Vec<[(usize, usize); 2]>,
    nat: Vec<usage::NatPorts>,
    requests: Vec<usage::RequestCount>,
}

/// The fields of a counters struct, by name (its serde form).
fn fields(v: &impl serde::Serialize) -> BTreeMap<String, u64> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m
            .into_iter()
            .filter_map(|(k, v)| v.as_u64().map(|n| (k, n)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

type Labels<'a> = [(&'static str, &'a str)];

/// A port's labels.
fn port_labels(p: &switch::PortSnapshot) -> Vec<(&'static str, &str)> {
    vec![("port", p.name.as_str()), ("network", p.network.as_str())]
}

/// One metric family with a sample per label set.
fn family<'l, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    samples: impl IntoIterator<Item = (Vec<(&'static str, &'l str)>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, ty)?;
    for (labels, value) in samples {
        let labels: &Labels = &labels;
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.snapshot;
        let per_port = |f: fn(&switch::PortCounters) -> u64| {
            s.ports
                .iter()
                .map(move |p| (port_labels(p), ConstCounter::new(f(&p.counters))))
                .collect::<Vec<_>>()
        };
        use MetricType::{Counter, Gauge};
        type PortCounter = fn(&switch::PortCounters) -> u64;
        let port_counters: [(&str, &str, PortCounter); 7] = [
            (
                "vswitch_port_rx_packets",
                "Frames received on a port.",
                |c| c.rx_frames,
            ),
            ("vswitch_port_rx_bytes", "Bytes received on a port.", |c| {
                c.rx_bytes
            }),
            (
                "vswitch_port_tx_packets",
                "Frames sent out of a port.",
                |c| c.tx_frames,
            ),
            ("vswitch_port_tx_bytes", "Bytes sent out of a port.", |c| {
                c.tx_bytes
            }),
            (
                "vswitch_port_forwarded_packets",
                "Received frames forwarded (bridged or routed).",
                |c| c.forwarded,
            ),
            (
                "vswitch_port_local_packets",
                "Received frames the switch answered or consumed itself.",
                |c| c.local,
            ),
            (
                "vswitch_port_kernel_drops",
                "Frames the kernel dropped before the port's ring.",
                |c| c.rx_kernel_drops,
            ),
        ];
        for (name, help, f) in port_counters {
            family(&mut e, name, help, Counter, per_port(f))?;
        }
        let drops = s.ports.iter().flat_map(|p| {
            DropReason::ALL.iter().filter_map(move |r| {
                let n = p.counters.drops.get(*r);
                (n > 0).then(|| {
                    let mut l = port_labels(p);
                    l.push(("reason", r.as_str()));
                    (l, ConstCounter::new(n))
                })
            })
        });
        family(
            &mut e,
            "vswitch_port_drops",
            "Received frames dropped, by reason (reasons never hit are left out).",
            Counter,
            drops,
        )?;
        let bridge = fields(&s.bridge);
        family(
            &mut e,
            "vswitch_bridge_events",
            "Bridge and gateway events (FDB, flooding, multicast, ARP/NDP, NAT, DNS).",
            Counter,
            bridge
                .iter()
                .map(|(k, v)| (vec![("event", k.as_str())], ConstCounter::new(*v))),
        )?;
        let ct = fields(&s.conntrack_counters);
        family(
            &mut e,
            "vswitch_conntrack_events",
            "Connection-tracking events, both address families.",
            Counter,
            ct.iter()
                .map(|(k, v)| (vec![("event", k.as_str())], ConstCounter::new(*v))),
        )?;
        let mut entries: BTreeMap<(&str, String, String), i64> = BTreeMap::new();
        let states = s
            .conntrack
            .iter()
            .map(|e| ("ipv4", e.state))
            .chain(s.conntrack6.iter().map(|e| ("ipv6", e.state)));
        for (fam, state) in states {
            let (proto, st) = match state {
                conntrack::State::Tcp(t) => ("tcp", t.as_str().to_string()),
                conntrack::State::Udp { replied } => (
                    "udp",
                    if replied { "replied" } else { "unreplied" }.to_string(),
                ),
                conntrack::State::Icmp { replied } => (
                    "icmp",
                    if replied { "replied" } else { "unreplied" }.to_string(),
                ),
            };
            *entries.entry((fam, proto.to_string(), st)).or_default() += 1;
        }
        family(
            &mut e,
            "vswitch_conntrack_entries",
            "Tracked connections, by family, protocol and state.",
            Gauge,
            entries.iter().map(|((f, p, st), n)| {
                (
                    vec![
                        ("family", *f),
                        ("proto", p.as_str()),
                        ("state", st.as_str()),
                    ],
                    ConstGauge::new(*n),
                )
            }),
        )?;
        let gauges = [
            ("vswitch_fdb_entries", "Learned MAC addresses.", s.fdb.len()),
            (
                "vswitch_multicast_groups",
                "Multicast groups with listeners, by network.",
                s.groups.len(),
            ),
            (
                "vswitch_containers",
                "Attached containers (host ports included).",
                self.containers,
            ),
            ("vswitch_workers", "Packet-loop threads.", self.workers),
        ];
        for (name, help, n) in gauges {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            family(
                &mut e,
                name,
                help,
                Gauge,
                [(Vec::new(), ConstGauge::new(n))],
            )?;
        }
        self.encode_usage(&mut e)
    }
}

/// `n` as a gauge value.
fn gauge(n: usize) -> ConstGauge {
    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Scrape {
    /// The loops' work, conntrack fill, NAT ports and control requests.
    fn encode_usage(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let workers: Vec<String> = (0..self.loops.len()).map(|w| w.to_string()).collect();
        type LoopCounter = fn(&IoCounters) -> u64;
        let loop_counters: [(&str, &str, LoopCounter); 5] = [
            ("vswitch_loop_wakeups", "Wake-ups of a packet loop.", |c| {
                c.wakeups
            }),
            (
                "vswitch_loop_batches",
                "Batches a packet loop ran through the pipeline.",
                |c| c.batches,
            ),
            (
                "vswitch_loop_frames",
                "Frames a packet loop processed (over batches: the mean batch size).",
                |c| c.frames,
            ),
            (
                "vswitch_loop_handed_off",
                "Frames a loop read and handed to the worker owning their flow.",
                |c| c.handed_off,
            ),
            (
                "vswitch_loop_tx_errors",
                "Frames the kernel did not take on transmit.",
                |c| c.tx_errors,
            ),
        ];
        for (name, help, f) in loop_counters {
            let samples = self
                .loops
                .iter()
                .zip(&workers)
                .map(|(c, w)| (vec![("worker", w.as_str())], ConstCounter::new(f(c))));
            family(e, name, help, Counter, samples)?;
        }
        let busy = self.loops.iter().zip(&workers).map(|(c, w)| {
            (
                vec![("worker", w.as_str())],
                ConstCounter::new(c.busy_ns as f64 / 1e9),
            )
        });
        family(
            e,
            "vswitch_loop_busy_seconds",
            "Time a packet loop spent working, not waiting (its rate: the loop's utilisation).",
            Counter,
            busy,
        )?;
        for (i, (name, help)) in [
            (
                "vswitch_conntrack_table_entries",
                "Entries in a loop's conntrack table, by family.",
            ),
            (
                "vswitch_conntrack_table_max_entries",
                "Capacity of a loop's conntrack table (conntrack.max_entries), by family.",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let samples = self.tables.iter().zip(&workers).flat_map(|(t, w)| {
                [("ipv4", t[0]), ("ipv6", t[1])].map(|(fam, (n, max))| {
                    let v = if i == 0 { n } else { max };
                    (vec![("worker", w.as_str()), ("family", fam)], gauge(v))
                })
            });
            family(e, name, help, Gauge, samples)?;
        }
        let addrs: Vec<String> = self.nat.iter().map(|n| n.address.to_string()).collect();
        let nat = self.nat.iter().zip(&addrs).map(|(n, a)| {
            (
                vec![("address", a.as_str()), ("proto", n.proto.as_str())],
                gauge(n.ports),
            )
        });
        family(
            e,
            "vswitch_nat_ports_in_use",
            "Masquerade source ports held by tracked connections, per uplink address.",
            Gauge,
            nat,
        )?;
        let requests = self.requests.iter().map(|r| {
            (
                vec![("cmd", r.cmd.as_str()), ("result", r.result)],
                ConstCounter::new(r.count),
            )
        });
        family(
            e,
            "vswitch_control_requests",
            "Control-socket requests served, by command and result.",
            Counter,
            requests,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switch::{Config, Packet, Pipeline, PortId};

    #[test]
    fn a_scrape_is_valid_prometheus_text_with_the_pipeline_s_numbers() {
        let text = testkit::topology::standard().build();
        let mut p = Pipeline::new(&Config::from_toml(&text).unwrap()).unwrap();
        let (c1, gw) = ([172, 17, 0, 2].into(), [172, 17, 0, 1].into());
        let c1_mac = packet::MacAddr::docker(c1);
        let ping = testkit::frames::icmp_echo(
            c1_mac,
            packet::MacAddr::docker(gw),
            c1,
            gw,
            true,
            1,
            1,
            b"",
        );
        let spoofed = testkit::frames::udp(c1_mac, packet::MacAddr::BROADCAST, c1, gw, 1, 2, b"");
        let remote = [198, 51, 100, 1].into();
        let out_udp = testkit::frames::udp(
            c1_mac,
            packet::MacAddr::docker(gw),
            c1,
            remote,
            40000,
            53,
            b"q",
        );
        let mut input = vec![
            Packet::new(PortId(0), ping),
            Packet::new(PortId(9), spoofed),
            Packet::new(PortId(0), out_udp),
        ];
        let mut out = Vec::new();
        p.process(1_000_000_000, &mut input, &mut out);
        let scrape = Scrape {
            snapshot: p.snapshot(1_000_000_000),
            workers: 2,
            containers: 3,
            loops: vec![IoCounters {
                batches: 4,
                frames: 10,
                busy_ns: 1_500_000_000,
                ..IoCounters::default()
            }],
            tables: vec![[(1, 64), (0, 64)]],
            nat: usage::nat_ports_in_use(&p.snapshot(1_000_000_000)),
            requests: vec![usage::RequestCount {
                cmd: "status".into(),
                result: "ok",
                count: 7,
            }],
        };
        let text = encode(scrape).unwrap();
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
        let value = |name: &str, labels: &[(&str, &str)]| {
            parsed
                .samples
                .iter()
                .find(|s| {
                    s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
                })
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                })
        };
        let c1_port = [("port", "c1"), ("network", "bridge")];
        assert_eq!(
            value("vswitch_port_rx_packets_total", &c1_port),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            value("vswitch_port_local_packets_total", &c1_port),
            Some(1.0)
        );
        assert_eq!(
            value("vswitch_port_forwarded_packets_total", &c1_port),
            Some(1.0)
        );
        assert_eq!(value("vswitch_port_tx_packets_total", &c1_port), Some(1.0));
        let udp = [("family", "ipv4"), ("proto", "udp"), ("state", "unreplied")];
        assert_eq!(
            value("vswitch_conntrack_entries", &udp),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            value(
                "vswitch_bridge_events_total",
                &[("event", "echo_replies_sent")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value("vswitch_bridge_events_total", &[("event", "unknown_port")]),
            Some(1.0)
        );
        assert_eq!(value("vswitch_workers", &[]), Some(2.0));
        assert_eq!(value("vswitch_containers", &[]), Some(3.0));
        let w0 = [("worker", "0")];
        assert_eq!(value("vswitch_loop_frames_total", &w0), Some(10.0));
        assert_eq!(value("vswitch_loop_batches_total", &w0), Some(4.0));
        assert_eq!(value("vswitch_loop_busy_seconds_total", &w0), Some(1.5));
        assert_eq!(
            value(
                "vswitch_conntrack_table_max_entries",
                &[("worker", "0"), ("family", "ipv6")]
            ),
            Some(64.0)
        );
        assert_eq!(
            value(
                "vswitch_nat_ports_in_use",
                &[("address", "203.0.113.2"), ("proto", "udp")]
            ),
            Some(1.0),
            "the masqueraded UDP flow holds one port: {text}"
        );
        assert_eq!(
            value(
                "vswitch_control_requests_total",
                &[("cmd", "status"), ("result", "ok")]
            ),
            Some(7.0)
        );
        assert!(
            text.contains("# TYPE vswitch_port_rx_bytes counter"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with EOF");
    }
}
