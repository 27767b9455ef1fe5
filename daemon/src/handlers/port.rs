//! `port publish`, `ls` and `rm`: the store, the DNAT table of every loop, and with a socket
//! uplink the host listening socket (bound first, so a port in use is refused before anything
//! is recorded).

use crate::state::{Daemon, lock};
use crate::uplink::gateway_published;
use anyhow::{Context, Result, bail};
use ipam::{Publish, PublishTarget};
use packet::PortProto;
use serde_json::{Value, json};
use std::net::{Ipv4Addr, SocketAddrV4};

/// What a `port publish` asks for (the request's fields).
pub(crate) struct PublishArgs {
    pub(crate) network: String,
    pub(crate) container: String,
    pub(crate) host_ip: Option<Ipv4Addr>,
    pub(crate) host_port: u16,
    pub(crate) host_port_last: Option<u16>,
    pub(crate) container_port: u16,
    pub(crate) proto: String,
    pub(crate) host_proxy: bool,
}

/// Publishes host ports (one, or a range) to a container's ports: recorded all at once, then
/// the socket gateway's listening sockets (with a socket uplink; bound first, so a port in use
/// is refused before anything is kept) and every loop's DNAT table.
pub(super) fn publish(d: &Daemon, args: PublishArgs) -> Result<Value> {
    let _guard = lock(&d.changes);
    let proto: PortProto = args.proto.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    // A macvlan network's containers are hosts of the LAN with addresses of their own: there
    // is no NAT in front of them to publish through.
    if let Ok(Some(n)) = d.store.network(&args.network)
        && n.macvlan.is_some()
    {
        anyhow::bail!(
            "network {:?} is a macvlan network: its containers are on the LAN with their own \
             addresses, reach them there (there is no NAT to publish a port through)",
            args.network
        );
    }
    let first = args.host_port;
    let last = args.host_port_last.unwrap_or(first);
    let target = PublishTarget {
        network: &args.network,
        container: &args.container,
        container_port: args.container_port,
        host_proxy: args.host_proxy,
    };
    let ports = d
        .store
        .publish_range(proto, args.host_ip, first, last, target)?;
    if let Some(g) = &d.gateway {
        for (i, (host_port, p)) in ports.iter().enumerate() {
            if let Err(e) = g.publish(gateway_published(proto, p.host_ip, *host_port)) {
                for (done, _) in &ports[..i] {
                    let _ = g.unpublish(proto, *done);
                }
                let _ = d.store.unpublish_range(proto, first, last);
                return Err(e)
                    .with_context(|| format!("listening on host {proto} port {host_port}"));
            }
        }
    }
    for (i, (host_port, p)) in ports.iter().enumerate() {
        if let Err(e) = activate(d, proto, *host_port, p) {
            for (done, _) in &ports[..=i] {
                deactivate(d, proto, *done, true);
            }
            let _ = d.store.unpublish_range(proto, first, last);
            return Err(e);
        }
    }
    let rows: Vec<Value> = ports.iter().map(|(h, p)| row(proto, *h, p)).collect();
    Ok(match rows.as_slice() {
        [one] => one.clone(),
        _ => json!({ "published": rows }),
    })
}

fn row(proto: PortProto, host_port: u16, p: &Publish) -> Value {
    json!({
        "proto": proto.to_string(),
        "host_ip": p.host_ip,
        "host_port": host_port,
        "network": p.network,
        "container": p.container,
        "container_ip": p.container_ip,
        "container_port": p.container_port,
        "host_proxy": p.host_proxy,
    })
}

/// Whether a port published on `host_ip` is DNATed by the switch: always behind a socket
/// uplink (its listening sockets bind `host_ip` and hand every connection to the switch);
/// otherwise when it listens on every address or on the uplink's. Loopback and other host
/// addresses are the host's own: only the host proxy serves them.
pub(crate) fn dnat_on_uplink(
    host_ip: Option<Ipv4Addr>,
    uplink: Option<Ipv4Addr>,
    socket_uplink: bool,
) -> bool {
    socket_uplink || host_ip.is_none_or(|a| a.is_unspecified() || Some(a) == uplink)
}

