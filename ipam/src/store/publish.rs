//! Published ports: (proto, host port) → a container's port, and the [`Store`] methods that
//! publish and unpublish them.

use super::{
    LEASE_BY_CONTAINER, NETWORKS, PUBLISHED, PUBLISHED_BY_CONTAINER, Store, StoreError, decode,
    derived, encode, read_network, yes,
};
use packet::PortProto;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A published port: traffic to the uplink address on (proto, host port) goes here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    /// Network of the container.
    pub network: String,
    /// Container name.
    pub container: String,
    /// Its address on that network while it is connected (copied from the lease); none while
    /// it is not: the port stays the container's and comes back with its next lease
    /// ([`Store::republish`]), as Docker's published ports do across restarts.
    #[serde(default)]
    pub container_ip: Option<Ipv4Addr>,
    /// Port inside the container.
    pub container_port: u16,
    /// The host address it is bound to: none for every address, a loopback address for the
    /// host only.
    #[serde(default)]
    pub host_ip: Option<Ipv4Addr>,
    /// The host's own connections reach it through the daemon's host proxy; off when the
    /// runtime holds the host port itself (Podman binds every published port to reserve it).
    #[serde(default = "yes")]
    pub host_proxy: bool,
}

/// Where [`Store::publish_range`] sends ports: the container's first port.
#[derive(Debug, Clone, Copy)]
pub struct PublishTarget<'a> {
    /// Network of the container.
    pub network: &'a str,
    /// Container name.
    pub container: &'a str,
    /// Container port of the range's first host port.
    pub container_port: u16,
    /// See [`Publish::host_proxy`].
    pub host_proxy: bool,
}

pub(super) fn all_published(
    table: &impl ReadableTable<(&'static str, u16), &'static str>,
) -> Result<Vec<(PortProto, u16, Publish)>, StoreError> {
    let mut out = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        let (proto, port) = k.value();
        let key = format!("{proto}/{port}");
        let proto = PortProto::from_str(proto)
            .map_err(|_| StoreError::Corrupt(format!("published port {key}: bad protocol")))?;
        out.push((proto, port, decode("published port", &key, v.value())?));
    }
    Ok(out)
}

impl Store {
    /// Publishes (proto, host port) to `container_port` of `container` on `network`, which must
    /// hold a lease there, on every host address. Refuses a port already published and internal
    /// networks.
    pub fn publish(
        &self,
        proto: PortProto,
        host_port: u16,
        network: &str,
        container: &str,
        container_port: u16,
    ) -> Result<Publish, StoreError> {
        let target = PublishTarget {
            network,
            container,
            container_port,
            host_proxy: true,
        };
        let mut all = self.publish_range(proto, None, host_port, host_port, target)?;
        all.pop()
            .map(|(_, p)| p)
            .ok_or(StoreError::Corrupt("publishing one port gave none".into()))
    }

    /// Publishes host ports `first..=last` of `proto` on `host_ip` (none: every address) to
    /// the container's ports from `target.container_port` on, in step: all of them or (on the
    /// first refusal) none, in one transaction.
    pub fn publish_range(
        &self,
        proto: PortProto,
        host_ip: Option<Ipv4Addr>,
        first: u16,
        last: u16,
        target: PublishTarget<'_>,
    ) -> Result<Vec<(u16, Publish)>, StoreError> {
        let PublishTarget {
            network,
            container,
            container_port,
            host_proxy,
        } = target;
        if first == 0 || container_port == 0 {
            return Err(StoreError::PortZero);
        }
        let bad_range = StoreError::BadRange {
            first,
            last,
            container_first: container_port,
        };
        if last < first || u32::from(container_port) + u32::from(last - first) > 65535 {
            return Err(bad_range);
        }
        self.write(|txn| {
            let net = read_network(&txn.open_table(NETWORKS)?, network)?
                .ok_or(StoreError::UnknownNetwork(network.to_string()))?;
            if net.internal {
                return Err(StoreError::InternalNetwork(network.to_string()));
            }
            let ip = txn
                .open_table(LEASE_BY_CONTAINER)?
                .get((network, container))?
                .map(|v| Ipv4Addr::from(v.value()))
                .ok_or_else(|| StoreError::NotConnected {
                    container: container.to_string(),
                    network: network.to_string(),
                })?;
            let mut published = txn.open_table(PUBLISHED)?;
            let mut index = txn.open_table(PUBLISHED_BY_CONTAINER)?;
            let mut out = Vec::new();
            for (host_port, cport) in (first..=last).zip(container_port..) {
                if let Some(v) = published.get((proto.as_str(), host_port))? {
                    let other: Publish =
                        decode("published port", &format!("{proto}/{host_port}"), v.value())?;
                    return Err(StoreError::PortInUse {
                        proto,
                        port: host_port,
                        network: other.network,
                        container: other.container,
                    });
                }
                let p = Publish {
                    network: network.to_string(),
                    container: container.to_string(),
                    container_ip: Some(ip),
                    container_port: cport,
                    host_ip: host_ip.filter(|a| !a.is_unspecified()),
                    host_proxy,
                };
                published.insert((proto.as_str(), host_port), encode(&p)?.as_str())?;
                index.insert((network, container, proto.as_str(), host_port), ())?;
                out.push((host_port, p));
            }
            Ok(out)
        })
    }

