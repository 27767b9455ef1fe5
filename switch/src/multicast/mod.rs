//! Multicast snooping (RFC 4541), as Linux's bridge does it: who listens to which group on each
//! network, learned from the IGMP and MLD reports hosts send, so that a frame to a group reaches
//! its listeners instead of every port.
//!
//! Owns, per pipeline: the memberships ((network, group) → member ports, each with an expiry),
//! the ports not snooped yet, and the querier's clock. The switch is every network's querier
//! (there is no multicast router on a vswitch network: its gateway is the switch), so it
//! consumes every report and leave (`local`) and forwards none.
//!
//! A macvlan network's parent port is the exception, a *router port* (RFC 4541 2.1): the LAN's
//! multicast routers (and its querier) are behind it. It gets every group's traffic (2.1.2),
//! and the network's reports and leaves, learned from as ever, also go to it (2.1.1: else the
//! LAN's routers and snooping switches would never send the containers their groups); such a
//! report counts `forwarded`, not `local`. It is never queried (the LAN's querier is the
//! LAN's), and the reports that come in through it are not learned (it is no listener: it
//! gets every group anyway).
//!
//! Delivery of a frame to a multicast MAC ([`report::classify`]):
//! - broadcast, non-IP multicast, 224.0.0.0/24 and ff02::1: to every port, as before;
//! - any other group: to its member ports and to the ports not snooped yet, never back to the
//!   ingress port; with none, it is dropped as `no_multicast_listener` (a DAD solicitation for
//!   an address no one else holds, a router solicitation to ff02::2).
//!
//! A port is *unsnooped*, per family (IGMP and MLD are reported separately), from when it joins
//! until its host's first report of that family, or until one query interval and the maximum
//! response time have passed without one: then it is a host that does not speak IGMP (MLD) and
//! gets only the groups it reported, none. Meanwhile it gets every group's traffic, as before.
//!
//! Queries: with `querier` on (one worker of the daemon; see `Pipeline::set_querier`), a general
//! IGMPv3 and MLDv2 query goes to a port added at run time at the first housekeeping after, and
//! to every port of every network each query interval. Ports of the initial topology get their
//! first query one interval after start: until then they are unsnooped and lose nothing, and a
//! replay of a short capture (the golden scenarios) is what it was. A daemon restart re-adds
//! its containers' ports at run time, so they are asked at once.
//!
//! Leaves take effect at once (Linux's "fast leave"): a port is one container, so no one else
//! behind it may still listen. With several hosts behind one port, the others are back at the
//! next query.
//!
//! Costs: one hash lookup per frame to a group, then only its member and unsnooped ports (the
//! copies themselves). Memory per port: 4 bytes (its membership count), 16 bytes per
//! membership, 16 bytes per family while it is unsnooped. A port joins at most
//! `bridge.max_groups_per_port` groups (256): further joins are counted
//! (`multicast_group_cap_reached`) and not learned, so one container cannot grow the table
//! without bound; only it misses those groups.

mod query;
mod report;

pub(crate) use report::{Group, Kind, classify};

use crate::config::{NetworkId, PortId, Topology};
use crate::frame::{Counters, Frame};
use crate::pipeline::Packet;
use packet::{Ipv4Addr, MacAddr};
use report::{Change, Report};
use rustc_hash::FxHashMap;

/// Timing, all in one place: RFC 3376 8 and RFC 3810 9 defaults, which Linux uses too.
pub(crate) mod timing {
    use crate::pipeline::NANOS_PER_SEC;

    /// Robustness variable: how many lost queries or reports are tolerated, plus one.
    pub(crate) const ROBUSTNESS: u8 = 2;
    /// Between general queries, in seconds (below 128, so the QQIC field holds it exactly).
    pub(crate) const QUERY_INTERVAL_SECS: u64 = 125;
    /// Query response interval, in tenths of a second (the queries' Max Resp Code): 10 s.
    pub(crate) const MAX_RESPONSE_DECISECS: u8 = 100;
    /// Between general queries.
    pub(crate) const QUERY_INTERVAL: u64 = QUERY_INTERVAL_SECS * NANOS_PER_SEC;
    /// How long hosts may take to answer a query.
    pub(crate) const MAX_RESPONSE: u64 = MAX_RESPONSE_DECISECS as u64 * NANOS_PER_SEC / 10;
    /// Group membership interval: a membership not refreshed for this long expires (260 s).
    pub(crate) const MEMBERSHIP: u64 = ROBUSTNESS as u64 * QUERY_INTERVAL + MAX_RESPONSE;
    /// How long a new port gets every group before it counts as a host without IGMP (MLD).
    pub(crate) const UNSNOOPED_GRACE: u64 = QUERY_INTERVAL + MAX_RESPONSE;
    /// Between sweeps of expired memberships (lookups skip expired ones meanwhile).
    pub(crate) const SWEEP_INTERVAL: u64 = NANOS_PER_SEC;

