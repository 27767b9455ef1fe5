//! `network create`'s macvlan flags: `--vlan`, `--macvlan-mode` and `--aux-address`, checked
//! before the request goes (the daemon checks them again).

use anyhow::{Result, bail};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A macvlan network's VLAN and mode, as the request carries them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MacvlanFlags {
    /// The VLAN id.
    pub vlan: Option<u16>,
    /// `bridge` or `private`.
    pub mode: Option<String>,
}

/// Checks `--vlan` (one 802.1Q id: QinQ is refused) and `--macvlan-mode` against `--driver`,
/// and IPv6 on a macvlan network.
pub fn macvlan_flags(
    driver: Option<&str>,
    vlan: Option<&str>,
    mode: Option<&str>,
    ipv6: bool,
) -> Result<MacvlanFlags> {
    if driver != Some("macvlan") {
        if vlan.is_some() {
            bail!(
                "--vlan needs --driver macvlan (only a macvlan network is on a VLAN of the uplink)"
            );
        }
        if mode.is_some() {
            bail!("--macvlan-mode needs --driver macvlan");
        }
        return Ok(MacvlanFlags::default());
    }
    if ipv6 {
        bail!(
            "IPv6 on a macvlan network is not supported yet: leave out --ipv6 and the IPv6 --subnet"
        );
    }
    let vlan = match vlan {
        Some(v) => Some(switch::config::parse_vlan(v).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let mode = match mode {
        None => None,
        Some(m @ ("bridge" | "private")) => Some(m.to_string()),
        Some(other) => bail!("--macvlan-mode {other:?}: give bridge or private"),
    };
    Ok(MacvlanFlags { vlan, mode })
}

/// `--aux-address NAME=IP` values (Docker's flag), by name.
pub fn parse_aux(values: &[String]) -> Result<BTreeMap<String, Ipv4Addr>> {
    let mut out = BTreeMap::new();
    for v in values {
        let Some((name, ip)) = v.split_once('=') else {
            bail!("--aux-address {v:?}: expected NAME=IP");
        };
        let Ok(ip) = ip.parse::<Ipv4Addr>() else {
            bail!("--aux-address {v:?}: {ip:?} is not an IPv4 address");
        };
        if name.is_empty() {
            bail!("--aux-address {v:?}: expected NAME=IP");
        }
        if out.insert(name.to_string(), ip).is_some() {
            bail!("--aux-address: {name:?} given twice");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn vlan_and_mode_need_the_macvlan_driver_and_one_tag() {
        assert_eq!(
            macvlan_flags(Some("macvlan"), Some("20"), Some("private"), false).unwrap(),
            MacvlanFlags {
                vlan: Some(20),
                mode: Some("private".into())
            }
        );
        assert_eq!(
            macvlan_flags(Some("macvlan"), None, None, false).unwrap(),
            MacvlanFlags::default()
        );
        assert_eq!(
            macvlan_flags(None, None, None, true).unwrap(),
            MacvlanFlags::default()
        );
        let err = |d, v, m, six| macvlan_flags(d, v, m, six).unwrap_err().to_string();
        assert!(err(None, Some("20"), None, false).contains("--vlan needs --driver macvlan"));
        assert!(
            err(Some("overlay"), None, Some("bridge"), false)
                .contains("--macvlan-mode needs --driver macvlan")
        );
        assert!(err(Some("macvlan"), Some("20.30"), None, false).contains("QinQ"));
        assert!(err(Some("macvlan"), Some("4095"), None, false).contains("1-4094"));
        assert!(err(Some("macvlan"), None, Some("vepa"), false).contains("bridge or private"));
        assert!(err(Some("macvlan"), None, None, true).contains("IPv6"));
    }

    #[test]
    fn aux_addresses_are_name_equals_ipv4() {
        let got = parse_aux(&["router2=192.168.50.3".into(), "nas=192.168.50.4".into()]).unwrap();
        assert_eq!(got["router2"], Ipv4Addr::new(192, 168, 50, 3));
        assert_eq!(got.len(), 2);
        for bad in ["router2", "=1.2.3.4", "x=fd00::1", "x=1.2.3"] {
            assert!(parse_aux(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(parse_aux(&["a=1.1.1.1".into(), "a=1.1.1.2".into()]).is_err());
    }
}