    /// Gives the ports published to `container` on `network` its current address again (after
    /// a disconnect and a new lease); what they are now. None when it holds no lease there.
    pub fn republish(
        &self,
        network: &str,
        container: &str,
    ) -> Result<Vec<(PortProto, u16, Publish)>, StoreError> {
        self.write(|txn| {
            let Some(ip) = txn
                .open_table(LEASE_BY_CONTAINER)?
                .get((network, container))?
                .map(|v| Ipv4Addr::from(v.value()))
            else {
                return Ok(Vec::new());
            };
            let index = txn.open_table(PUBLISHED_BY_CONTAINER)?;
            let mut published = txn.open_table(PUBLISHED)?;
            let mut out = Vec::new();
            for (proto, port) in derived::container_ports(&index, network, container)? {
                let key = format!("{proto}/{port}");
                let parsed = PortProto::from_str(&proto).map_err(|_| {
                    StoreError::Corrupt(format!("published port {key}: bad protocol"))
                })?;
                let mut p: Publish = match published.get((proto.as_str(), port))? {
                    Some(v) => decode("published port", &key, v.value())?,
                    None => {
                        return Err(StoreError::Corrupt(format!(
                            "port index points to missing published port {key}"
                        )));
                    }
                };
                p.container_ip = Some(ip);
                published.insert((proto.as_str(), port), encode(&p)?.as_str())?;
                out.push((parsed, port, p));
            }
            Ok(out)
        })
    }

    /// Removes a published port; `Ok(None)` if it was not published.
    pub fn unpublish(
        &self,
        proto: PortProto,
        host_port: u16,
    ) -> Result<Option<Publish>, StoreError> {
        Ok(self
            .unpublish_range(proto, host_port, host_port)?
            .pop()
            .map(|(_, p)| p))
    }

    /// Removes the published ports of `proto` in `first..=last`, in one transaction; those
    /// that were published (none: an empty list).
    pub fn unpublish_range(
        &self,
        proto: PortProto,
        first: u16,
        last: u16,
    ) -> Result<Vec<(u16, Publish)>, StoreError> {
        self.write(|txn| {
            let mut published = txn.open_table(PUBLISHED)?;
            let mut index = txn.open_table(PUBLISHED_BY_CONTAINER)?;
            let mut out = Vec::new();
            for host_port in first..=last {
                let key = format!("{proto}/{host_port}");
                let p: Publish = match published.remove((proto.as_str(), host_port))? {
                    Some(v) => decode("published port", &key, v.value())?,
                    None => continue,
                };
                index.remove((
                    p.network.as_str(),
                    p.container.as_str(),
                    proto.as_str(),
                    host_port,
                ))?;
                out.push((host_port, p));
            }
            Ok(out)
        })
    }

    /// Published ports, by protocol then host port.
    pub fn published(&self) -> Result<Vec<(PortProto, u16, Publish)>, StoreError> {
        all_published(&self.read()?.open_table(PUBLISHED)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::*;

    #[test]
    fn publish_rules() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        s.ensure_default_bridge().unwrap();
        s.create_network(spec("n", Some("10.0.0.0/24"))).unwrap();
        let mut internal = spec("int", Some("10.0.1.0/24"));
        internal.internal = true;
        s.create_network(internal).unwrap();
        let (ip_web, _) = s.allocate("n", "web", None, meta()).unwrap();
        s.allocate("int", "db", None, meta()).unwrap();

        let p = s.publish(PortProto::Tcp, 8080, "n", "web", 80).unwrap();
        assert_eq!(p.container_ip, Some(ip_web));
        // same port, other proto is fine
        s.publish(PortProto::Udp, 8080, "n", "web", 53).unwrap();
        let e = s.publish(PortProto::Tcp, 8080, "n", "web", 81).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tcp host port 8080 is already published to \"web\""),
            "{e}"
        );
        assert!(matches!(
            s.publish(PortProto::Tcp, 9000, "n", "ghost", 80),
            Err(StoreError::NotConnected { .. })
        ));
        assert!(matches!(
            s.publish(PortProto::Tcp, 9000, "nope", "web", 80),
            Err(StoreError::UnknownNetwork(_))
        ));
        assert!(matches!(
            s.publish(PortProto::Tcp, 9000, "int", "db", 80),
            Err(StoreError::InternalNetwork(_))
        ));
        assert!(matches!(
            s.publish(PortProto::Tcp, 0, "n", "web", 80),
            Err(StoreError::PortZero)
        ));
        assert_eq!(s.published().unwrap().len(), 2);