    const _: () = assert!(QUERY_INTERVAL_SECS < 128 && ROBUSTNESS < 8);
}

use timing::{MEMBERSHIP, QUERY_INTERVAL, SWEEP_INTERVAL, UNSNOOPED_GRACE};

/// A port listening to a group.
#[derive(Clone, Copy, Debug)]
struct Member {
    port: PortId,
    /// First instant the membership is gone, unless a report refreshes it.
    expires: u64,
}

/// A port whose host has not reported yet.
#[derive(Clone, Copy, Debug)]
struct Unsnooped {
    port: PortId,
    /// First instant it counts as a host without IGMP (MLD); `u64::MAX` until the first
    /// housekeeping after it joined, which starts the clock.
    until: u64,
}

/// Where a frame to a multicast MAC goes, once snooping has looked at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Destination {
    /// It ended here: a report or leave learned from (`local`, or `forwarded` to the
    /// network's router ports), or a malformed one (dropped).
    Consumed,
    /// To every port of the network.
    Everyone,
    /// To the listeners of this group.
    Listeners(Group),
}

/// One row of the membership table, for snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupRow {
    /// The network.
    pub(crate) network: NetworkId,
    /// The group.
    pub(crate) group: Group,
    /// Its member ports, in id order.
    pub(crate) ports: Vec<PortId>,
}

/// The snooping state of one pipeline.
#[derive(Debug)]
pub(crate) struct Multicast {
    /// (network, group) → its member ports, sorted by port id, never empty.
    groups: FxHashMap<(NetworkId, Group), Vec<Member>>,
    /// Per network id, per family: the ports not snooped yet.
    unsnooped: Vec<[Vec<Unsnooped>; 2]>,
    /// Memberships per port id (live or not swept yet), capped at `max_groups_per_port`.
    per_port: Vec<u32>,
    /// `bridge.max_groups_per_port`.
    max_groups_per_port: u32,
    /// Ports that joined since the last housekeeping, and whether to query them then.
    joined: Vec<(PortId, bool)>,
    /// Router ports (macvlan networks' parent ports) by network: every group's traffic and
    /// the reports go to them; they are never queried nor snooped.
    routers: Vec<(NetworkId, PortId)>,
    /// Whether this pipeline sends the queries.
    querier: bool,
    /// When the next general query is due; `None` before the first housekeeping.
    next_query: Option<u64>,
    /// When expired memberships are swept next.
    next_sweep: u64,
}

impl Multicast {
    /// Every port of `topo` unsnooped, the querier on.
    pub(crate) fn new(topo: &Topology) -> Multicast {
        let mut m = Multicast {
            groups: FxHashMap::default(),
            unsnooped: Vec::new(),
            per_port: Vec::new(),
            max_groups_per_port: topo.bridge.max_groups_per_port,
            joined: Vec::new(),
            routers: Vec::new(),
            querier: true,
            next_query: None,
            next_sweep: 0,
        };
        for (i, port) in topo.ports.iter().enumerate() {
            if let (Some(network), Ok(id)) = (port.network, u16::try_from(i)) {
                m.add_port(PortId(id), network, false);
            }
        }
        m
    }

    /// Turns query sending on or off.
    pub(crate) fn set_querier(&mut self, on: bool) {
        self.querier = on;
    }

    /// A port joined `network`: unsnooped from the next housekeeping on, and queried then when
    /// `query`.
    pub(crate) fn add_port(&mut self, port: PortId, network: NetworkId, query: bool) {
        let new = Unsnooped {
            port,
            until: u64::MAX,
        };
        for list in self.network_mut(network) {
            list.push(new);
        }
        self.joined.push((port, query));
    }

    /// A router port joined `network` (a macvlan network's parent port): see the module doc.
    pub(crate) fn add_router_port(&mut self, port: PortId, network: NetworkId) {
        self.routers.push((network, port));
    }

