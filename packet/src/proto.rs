//! Transport protocols, as every crate names them.
//!
//! Two types, because there are two questions:
//!
//! - [`L4Proto`] (ICMP, TCP, UDP) is the L4 protocol of a packet or a tracked flow: what
//!   conntrack keys on, what the IP header's protocol field says.
//! - [`PortProto`] (TCP, UDP) is the transport a *port number* belongs to: what a published port,
//!   a listening host socket or a stored port mapping names (`8080/tcp`). ICMP has no ports, so
//!   it is not a value of this type: "a published port is TCP or UDP" is checked once, where the
//!   text is parsed (topology file, control request, state file), and cannot be wrong anywhere
//!   after. `L4Proto::from(PortProto)` is lossless; `PortProto::try_from(L4Proto)` refuses ICMP.
//!
//! Both travel as lowercase text (`"icmp"`, `"tcp"`, `"udp"`) in TOML, JSON and the state file.

use std::fmt;
use std::str::FromStr;

/// The L4 protocol of a packet or flow.
///
/// Ordered ICMP < TCP < UDP (as their protocol numbers).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum L4Proto {
    /// ICMP (for echo, conntrack uses the identifier as both ports).
    Icmp,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl L4Proto {
    /// IANA protocol number (1, 6 or 17), as in the IPv4 header.
    pub const fn number(self) -> u8 {
        match self {
            L4Proto::Icmp => 1,
            L4Proto::Tcp => 6,
            L4Proto::Udp => 17,
        }
    }

    /// Inverse of [`L4Proto::number`]; `None` for any other protocol.
    pub const fn from_number(n: u8) -> Option<L4Proto> {
        match n {
            1 => Some(L4Proto::Icmp),
            6 => Some(L4Proto::Tcp),
            17 => Some(L4Proto::Udp),
            _ => None,
        }
    }

    /// "icmp", "tcp" or "udp".
    pub const fn as_str(self) -> &'static str {
        match self {
            L4Proto::Icmp => "icmp",
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
        }
    }

    /// A [`PortProto`] as an [`L4Proto`] (`From` too; this one is `const`).
    pub const fn from_port(p: PortProto) -> L4Proto {
        match p {
            PortProto::Tcp => L4Proto::Tcp,
            PortProto::Udp => L4Proto::Udp,
        }
    }
}

impl fmt::Display for L4Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol name other than icmp, tcp or udp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?}: use icmp, tcp or udp")]
pub struct ParseL4ProtoError(pub String);

impl FromStr for L4Proto {
    type Err = ParseL4ProtoError;

    /// Case-insensitive.
    fn from_str(s: &str) -> Result<L4Proto, ParseL4ProtoError> {
        match s.to_ascii_lowercase().as_str() {
            "icmp" => Ok(L4Proto::Icmp),
            "tcp" => Ok(L4Proto::Tcp),
            "udp" => Ok(L4Proto::Udp),
            _ => Err(ParseL4ProtoError(s.to_string())),
        }
    }
}

/// The transport of a port number: what a published port is (TCP or UDP, never ICMP).
///
/// Ordered TCP < UDP, as their names and numbers.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PortProto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl PortProto {
    /// IANA protocol number (6 or 17).
    pub const fn number(self) -> u8 {
        L4Proto::from_port(self).number()
    }

    /// "tcp" or "udp".
    pub const fn as_str(self) -> &'static str {
        L4Proto::from_port(self).as_str()
    }
}

impl fmt::Display for PortProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol name other than tcp or udp where a port's protocol is expected (icmp included).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?}: use tcp or udp")]
pub struct ParsePortProtoError(pub String);

impl FromStr for PortProto {
    type Err = ParsePortProtoError;

    /// Case-insensitive.
    fn from_str(s: &str) -> Result<PortProto, ParsePortProtoError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(PortProto::Tcp),
            "udp" => Ok(PortProto::Udp),
            _ => Err(ParsePortProtoError(s.to_string())),
        }
    }
}