        // network removal refused while in use
        let e = s.remove_network("n").unwrap_err();
        assert!(matches!(
            e,
            StoreError::NetworkInUse {
                leases: 1,
                ports: 2,
                ..
            }
        ));
        assert_eq!(
            s.unpublish(PortProto::Udp, 8080)
                .unwrap()
                .unwrap()
                .container_port,
            53
        );
        assert_eq!(s.unpublish(PortProto::Udp, 8080).unwrap(), None);
        // releasing the container keeps its ports, without an address, for its next lease
        let rel = s.release("n", "web", false).unwrap().unwrap();
        assert_eq!(rel.unpublished.len(), 1);
        assert_eq!(rel.unpublished[0].0, PortProto::Tcp);
        assert_eq!(rel.unpublished[0].2.container_ip, Some(ip_web));
        let kept = s.published().unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].2.container_ip, None);
        s.verify().unwrap();
        // ... and a port it keeps is still its own
        s.allocate("n", "other", None, meta()).unwrap();
        assert!(matches!(
            s.publish(PortProto::Tcp, 8080, "n", "other", 80),
            Err(StoreError::PortInUse { .. })
        ));
        s.release("n", "other", true).unwrap();
        // the container comes back on another address: its port follows
        let (again, _) = s
            .allocate("n", "web", Some(ip("10.0.0.77")), meta())
            .unwrap();
        assert_eq!(s.published().unwrap()[0].2.container_ip, None);
        let back = s.republish("n", "web").unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].2.container_ip, Some(again));
        assert_eq!(s.published().unwrap()[0].2.container_ip, Some(again));
        assert!(s.republish("n", "ghost").unwrap().is_empty());
        s.verify().unwrap();
        // released with `unpublish`, its ports go in the same transaction
        let rel = s.release("n", "web", true).unwrap().unwrap();
        assert_eq!(rel.unpublished.len(), 1);
        assert!(s.published().unwrap().is_empty());
        s.allocate("n", "web", None, meta()).unwrap();
        assert!(s.republish("n", "web").unwrap().is_empty());
        s.publish(PortProto::Tcp, 8081, "n", "web", 80).unwrap();
        s.release("n", "web", false).unwrap();
        // a network without containers goes with the ports its disconnected containers kept
        s.remove_network("n").unwrap();
        assert!(s.published().unwrap().is_empty());
        s.verify().unwrap();
        assert!(matches!(
            s.remove_network("n"),
            Err(StoreError::UnknownNetwork(_))
        ));
        assert!(matches!(
            s.remove_network("bridge"),
            Err(StoreError::Builtin(_))
        ));
        assert!(matches!(
            s.remove_network("int"),
            Err(StoreError::NetworkInUse { leases: 1, .. })
        ));
        s.verify().unwrap();
    }

    #[test]
    fn port_ranges_are_all_or_nothing() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        s.create_network(spec("n", Some("10.0.0.0/24"))).unwrap();
        let (a, _) = s.allocate("n", "a", None, meta()).unwrap();
        s.allocate("n", "b", None, meta()).unwrap();
        let to = |container, container_port| PublishTarget {
            network: "n",
            container,
            container_port,
            host_proxy: true,
        };
        let loopback = Some(Ipv4Addr::LOCALHOST);
        let got = s
            .publish_range(PortProto::Tcp, loopback, 8000, 8002, to("a", 9000))
            .unwrap();
        let ports: Vec<(u16, u16)> = got.iter().map(|(h, p)| (*h, p.container_port)).collect();
        assert_eq!(ports, [(8000, 9000), (8001, 9001), (8002, 9002)]);
        assert!(
            got.iter()
                .all(|(_, p)| p.host_ip == loopback && p.container_ip == Some(a))
        );
        // one port of the range taken: nothing of it is published
        let e = s
            .publish_range(PortProto::Tcp, None, 7999, 8000, to("b", 80))
            .unwrap_err();
        assert!(matches!(e, StoreError::PortInUse { port: 8000, .. }), "{e}");
        assert_eq!(s.published().unwrap().len(), 3);
        for (first, last, cport) in [(10, 9, 80), (1, 2, 65535), (0, 3, 80)] {
            assert!(
                s.publish_range(PortProto::Udp, None, first, last, to("b", cport))
                    .is_err()
            );
        }
        // 0.0.0.0 is "every address"
        let any = s
            .publish_range(
                PortProto::Udp,
                Some(Ipv4Addr::UNSPECIFIED),
                53,
                53,
                to("b", 53),
            )
            .unwrap();
        assert_eq!(any[0].1.host_ip, None);
        let gone = s.unpublish_range(PortProto::Tcp, 7990, 8001).unwrap();
        assert_eq!(
            gone.iter().map(|(h, _)| *h).collect::<Vec<_>>(),
            [8000, 8001]
        );
        assert!(
            s.unpublish_range(PortProto::Tcp, 7990, 7995)
                .unwrap()
                .is_empty()
        );
        assert_eq!(s.published().unwrap().len(), 2);
        s.verify().unwrap();
    }
}
