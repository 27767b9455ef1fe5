//! What a pipeline keeps across a restart: its conntrack tables (with their NAT translations,
//! which are the NAT port allocator's state: a port is taken while an entry's reply tuple
//! holds it) and its FDB, named so that they mean the same in the next process.
//!
//! Ids are not stable across processes (networks are replayed from the store, container ports
//! get new ids when they are re-attached), so a saved flow names the network its first packet
//! came from (conntrack's caller data, a network index, is translated to and from the name)
//! and a saved FDB entry names its network and port. Times are relative (see
//! [`conntrack::SavedEntry`]): export at one clock, import at another.
//!
//! Import is pure and takes what it can: an entry whose network is gone, that conflicts with
//! one already there or that the table refuses is skipped and counted, with the first few
//! reasons kept for the log. The NAT flow cache is not saved: it refills from the table.

use crate::config::{NetworkId, PortId};
use crate::pipeline::Pipeline;
use conntrack::{Address, SavedEntry};
use packet::MacAddr;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The mark the gateway gives flows that came in on the uplink (see `l3::route`).
const UPLINK_MARK: u32 = u32::MAX;
/// Skip reasons kept per import.
const REASONS_KEPT: usize = 8;

/// Where a flow's first packet came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SavedSide {
    /// The uplink.
    Uplink,
    /// A network, by name.
    Network(String),
}

/// One conntrack entry and the side it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SavedFlow<A: Address = Ipv4Addr> {
    /// The side of its first packet (replaces the entry's mark).
    pub from: SavedSide,
    /// The entry.
    pub entry: SavedEntry<A>,
}

/// One FDB entry by names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedFdb {
    /// Network name.
    pub network: String,
    /// MAC address (text).
    pub mac: String,
    /// Port name.
    pub port: String,
    /// Nanoseconds since it was last seen.
    pub age_ns: u64,
}

/// A pipeline's state to keep.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPipeline {
    /// IPv4 flows.
    pub conntrack: Vec<SavedFlow<Ipv4Addr>>,
    /// IPv6 flows.
    pub conntrack6: Vec<SavedFlow<Ipv6Addr>>,
    /// FDB entries.
    pub fdb: Vec<SavedFdb>,
}

/// What an import restored and what it skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// IPv4 flows restored.
    pub conntrack: usize,
    /// IPv6 flows restored.
    pub conntrack6: usize,
    /// FDB entries restored.
    pub fdb: usize,
    /// Entries skipped.
    pub skipped: usize,
    /// Why, for the first few.
    pub reasons: Vec<String>,
}

impl Restored {
    fn skip(&mut self, why: impl FnOnce() -> String) {
        self.skipped += 1;
        if self.reasons.len() < REASONS_KEPT {
            self.reasons.push(why());
        }
    }

    /// Adds another import's counts (several workers).
    pub fn merge(&mut self, o: Restored) {
        self.conntrack += o.conntrack;
        self.conntrack6 += o.conntrack6;
        self.fdb += o.fdb;
        self.skipped += o.skipped;
        for r in o.reasons {
            if self.reasons.len() < REASONS_KEPT {
                self.reasons.push(r);
            }
        }
    }
}

impl Pipeline {
    fn network_name(&self, id: NetworkId) -> Option<String> {
        self.topology()
            .networks
            .get(usize::from(id.0))
            .map(|n| n.name.clone())
    }

    fn side_of_mark(&self, mark: u32) -> Option<SavedSide> {
        if mark == UPLINK_MARK {
            return Some(SavedSide::Uplink);
        }
        let id = NetworkId(u16::try_from(mark).ok()?);
        self.network_name(id).map(SavedSide::Network)
    }

    /// The mark for `side` here, and the network it names (`None` for the uplink); `Err` with
    /// the name of a network this pipeline does not have.
    fn mark_of_side(&self, side: &SavedSide) -> Result<(u32, Option<NetworkId>), String> {
        match side {
            SavedSide::Uplink => Ok((UPLINK_MARK, None)),
            SavedSide::Network(name) => self
                .topology()
                .network_by_name(name)
                .map(|id| (u32::from(id.0), Some(id)))
                .ok_or_else(|| name.clone()),
        }
    }