impl From<PortProto> for L4Proto {
    fn from(p: PortProto) -> L4Proto {
        L4Proto::from_port(p)
    }
}

/// An [`L4Proto`] without ports (ICMP) where a port's protocol is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} has no ports: a published port is tcp or udp")]
pub struct NoPorts(pub L4Proto);

impl TryFrom<L4Proto> for PortProto {
    type Error = NoPorts;

    fn try_from(p: L4Proto) -> Result<PortProto, NoPorts> {
        match p {
            L4Proto::Tcp => Ok(PortProto::Tcp),
            L4Proto::Udp => Ok(PortProto::Udp),
            L4Proto::Icmp => Err(NoPorts(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for p in [L4Proto::Icmp, L4Proto::Tcp, L4Proto::Udp] {
            assert_eq!(L4Proto::from_number(p.number()), Some(p));
        }
        assert_eq!(L4Proto::Icmp.number(), 1);
        assert_eq!(L4Proto::Tcp.number(), 6);
        assert_eq!(L4Proto::Udp.number(), 17);
        assert_eq!(L4Proto::from_number(0), None);
        assert_eq!(L4Proto::from_number(132), None);
        assert_eq!(PortProto::Tcp.number(), 6);
        assert_eq!(PortProto::Udp.number(), 17);
    }

    #[test]
    fn parse_and_display_round_trip() {
        for p in [L4Proto::Icmp, L4Proto::Tcp, L4Proto::Udp] {
            assert_eq!(p.to_string(), p.as_str());
            assert_eq!(p.to_string().parse::<L4Proto>(), Ok(p));
            assert_eq!(p.as_str().to_uppercase().parse::<L4Proto>(), Ok(p));
        }
        for p in [PortProto::Tcp, PortProto::Udp] {
            assert_eq!(p.to_string(), p.as_str());
            assert_eq!(p.to_string().parse::<PortProto>(), Ok(p));
            assert_eq!(L4Proto::from(p).as_str(), p.as_str());
            assert_eq!(PortProto::try_from(L4Proto::from(p)), Ok(p));
        }
        assert_eq!("TCP".parse::<PortProto>(), Ok(PortProto::Tcp));
        assert_eq!(
            "sctp".parse::<L4Proto>().unwrap_err().to_string(),
            "unknown protocol \"sctp\": use icmp, tcp or udp"
        );
    }

    #[test]
    fn icmp_is_refused_as_a_port_protocol() {
        assert_eq!(
            "icmp".parse::<PortProto>().unwrap_err().to_string(),
            "unknown protocol \"icmp\": use tcp or udp"
        );
        assert_eq!(
            PortProto::try_from(L4Proto::Icmp).unwrap_err().to_string(),
            "icmp has no ports: a published port is tcp or udp"
        );
        let e = serde_json::from_str::<PortProto>("\"icmp\"").unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown variant `icmp`, expected `tcp` or `udp`"),
            "{e}"
        );
    }

    #[test]
    fn serde_is_lowercase_text() {
        for (p, text) in [
            (L4Proto::Icmp, "\"icmp\""),
            (L4Proto::Tcp, "\"tcp\""),
            (L4Proto::Udp, "\"udp\""),
        ] {
            assert_eq!(serde_json::to_string(&p).unwrap(), text);
            assert_eq!(serde_json::from_str::<L4Proto>(text).unwrap(), p);
        }
        for (p, text) in [(PortProto::Tcp, "\"tcp\""), (PortProto::Udp, "\"udp\"")] {
            assert_eq!(serde_json::to_string(&p).unwrap(), text);
            assert_eq!(serde_json::from_str::<PortProto>(text).unwrap(), p);
        }
    }

    #[test]
    fn order_follows_protocol_numbers() {
        assert!(L4Proto::Icmp < L4Proto::Tcp && L4Proto::Tcp < L4Proto::Udp);
        assert!(PortProto::Tcp < PortProto::Udp);
    }
}
