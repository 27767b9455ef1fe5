//! Docker's `-p` syntax for `port publish` and `port rm`: `[HOSTIP:]HOSTPORT[-LAST]:CONTAINERPORT
//! [-LAST][/tcp|udp]` and `HOSTPORT[-LAST][/tcp|udp]`.

use anyhow::{Context, Result, bail};
use std::net::Ipv4Addr;

/// A parsed `-p` mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The host address it is bound to (none: every address).
    pub host_ip: Option<Ipv4Addr>,
    /// First host port.
    pub host_port: u16,
    /// Last host port of a range.
    pub host_port_last: Option<u16>,
    /// First container port.
    pub container_port: u16,
    /// tcp or udp.
    pub proto: String,
}

fn split_proto(text: &str) -> Result<(&str, String)> {
    let (rest, proto) = text.split_once('/').unwrap_or((text, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if proto != "tcp" && proto != "udp" {
        bail!("{text:?}: the protocol must be tcp or udp");
    }
    Ok((rest, proto))
}

fn port(text: &str, whole: &str) -> Result<u16> {
    text.parse()
        .ok()
        .filter(|p| *p != 0)
        .with_context(|| format!("{whole:?}: {text:?} is not a port 1-65535"))
}

/// `8000` or `8000-8010`: first and last.
fn range(text: &str, whole: &str) -> Result<(u16, u16)> {
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (port(a, whole)?, port(b, whole)?),
        None => {
            let p = port(text, whole)?;
            (p, p)
        }
    };
    if last < first {
        bail!("{whole:?}: the range {first}-{last} goes down");
    }
    Ok((first, last))
}

/// `HOSTPORT[-LAST][/tcp|udp]` → (first, last, proto).
pub fn parse_host_ports(text: &str) -> Result<(u16, u16, String)> {
    let (ports, proto) = split_proto(text)?;
    let (first, last) = range(ports, text)?;
    Ok((first, last, proto))
}

/// `[HOSTIP:]HOSTPORT[-LAST]:CONTAINERPORT[-LAST][/tcp|udp]`.
pub fn parse_mapping(text: &str) -> Result<Mapping> {
    let usage = || {
        format!(
            "{text:?}: expected [HOSTIP:]HOSTPORT[-LAST]:CONTAINERPORT[-LAST][/tcp|udp], e.g. 8080:80, 127.0.0.1:8080:80 or 8000-8010:8000-8010/udp"
        )
    };
    let (rest, proto) = split_proto(text)?;
    let parts: Vec<&str> = rest.split(':').collect();
    let (host_ip, host, container) = match parts.as_slice() {
        [h, c] => (None, *h, *c),
        [ip, h, c] => {
            let ip: Ipv4Addr = ip
                .parse()
                .with_context(|| format!("{text:?}: {ip:?} is not an IPv4 address"))?;
            (Some(ip), *h, *c)
        }
        _ => bail!(usage()),
    };
    let (host_port, host_last) = range(host, text)?;
    let (container_port, container_last) = range(container, text)?;
    if container_last != container_port && container_last - container_port != host_last - host_port
    {
        bail!("{text:?}: the host and container ranges must be the same length");
    }
    if container_last == container_port
        && host_last != host_port
        && u32::from(container_port) + u32::from(host_last - host_port) > 65535
    {
        bail!(usage());
    }
    Ok(Mapping {
        host_ip: host_ip.filter(|a| !a.is_unspecified()),
        host_port,
        host_port_last: (host_last != host_port).then_some(host_last),
        container_port,
        proto,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_as_docker_writes_them() {
        let m = parse_mapping("8080:80").unwrap();
        assert_eq!(
            m,
            Mapping {
                host_ip: None,
                host_port: 8080,
                host_port_last: None,
                container_port: 80,
                proto: "tcp".into()
            }
        );
        let m = parse_mapping("127.0.0.1:8080:80/UDP").unwrap();
        assert_eq!(m.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(m.proto, "udp");
        let m = parse_mapping("0.0.0.0:8000-8010:9000-9010").unwrap();
        assert_eq!(
            (m.host_ip, m.host_port, m.host_port_last, m.container_port),
            (None, 8000, Some(8010), 9000)
        );
        assert_eq!(
            parse_host_ports("8000-8002/udp").unwrap(),
            (8000, 8002, "udp".into())
        );
        assert_eq!(parse_host_ports("53").unwrap(), (53, 53, "tcp".into()));
    }

    #[test]
    fn bad_mappings_say_what_is_wrong() {
        for (bad, says) in [
            ("8080", "expected [HOSTIP:]"),
            ("8080:0", "not a port"),
            ("8080:80/sctp", "tcp or udp"),
            ("x.1:8080:80", "not an IPv4 address"),
            ("8010-8000:80", "goes down"),
            ("8000-8010:80-81", "same length"),
            ("1:2:3:4", "expected"),
            ("65000-65535:65500", "expected"),
        ] {
            let e = parse_mapping(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