    /// Everything to keep, with times relative to `now` (the pipeline's clock).
    pub fn export_state(&self, now: u64) -> SavedPipeline {
        let flows = |entries: Vec<SavedEntry<_>>| -> Vec<_> {
            entries
                .into_iter()
                .filter_map(|entry| {
                    self.side_of_mark(entry.mark)
                        .map(|from| SavedFlow { from, entry })
                })
                .collect()
        };
        let flows6 = |entries: Vec<SavedEntry<Ipv6Addr>>| -> Vec<_> {
            entries
                .into_iter()
                .filter_map(|entry| {
                    self.side_of_mark(entry.mark)
                        .map(|from| SavedFlow { from, entry })
                })
                .collect()
        };
        let topo = self.topology();
        SavedPipeline {
            conntrack: flows(self.conntrack().export(now)),
            conntrack6: flows6(self.conntrack6().export(now)),
            fdb: self
                .fdb_rows(now)
                .into_iter()
                .filter_map(|r| {
                    Some(SavedFdb {
                        network: self.network_name(r.network)?,
                        mac: r.mac,
                        port: topo.port(r.port)?.name.clone(),
                        age_ns: r.age_ns,
                    })
                })
                .collect(),
        }
    }

    /// Puts saved flows back, rebased on `now` (the pipeline's clock): each on the network of
    /// that name here. The caller picks which flows go to which worker
    /// ([`crate::affinity::flow_owner`]).
    pub fn import_conntrack(
        &mut self,
        v4: &[SavedFlow<Ipv4Addr>],
        v6: &[SavedFlow<Ipv6Addr>],
        now: u64,
    ) -> Restored {
        let mut done = Restored::default();
        for f in v4 {
            let mut entry = f.entry;
            match self.mark_of_side(&f.from) {
                Ok((mark, _)) => entry.mark = mark,
                Err(net) => {
                    done.skip(|| format!("{}: network {net:?} is gone", f.entry.original));
                    continue;
                }
            }
            match self.gateway_mut().conntrack_mut().import(&entry, now) {
                Ok(_) => done.conntrack += 1,
                Err(e) => done.skip(|| e.to_string()),
            }
        }
        for f in v6 {
            let mut entry = f.entry;
            match self.mark_of_side(&f.from) {
                Ok((mark, _)) => entry.mark = mark,
                Err(net) => {
                    done.skip(|| format!("{}: network {net:?} is gone", f.entry.original));
                    continue;
                }
            }
            match self.gateway_mut().conntrack6_mut().import(&entry, now) {
                Ok(_) => done.conntrack6 += 1,
                Err(e) => done.skip(|| e.to_string()),
            }
        }
        self.gateway_mut().invalidate_flows();
        done
    }

    /// The network a saved flow came from here (`Ok(None)`: the uplink), for placing it on a
    /// worker; `Err` with the name of a network this pipeline lacks.
    pub fn saved_side(&self, side: &SavedSide) -> Result<Option<NetworkId>, String> {
        self.mark_of_side(side).map(|(_, id)| id)
    }

