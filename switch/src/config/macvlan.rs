//! Networks bridged straight onto the uplink's LAN ("macvlan", as Docker calls its driver), and
//! 802.1Q VLANs on a trunk uplink.
//!
//! A macvlan network has no gateway, no NAT and no DNS of vswitch's: its containers appear on
//! the uplink's segment as hosts of their own, with addresses of the LAN's subnet and the LAN's
//! router as their gateway. With a `vlan`, its frames leave the uplink tagged with that VLAN id
//! and only frames with that tag enter it; the containers' own ports stay untagged (access
//! ports). The pipeline gives each such network a port of kind
//! [`crate::PortKind::Parent`] standing for the uplink (see `crate::pipeline`'s parent stage).

use super::{ConfigError, NetworkConfig};
use serde::{Deserialize, Serialize};

/// What a network is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkDriver {
    /// vswitch's own subnet behind its gateway, masqueraded out of the uplink (Docker's
    /// `bridge`).
    #[default]
    Bridge,
    /// Bridged onto the uplink's LAN, no NAT (Docker's `macvlan`).
    Macvlan,
}

/// How a macvlan network's containers reach each other (Docker's macvlan modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MacvlanMode {
    /// Through vswitch, directly.
    #[default]
    Bridge,
    /// Not at all: each container reaches only the LAN (through the uplink).
    Private,
}

/// A macvlan network's link to the LAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Macvlan {
    /// Its mode.
    pub mode: MacvlanMode,
    /// Its 802.1Q VLAN id on the uplink (1..=4094), or untagged.
    pub vlan: Option<u16>,
}

/// The highest 802.1Q VLAN id (4095 is reserved).
pub const MAX_VLAN: u16 = 4094;

/// The VLAN id `text` names, or why it does not: one id 1..=4094; stacked tags (QinQ, 802.1ad,
/// written `20.30`) are refused.
pub fn parse_vlan(text: &str) -> Result<u16, String> {
    if text.contains('.') || text.contains(':') {
        return Err(format!(
            "vlan {text:?}: stacked tags (QinQ, 802.1ad) are not supported: give one VLAN id 1-{MAX_VLAN}"
        ));
    }
    match text.trim().parse::<u16>() {
        Ok(v) if (1..=MAX_VLAN).contains(&v) => Ok(v),
        _ => Err(format!("vlan {text:?}: give a VLAN id 1-{MAX_VLAN}")),
    }
}

/// The macvlan side of a network from the file, checked: `None` for a bridge network.
pub(crate) fn of_config(n: &NetworkConfig) -> Result<Option<Macvlan>, ConfigError> {
    if let Some(vlan) = n.vlan
        && !(1..=MAX_VLAN).contains(&vlan)
    {
        return Err(ConfigError::BadVlan {
            network: n.name.clone(),
            vlan,
        });
    }
    match n.driver {
        NetworkDriver::Bridge if n.vlan.is_some() => {
            Err(ConfigError::VlanNeedsMacvlan(n.name.clone()))
        }
        NetworkDriver::Bridge if n.macvlan_mode != MacvlanMode::Bridge => {
            Err(ConfigError::ModeNeedsMacvlan(n.name.clone()))
        }
        NetworkDriver::Bridge => Ok(None),
        NetworkDriver::Macvlan if n.vni.is_some() || n.subnet6.is_some() => {
            Err(ConfigError::MacvlanIpv4Only(n.name.clone()))
        }
        NetworkDriver::Macvlan => Ok(Some(Macvlan {
            mode: n.macvlan_mode,
            vlan: n.vlan,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_ids_are_one_tag_in_range() {
        assert_eq!(parse_vlan("20"), Ok(20));
        assert_eq!(parse_vlan("4094"), Ok(4094));
        for bad in ["0", "4095", "x", "-1", ""] {
            assert!(parse_vlan(bad).unwrap_err().contains("1-4094"), "{bad}");
        }
        assert!(parse_vlan("20.30").unwrap_err().contains("QinQ"));
    }
}
