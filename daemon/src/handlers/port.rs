//! `port publish`, `ls` and `rm`: the store, the DNAT table of every loop, and with a socket
//! uplink the host listening socket (bound first, so a port in use is refused before anything
//! is recorded).

use crate::state::{Daemon, lock};
use crate::uplink::gateway_published;
use anyhow::{Context, Result};
use packet::PortProto;
use serde_json::{Value, json};

/// Publishes `host_port` on the uplink address to `container`'s `container_port`.
pub(super) fn publish(
    d: &Daemon,
    network: &str,
    container: &str,
    host_port: u16,
    container_port: u16,
    proto: &str,
) -> Result<Value> {
    let _guard = lock(&d.changes);
    let proto: PortProto = proto.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(g) = &d.gateway {
        g.publish(gateway_published(proto, host_port))
            .with_context(|| format!("listening on host {proto} port {host_port}"))?;
    }
    let p = match d
        .store
        .publish(proto, host_port, network, container, container_port)
    {
        Ok(p) => p,
        Err(e) => {
            if let Some(g) = &d.gateway {
                let _ = g.unpublish(proto, host_port);
            }
            return Err(e.into());
        }
    };
    let (ip, cport, num) = (p.container_ip, p.container_port, proto.number());
    d.call_all(move |e| e.pipeline_mut().publish(num, host_port, ip, cport))
        .context("the packet loop is not running")?;
    Ok(json!({
        "proto": proto.to_string(),
        "host_port": host_port,
        "network": p.network,
        "container": p.container,
        "container_ip": ip,
        "container_port": cport,
    }))
}

/// Every published port.
pub(super) fn ls(d: &Daemon) -> Result<Value> {
    Ok(Value::Array(
        d.store
            .published()?
            .into_iter()
            .map(|(proto, host_port, p)| {
                json!({
                    "proto": proto.to_string(),
                    "host_port": host_port,
                    "network": p.network,
                    "container": p.container,
                    "container_ip": p.container_ip,
                    "container_port": p.container_port,
                })
            })
            .collect(),
    ))
}

/// Unpublishes `host_port`/`proto`.
pub(super) fn rm(d: &Daemon, proto: &str, host_port: u16) -> Result<Value> {
    let _guard = lock(&d.changes);
    let proto: PortProto = proto.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let p = d
        .store
        .unpublish(proto, host_port)?
        .with_context(|| format!("{proto} port {host_port} is not published"))?;
    let num = proto.number();
    if let Some(g) = &d.gateway {
        let _ = g.unpublish(proto, host_port);
    }
    d.call_all(move |e| e.pipeline_mut().unpublish(num, host_port))
        .context("the packet loop is not running")?;
    Ok(json!({ "proto": proto.to_string(), "host_port": host_port, "container": p.container }))
}