    /// Puts saved FDB entries back on the ports of those names, `age_ns` before `now`. An
    /// entry whose network or port is not here (yet), or whose MAC does not parse, is skipped.
    pub fn import_fdb(&mut self, rows: &[SavedFdb], now: u64) -> Restored {
        let mut done = Restored::default();
        for r in rows {
            let topo = self.topology();
            let net = topo.network_by_name(&r.network);
            let port: Option<PortId> = topo
                .port_by_name(&r.port)
                .filter(|&p| topo.port(p).is_some_and(|p| p.active && p.network == net));
            let mac = r.mac.parse::<MacAddr>().ok();
            let (Some(net), Some(port), Some(mac)) = (net, port, mac) else {
                done.skip(|| {
                    format!(
                        "FDB {} on {}/{}: no such port here",
                        r.mac, r.network, r.port
                    )
                });
                continue;
            };
            if self.restore_fdb(net, mac, port, now.saturating_sub(r.age_ns)) {
                done.fdb += 1;
            } else {
                done.skip(|| format!("FDB {} on {}: the port's MAC cap", r.mac, r.port));
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Packet};
    use testkit::frames as build;

    const SEC: u64 = 1_000_000_000;
    const TOPO: &str = r#"
[[network]]
name = "bridge"
subnet = "172.17.0.0/16"
gateway = "172.17.0.1"
[[port]]
name = "c1"
kind = "pcap"
network = "bridge"
[[port]]
name = "c2"
kind = "pcap"
network = "bridge"
[[port]]
name = "up"
kind = "pcap"
[uplink]
port = "up"
address = "203.0.113.2"
next_hop = "203.0.113.1"
next_hop_mac = "02:00:00:00:00:fe"
"#;

    fn pipeline() -> Pipeline {
        Pipeline::new(&Config::from_toml(TOPO).expect("topology")).expect("pipeline")
    }

    const GW: MacAddr = MacAddr([0x02, 0x42, 172, 17, 0, 1]);
    const C1_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const C2_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 3]);
    const C1: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
    const C2: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);
    const R: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

    fn run(p: &mut Pipeline, now: u64, port: u16, frame: Vec<u8>) -> Vec<Packet> {
        let mut input = vec![Packet::new(PortId(port), frame)];
        let mut out = Vec::new();
        p.process(now, &mut input, &mut out);
        out
    }

    /// The source port a SYN from `ip`:`sport` to R:80 leaves the uplink with.
    fn nat_port(
        p: &mut Pipeline,
        now: u64,
        port: u16,
        mac: MacAddr,
        ip: Ipv4Addr,
        sport: u16,
    ) -> u16 {
        let syn = build::tcp(mac, GW, ip, R, sport, 80, 1000, 0, 0x02, b"");
        let out = run(p, now, port, syn);
        let sent = out
            .iter()
            .find(|o| o.port == PortId(2))
            .expect("the SYN left on the uplink");
        u16::from_be_bytes([sent.data[34], sent.data[35]])
    }

    #[test]
    fn export_import_gives_the_same_table_and_fdb_rebased() {
        let mut p = pipeline();
        let t1 = 5 * SEC;
        let port = nat_port(&mut p, t1, 0, C1_MAC, C1, 40000);
        // c2 speaks too, so the FDB learns both.
        run(
            &mut p,
            t1,
            1,
            build::udp(C2_MAC, C1_MAC, C2, C1, 1, 2, b"x"),
        );
        let saved = p.export_state(t1 + SEC);
        assert_eq!(saved.conntrack.len(), 1);
        assert_eq!(saved.conntrack[0].from, SavedSide::Network("bridge".into()));
        assert_eq!(saved.conntrack[0].entry.reply.dst_port, port);
        assert_eq!(saved.fdb.len(), 2);
        assert!(saved.fdb.iter().all(|f| f.age_ns == SEC));
        // Through the file format and back.
        let text = serde_json::to_string(&saved).expect("json");
        let back: SavedPipeline = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, saved);

        let mut q = pipeline();
        let t2 = 900 * SEC;
        let r = q.import_conntrack(&back.conntrack, &back.conntrack6, t2);
        assert_eq!((r.conntrack, r.skipped), (1, 0));
        let r = q.import_fdb(&back.fdb, t2);
        assert_eq!((r.fdb, r.skipped), (2, 0));
        assert_eq!(q.export_state(t2), saved, "same table, clock rebased");
        let before = p.conntrack().iter().next().expect("entry").1;
        let after = q.conntrack().iter().next().expect("entry").1;
        assert_eq!(after.expires_at - t2, before.expires_at - (t1 + SEC));
        assert_eq!(after.mark, before.mark);
    }

    #[test]
    fn restored_nat_ports_are_not_handed_out_again() {
        let mut p = pipeline();
        let first = nat_port(&mut p, SEC, 0, C1_MAC, C1, 40000);
        let mut q = pipeline();
        let saved = p.export_state(2 * SEC);
        q.import_conntrack(&saved.conntrack, &saved.conntrack6, 10 * SEC);
        // c2 opens a connection to the same remote from the same source port: the port c1's
        // restored connection holds must not be reused (whatever the allocator prefers).
        let second = nat_port(&mut q, 11 * SEC, 1, C2_MAC, C2, 40000);
        assert_ne!(first, second);
        // A fresh pipeline, without the restored entry, would have handed out c1's port
        // (the allocator prefers the source port): the restore is what prevents it.
        let mut fresh = pipeline();
        let _ = nat_port(&mut fresh, SEC, 1, C2_MAC, C2, 40000);
        assert_eq!(
            fresh
                .conntrack()
                .iter()
                .next()
                .map(|(_, e)| e.reply.dst_port),
            Some(first)
        );
    }

    #[test]
    fn restored_flow_keeps_forwarding_replies() {
        let mut p = pipeline();
        let port = nat_port(&mut p, SEC, 0, C1_MAC, C1, 40000);
        let synack = build::tcp(
            MacAddr([2, 0, 0, 0, 0, 0xfe]),
            MacAddr([0x02, 0x42, 203, 0, 113, 2]),
            R,
            Ipv4Addr::new(203, 0, 113, 2),
            80,
            port,
            5000,
            1001,
            0x12,
            b"",
        );
        let saved = p.export_state(2 * SEC);
        let mut q = pipeline();
        q.import_conntrack(&saved.conntrack, &saved.conntrack6, 100 * SEC);
        let r = q.import_fdb(&saved.fdb, 100 * SEC);
        assert_eq!(r.fdb, 1);
        // The SYN/ACK comes back after the restart: it is not refused as a packet of no
        // connection but waits for c1's address to be resolved (the ARP cache starts empty).
        let out = run(&mut q, 101 * SEC, 2, synack);
        assert!(
            out.iter()
                .all(|o| o.data.len() < 34 || o.data[12..14] == [8, 6]),
            "{out:?}"
        );
        assert!(!out.is_empty(), "an ARP request for c1");
        let arp = build::arp_reply(C1_MAC, C1, GW, Ipv4Addr::new(172, 17, 0, 1));
        let out = run(&mut q, 101 * SEC, 0, arp);
        let to_c1: Vec<_> = out.iter().filter(|o| o.port == PortId(0)).collect();
        assert_eq!(to_c1.len(), 1, "{out:?}");
        assert_eq!(
            &to_c1[0].data[30..34],
            &C1.octets(),
            "translated back to c1"
        );
        assert_eq!(&to_c1[0].data[36..38], &40000u16.to_be_bytes());
        assert_eq!(q.conntrack().counters().invalid, 0);
    }

    #[test]
    fn entries_for_missing_networks_or_ports_are_skipped_not_fatal() {
        let mut p = pipeline();
        nat_port(&mut p, SEC, 0, C1_MAC, C1, 40000);
        let mut saved = p.export_state(2 * SEC);
        saved.conntrack[0].from = SavedSide::Network("gone".into());
        saved.fdb[0].port = "nope".into();
        saved.fdb.push(SavedFdb {
            network: "bridge".into(),
            mac: "not a mac".into(),
            port: "c1".into(),
            age_ns: 0,
        });
        let mut q = pipeline();
        let r = q.import_conntrack(&saved.conntrack, &saved.conntrack6, SEC);
        assert_eq!((r.conntrack, r.skipped), (0, 1));
        assert!(r.reasons[0].contains("\"gone\""), "{:?}", r.reasons);
        let r = q.import_fdb(&saved.fdb, SEC);
        assert_eq!((r.fdb, r.skipped), (0, 2));
        assert!(q.conntrack().is_empty());
    }

    #[test]
    fn ipv6_flows_round_trip() {
        let mut p = pipeline();
        let a: Ipv6Addr = "fd00::2".parse().expect("addr");
        let b: Ipv6Addr = "2001:db8::1".parse().expect("addr");
        let t = conntrack::Tuple::new_v6(packet::L4Proto::Udp, a, 4000, b, 53);
        let id = p
            .gateway_mut()
            .conntrack6_mut()
            .insert(t, t.reversed(), 0, SEC)
            .expect("insert");
        p.gateway_mut()
            .conntrack6_mut()
            .track(id, conntrack::Direction::Original, None, 60, SEC);
        let saved = p.export_state(2 * SEC);
        assert_eq!(saved.conntrack6.len(), 1);
        let mut q = pipeline();
        let r = q.import_conntrack(&saved.conntrack, &saved.conntrack6, 50 * SEC);
        assert_eq!(r.conntrack6, 1);
        assert_eq!(q.export_state(50 * SEC), saved);
    }
}
