//! One module per resource the control protocol names: what each request does to the store and
//! the packet loops. [`run`] only dispatches.

pub(crate) mod capture;
mod container;
mod host_port;
mod lifecycle;
mod network;
mod port;
mod status;
pub(crate) mod usage;

pub(crate) use container::reattach;
pub(crate) use host_port::{ensure as ensure_host_port, ensure_all as ensure_host_ports};
pub(crate) use lifecycle::start as watch_containers;
pub(crate) use network::{
    add_to_loops as add_network_to_loops, rm_held as remove_network_held, uplink_promiscuous,
};
pub(crate) use port::{activate_all as activate_published, dnat_on_uplink};

use crate::state::Daemon;
use anyhow::{Context, Result};
use control::Request;
use std::sync::atomic::Ordering;

/// Carries out one request; the value is the response's `result`.
pub(crate) fn run(d: &Daemon, req: Request) -> Result<serde_json::Value> {
    Ok(match req {
        Request::Status => status::status(d)?,
        Request::Stats => status::stats(d)?,
        Request::Fdb => status::fdb(d)?,
        Request::Overlay => status::overlay(d)?,
        Request::Conntrack => status::conntrack(d)?,
        Request::ConntrackFlush => status::conntrack_flush(d)?,
        Request::Connect {
            network,
            netns,
            name,
            ifname,
            ip,
            ip6,
            mac,
            peer_in_host,
        } => {
            let args = container::ConnectArgs {
                network,
                netns,
                name,
                ifname,
                ip,
                ip6,
                mac,
                peer_in_host,
                default_route: true,
            };
            serde_json::to_value(container::connect(d, args)?)?
        }
        Request::Disconnect {
            network,
            name,
            unpublish,
            missing_ok,
            netns,
        } => serde_json::to_value(container::disconnect(
            d,
            &network,
            &name,
            container::DisconnectIf {
                unpublish,
                missing_ok,
                netns,
            },
        )?)?,
        Request::ContainerCheck { network, name } => {
            serde_json::to_value(container::check(d, &network, &name)?)?
        }
        Request::NetworkCreate {
            name,
            subnet,
            gateway,
            ip_range,
            internal,
            icc,
            anti_spoofing,
            mtu,
            labels,
            ipv6,
            subnet6,
            gateway6,
            driver,
            vlan,
            macvlan_mode,
            aux_addresses,
        } => {
            let kind = network::Kind::of(driver.as_deref(), vlan, macvlan_mode.as_deref())?;
            let mut spec = ipam::NetworkSpec::new(name);
            spec.ipv6 =
                (ipv6 || subnet6.is_some() || gateway6.is_some()).then_some(ipam::Ipv6Spec {
                    subnet: subnet6,
                    gateway: gateway6,
                });
            spec.subnet = subnet;
            spec.gateway = gateway;
            spec.ip_range = ip_range;
            spec.internal = internal;
            spec.icc = icc;
            spec.anti_spoofing = anti_spoofing;
            spec.mtu = mtu;
            spec.labels = labels;
            spec.aux_addresses = aux_addresses;
            serde_json::to_value(network::create(d, spec, kind)?)?
        }
        Request::NetworkLs => network::ls(d)?,
        Request::NetworkInspect { names } => serde_json::to_value(network::inspect(d, &names)?)?,
        Request::NetworkRm { name } => network::rm(d, &name)?,
        Request::PortPublish {
            network,
            container,
            host_ip,
            host_port,
            host_port_last,
            container_port,
            proto,
            host_proxy,
        } => port::publish(
            d,
            port::PublishArgs {
                network,
                container,
                host_ip,
                host_port,
                host_port_last,
                container_port,
                proto,
                host_proxy,
            },
        )?,
        Request::PortLs => port::ls(d)?,
        Request::PortRm {
            proto,
            host_port,
            host_port_last,
        } => port::rm(d, &proto, host_port, host_port_last)?,
        Request::Capture { .. } | Request::Events => {
            anyhow::bail!("this request streams: the control server serves it on its connection")
        }
        Request::FaultInject { action, worker } => {
            if !d.fault_injection {
                anyhow::bail!(
                    "fault injection is off: it is for tests (vswitch daemon --fault-injection)"
                );
            }
            match action.as_str() {
                "panic_loop" => {
                    let e = d.engines.get(worker).with_context(|| {
                        format!("no packet loop {worker}: there are {}", d.engines.len())
                    })?;
                    let _ = e.call(|_| -> () { panic!("fault injection: panic_loop") });
                }
                other => anyhow::bail!("unknown fault {other:?}: give panic_loop"),
            }
            serde_json::json!({})
        }
        Request::Shutdown => {
            d.shutdown.store(true, Ordering::Relaxed);
            serde_json::json!({})
        }
        Request::Upgrade => {
            if d.rootless.is_some() {
                anyhow::bail!(
                    "upgrade keeps connections of a rootful daemon only: a rootless one's \
                     container TAPs and host sockets close with it (use shutdown)"
                );
            }
            d.keep_state.store(true, Ordering::Relaxed);
            d.shutdown.store(true, Ordering::Relaxed);
            serde_json::json!({ "state": d.state_dir.join(crate::keep_state::FILE) })
        }
    })
}