    /// The router ports of `network`.
    fn routers(&self, network: NetworkId) -> impl Iterator<Item = PortId> + '_ {
        self.routers
            .iter()
            .filter(move |(n, _)| *n == network)
            .map(|(_, p)| *p)
    }

    fn is_router(&self, port: PortId) -> bool {
        self.routers.iter().any(|(_, p)| *p == port)
    }

    /// A port went: its memberships and the rest of its state go with it.
    pub(crate) fn remove_port(&mut self, port: PortId, network: NetworkId) {
        self.routers.retain(|(_, p)| *p != port);
        if let Some(n) = self.per_port.get_mut(usize::from(port.0)) {
            *n = 0;
        }
        self.groups.retain(|(n, _), members| {
            if *n == network {
                members.retain(|m| m.port != port);
            }
            !members.is_empty()
        });
        for list in self.network_mut(network) {
            list.retain(|u| u.port != port);
        }
        self.joined.retain(|(p, _)| *p != port);
    }

    /// Looks at a frame to a multicast MAC from `f.ingress`: learns from a report or leave
    /// (and ends its journey), else says where it goes.
    pub(crate) fn snoop(
        &mut self,
        f: &mut Frame<'_>,
        network: NetworkId,
        data: &[u8],
    ) -> Destination {
        match classify(data) {
            Ok(Kind::Flood) => Destination::Everyone,
            Ok(Kind::ToGroup(group)) => Destination::Listeners(group),
            Ok(Kind::Report(_)) if self.is_router(f.ingress) => {
                // The LAN's, for its routers: the router port listens to every group anyway.
                f.events().multicast_reports += 1;
                f.local();
                Destination::Consumed
            }
            Ok(Kind::Report(report)) => {
                let refused = self.learn(f.now, network, f.ingress, report);
                let events = f.events();
                events.multicast_reports += 1;
                events.multicast_group_cap_reached += refused;
                let routers: Vec<PortId> = self.routers(network).collect();
                let (ingress, offload) = (f.ingress, f.offload);
                if f.flood_to(routers.into_iter(), Some(ingress), data.to_vec(), offload) > 0 {
                    f.forwarded();
                } else {
                    f.local();
                }
                Destination::Consumed
            }
            Err(reason) => {
                f.drop(reason);
                Destination::Consumed
            }
        }
    }

    /// Applies a report from `port`, which is snooped for its family from now on. Returns how
    /// many joins the port's cap refused.
    fn learn(&mut self, now: u64, network: NetworkId, port: PortId, report: Report<'_>) -> u64 {
        let slot = usize::from(port.0);
        if self.per_port.len() <= slot {
            self.per_port.resize(slot + 1, 0);
        }
        let mut refused = 0;
        let family = report.family() as usize;
        if let Some(lists) = self.unsnooped.get_mut(usize::from(network.0)) {
            lists[family].retain(|u| u.port != port);
        }
        for (group, change) in report.changes() {
            if group.always_flooded() {
                continue;
            }
            let key = (network, group);
            match change {
                Change::Join => {
                    let members = self.groups.entry(key).or_default();
                    let expires = now.saturating_add(MEMBERSHIP);
                    match members.binary_search_by_key(&port, |m| m.port) {
                        Ok(i) => members[i].expires = expires,
                        Err(_) if self.per_port[slot] >= self.max_groups_per_port => {
                            refused += 1;
                            if members.is_empty() {
                                self.groups.remove(&key);
                            }
                        }
                        Err(i) => {
                            members.insert(i, Member { port, expires });
                            self.per_port[slot] += 1;
                        }
                    }
                }
                Change::Leave => {
                    if let Some(members) = self.groups.get_mut(&key) {
                        if let Ok(i) = members.binary_search_by_key(&port, |m| m.port) {
                            members.remove(i);
                            self.per_port[slot] = self.per_port[slot].saturating_sub(1);
                        }
                        if members.is_empty() {
                            self.groups.remove(&key);
                        }
                    }
                }
            }
        }
        refused
    }

    /// The ports a frame to `group` in `network` goes to at `now`: its live members, then the
    /// ports not snooped yet for its family (the two never overlap: a member has reported),
    /// then the router ports (never members, never unsnooped).
    pub(crate) fn listeners(
        &self,
        network: NetworkId,
        group: Group,
        now: u64,
    ) -> impl Iterator<Item = PortId> + '_ {
        let members = self
            .groups
            .get(&(network, group))
            .map_or(&[][..], Vec::as_slice);
        let unsnooped = self
            .unsnooped
            .get(usize::from(network.0))
            .map_or(&[][..], |l| l[group.family() as usize].as_slice());
        let members = members.iter().filter(move |m| m.expires > now);
        let unsnooped = unsnooped.iter().filter(move |u| u.until > now);
        members
            .map(|m| m.port)
            .chain(unsnooped.map(|u| u.port))
            .chain(self.routers(network))
    }

    /// Starts the grace period of ports that joined, sends the queries that are due (when
    /// querier), sweeps expired memberships about once a second.
    pub(crate) fn housekeeping(
        &mut self,
        now: u64,
        topo: &Topology,
        counters: &mut Counters,
        output: &mut Vec<Packet>,
    ) {
        let next_query = *self
            .next_query
            .get_or_insert(now.saturating_add(QUERY_INTERVAL));
        for i in 0..self.joined.len() {
            let (port, query) = self.joined[i];
            self.start_grace(topo, port, now);
            if query && self.querier {
                query_port(topo, port, counters, output);
            }
        }
        self.joined.clear();
        if now >= next_query {
            self.next_query = Some(now.saturating_add(QUERY_INTERVAL));
            if self.querier {
                for net in &topo.networks {
                    for &port in net.ports.iter().filter(|&&p| !self.is_router(p)) {
                        query_port(topo, port, counters, output);
                    }
                }
            }
        }
        if now >= self.next_sweep {
            self.next_sweep = now.saturating_add(SWEEP_INTERVAL);
            let per_port = &mut self.per_port;
            self.groups.retain(|_, members| {
                members.retain(|m| {
                    let live = m.expires > now;
                    if !live && let Some(n) = per_port.get_mut(usize::from(m.port.0)) {
                        *n = n.saturating_sub(1);
                    }
                    live
                });
                !members.is_empty()
            });
            for list in self.unsnooped.iter_mut().flatten() {
                list.retain(|u| u.until > now);
            }
        }
    }

    /// Live memberships, sorted by network and group.
    pub(crate) fn rows(&self, now: u64) -> Vec<GroupRow> {
        let mut rows: Vec<GroupRow> = self
            .groups
            .iter()
            .map(|(&(network, group), members)| GroupRow {
                network,
                group,
                ports: members
                    .iter()
                    .filter(|m| m.expires > now)
                    .map(|m| m.port)
                    .collect(),
            })
            .filter(|r| !r.ports.is_empty())
            .collect();
        rows.sort_by_key(|r| (r.network, r.group));
        rows
    }

    /// The port's grace period runs from `now`.
    fn start_grace(&mut self, topo: &Topology, port: PortId, now: u64) {
        let Some(network) = topo.port(port).and_then(|p| p.network) else {
            return;
        };
        for list in self.network_mut(network) {
            for u in list.iter_mut().filter(|u| u.port == port) {
                u.until = u.until.min(now.saturating_add(UNSNOOPED_GRACE));
            }
        }
    }

    /// The unsnooped lists of `network`, made on first use.
    fn network_mut(&mut self, network: NetworkId) -> &mut [Vec<Unsnooped>; 2] {
        let i = usize::from(network.0);
        if self.unsnooped.len() <= i {
            self.unsnooped.resize_with(i + 1, Default::default);
        }
        &mut self.unsnooped[i]
    }
}

/// Sends the IGMPv3 and the MLDv2 general query out of `port`, from its network's gateway, or
/// from 0.0.0.0 and a MAC no container gets (02:42:00:00:00:00) on a network without one.
fn query_port(topo: &Topology, port: PortId, counters: &mut Counters, output: &mut Vec<Packet>) {
    let Some(p) = topo.port(port).filter(|p| p.active) else {
        return;
    };
    let Some(net) = p.network.and_then(|n| topo.networks.get(usize::from(n.0))) else {
        return;
    };
    let (ip, mac) = net.gateway.unwrap_or((
        Ipv4Addr::UNSPECIFIED,
        MacAddr::docker(Ipv4Addr::UNSPECIFIED),
    ));
    for frame in [
        query::igmp_general_query(mac, ip),
        query::mld_general_query(mac),
    ] {
        counters.originate(output, port, frame);
        counters.bridge.multicast_queries_sent += 1;
    }
}

#[cfg(test)]
mod tests;
