//! Helpers of the store's unit tests: a store file in a temporary directory, parsing shorthands.

use super::{LeaseMeta, NetworkSpec};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// A store path in a directory that is removed on drop.
pub(crate) struct Tmp {
    _dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
}

pub(crate) fn tmp() -> Tmp {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    Tmp { _dir: dir, path }
}

pub(crate) fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

pub(crate) fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub(crate) fn spec(name: &str, subnet: Option<&str>) -> NetworkSpec {
    let mut s = NetworkSpec::new(name);
    s.subnet = subnet.map(net);
    s
}

pub(crate) fn meta() -> LeaseMeta {
    LeaseMeta {
        netns: "ns1".into(),
        ifname: "eth0".into(),
        host_ifname: "vethabc".into(),
        mac: None,
        ip6: None,
    }
}
