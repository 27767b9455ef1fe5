//! `port publish`, `ls` and `rm`: the store, the DNAT table of every loop, and with a socket
//! uplink the host listening socket (bound first, so a port in use is refused before anything
//! is recorded).

use crate::state::{Daemon, lock};
use crate::uplink::gateway_published;
use anyhow::{Context, Result, bail};
use ipam::{Publish, PublishTarget};
use packet::PortProto;
use serde_json::{Value, json};
use std::net::Ipv4Addr;

/// What a `port publish` asks for (the request's fields).
pub(crate) struct PublishArgs {
    pub(crate) network: String,
    pub(crate) container: String,
    pub(crate) host_ip: Option<Ipv4Addr>,
    pub(crate) host_port: u16,
    pub(crate) host_port_last: Option<u16>,
    pub(crate) container_port: u16,
    pub(crate) proto: String,
}

/// Publishes host ports (one, or a range) to a container's ports: recorded all at once, then
/// the socket gateway's listening sockets (with a socket uplink; bound first, so a port in use
/// is refused before anything is kept) and every loop's DNAT table.
pub(super) fn publish(d: &Daemon, args: PublishArgs) -> Result<Value> {
    let _guard = lock(&d.changes);
    let proto: PortProto = args.proto.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let first = args.host_port;
    let last = args.host_port_last.unwrap_or(first);
    let target = PublishTarget {
        network: &args.network,
        container: &args.container,
        container_port: args.container_port,
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
    for (host_port, p) in &ports {
        activate(d, proto, *host_port, p);
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
    })
}

/// Puts a published port into every loop's DNAT table, when its container is connected and it
/// is not bound to the host's loopback only.
pub(crate) fn activate(d: &Daemon, proto: PortProto, host_port: u16, p: &Publish) {
    let Some(ip) = p.container_ip else { return };
    if p.host_ip.is_some_and(|a| a.is_loopback()) {
        return;
    }
    let (num, cport) = (proto.number(), p.container_port);
    if d.call_all(move |e| e.pipeline_mut().publish(num, host_port, ip, cport))
        .is_none()
    {
        tracing::warn!("{proto} port {host_port}: the packet loop is not running");
    }
}

/// Takes a published port out of every loop's DNAT table; `removed` when it is gone for good
/// (the socket gateway stops listening too).
pub(crate) fn deactivate(d: &Daemon, proto: PortProto, host_port: u16, removed: bool) {
    if removed && let Some(g) = &d.gateway {
        let _ = g.unpublish(proto, host_port);
    }
    let num = proto.number();
    d.call_all(move |e| e.pipeline_mut().unpublish(num, host_port));
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