/// Where the host proxy listens for a published port and what it relays to, when the host
/// serves it: not the uplink's own address, the container connected on a network with a
/// host port (the relay's way in).
fn proxied(d: &Daemon, host_port: u16, p: &Publish) -> Option<(SocketAddrV4, SocketAddrV4)> {
    let ip = p.container_ip?;
    let host_ip = p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    if !d.host.proxy || !p.host_proxy || Some(host_ip) == d.uplink_address {
        return None;
    }
    super::host_port::of(d, &p.network)?;
    Some((
        SocketAddrV4::new(host_ip, host_port),
        SocketAddrV4::new(ip, p.container_port),
    ))
}

/// Makes a published port work, when its container is connected: every loop's DNAT table
/// (see [`dnat_on_uplink`]) and the host proxy.
///
/// # Errors
/// When the host proxy cannot listen (a host service has the port); the DNAT stays.
pub(crate) fn activate(d: &Daemon, proto: PortProto, host_port: u16, p: &Publish) -> Result<()> {
    let Some(ip) = p.container_ip else {
        return Ok(());
    };
    if dnat_on_uplink(p.host_ip, d.uplink_address, d.gateway.is_some()) {
        let (num, cport) = (proto.number(), p.container_port);
        if d.call_all(move |e| e.pipeline_mut().publish(num, host_port, ip, cport))
            .is_none()
        {
            tracing::warn!("{proto} port {host_port}: the packet loop is not running");
        }
    }
    if let Some((listen, target)) = proxied(d, host_port, p) {
        d.proxy.start(proto, listen, target).with_context(|| {
            format!(
                "the host cannot listen on {listen} (is a host service using it? publish \
                 another port, or bind one address with HOSTIP:{host_port}:...)"
            )
        })?;
    }
    Ok(())
}

/// Takes a published port out of every loop's DNAT table and the host proxy; `removed` when
/// it is gone for good (the socket gateway stops listening too).
pub(crate) fn deactivate(d: &Daemon, proto: PortProto, host_port: u16, removed: bool) {
    if removed && let Some(g) = &d.gateway {
        let _ = g.unpublish(proto, host_port);
    }
    d.proxy.stop(proto, host_port);
    let num = proto.number();
    d.call_all(move |e| e.pipeline_mut().unpublish(num, host_port));
}

/// Activates every published port whose container is connected (at start-up, once the
/// containers and host ports are back; the DNAT tables already have theirs).
pub(crate) fn activate_all(d: &Daemon) {
    let _guard = lock(&d.changes);
    for (proto, host_port, p) in d.store.published().unwrap_or_default() {
        if let Some((listen, target)) = proxied(d, host_port, &p)
            && let Err(e) = d.proxy.start(proto, listen, target)
        {
            tracing::warn!("{proto} port {host_port}: the host cannot listen on {listen}: {e}");
        }
    }
}

/// Every published port.
pub(super) fn ls(d: &Daemon) -> Result<Value> {
    Ok(Value::Array(
        d.store
            .published()?
            .into_iter()
            .map(|(proto, host_port, p)| row(proto, host_port, &p))
            .collect(),
    ))
}

/// Unpublishes `host_port` (to `host_port_last`) of `proto`.
pub(super) fn rm(
    d: &Daemon,
    proto: &str,
    host_port: u16,
    host_port_last: Option<u16>,
) -> Result<Value> {
    let _guard = lock(&d.changes);
    let proto: PortProto = proto.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let last = host_port_last.unwrap_or(host_port);
    let gone = d.store.unpublish_range(proto, host_port, last)?;
    if gone.is_empty() {
        bail!("{proto} port {host_port} is not published (see `vswitch port ls`)");
    }
    for (port, _) in &gone {
        deactivate(d, proto, *port, true);
    }
    let rows: Vec<Value> = gone.iter().map(|(h, p)| row(proto, *h, p)).collect();
    Ok(match rows.as_slice() {
        [one] => one.clone(),
        _ => json!({ "unpublished": rows }),
    })
}
