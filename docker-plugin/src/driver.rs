//! The driver: each libnetwork method carried out with vswitch control requests (what they
//! say is worked out in [`crate::translate`]; this module does the I/O). It keeps no state
//! of its own: the vswitch network of Docker network `N` is `dk-<first 12 hex of N>`, the
//! vswitch container of endpoint `E` is `ep-<first 12 hex of E>`, and everything else (the
//! veth peer, the gateway, the published ports) is asked of the daemon, so a restarted plugin
//! carries on where the last one stopped.
//!
//! Addresses come from Docker's IPAM (the default one): Docker hands us the pool, the gateway
//! and each endpoint's address, and vswitch records them as leases.

use crate::api::{self, EndpointInterface, InterfaceName};
use crate::translate::{
    Mapping, addr_of, addr6_of, endpoint_name, mappings, network_create, network_name, published,
};
use control::{CallError, Request};
use serde_json::{Value, json};

/// Where requests go: the daemon's socket, or a fake in the tests.
pub trait Control: Send + Sync {
    /// One request, its result.
    fn call(&self, req: &Request) -> std::result::Result<Value, CallError>;
}

/// The vswitch daemon at a control socket.
pub struct Socket(pub std::path::PathBuf);

impl Control for Socket {
    fn call(&self, req: &Request) -> std::result::Result<Value, CallError> {
        control::call(&self.0, req)
    }
}

/// Why a method failed; Docker shows the text to the user (`Error response from daemon: ...`).
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The body is not the JSON the method takes.
    #[error("{method}: bad request body: {source} (is this Docker's libnetwork remote API?)")]
    BadBody {
        method: String,
        source: serde_json::Error,
    },
    /// The plugin does not implement the method.
    #[error("{0}: not implemented by vswitch-docker-plugin")]
    Unknown(String),
    /// The request cannot be served as asked.
    #[error("{0}")]
    Invalid(String),
    /// The vswitch daemon refused or could not be reached.
    #[error("vswitch: {what}: {source}")]
    Daemon { what: String, source: CallError },
}

pub(crate) type Result<T> = std::result::Result<T, DriverError>;

/// Whether the daemon refused a publish because the host port is taken (by another published
/// port, or a host service the host proxy met).
fn port_taken(e: &DriverError) -> bool {
    matches!(e, DriverError::Daemon { source: CallError::Refused(why), .. }
        if why.contains("already published") || why.contains("cannot listen"))
}

pub(crate) fn invalid(msg: impl Into<String>) -> DriverError {
    DriverError::Invalid(msg.into())
}

/// The driver over a daemon.
pub struct Driver<C> {
    ctl: C,
}

impl<C: Control> Driver<C> {
    pub fn new(ctl: C) -> Driver<C> {
        Driver { ctl }
    }

    fn call(&self, what: String, req: &Request) -> Result<Value> {
        self.ctl
            .call(req)
            .map_err(|source| DriverError::Daemon { what, source })
    }

    /// Serves `method` (the URL path without its slash) with its body; the JSON to answer.
    pub fn handle(&self, method: &str, body: &[u8]) -> Result<Value> {
        // Docker sends an empty body (or `null`) to the methods that take none.
        let trimmed = body.trim_ascii();
        let body: &[u8] = if trimmed.is_empty() || trimmed == b"null" {
            b"{}"
        } else {
            body
        };
        match method {
            "Plugin.Activate" => Ok(json!({ "Implements": ["NetworkDriver"] })),
            "NetworkDriver.GetCapabilities" => {
                Ok(json!({ "Scope": "local", "ConnectivityScope": "local" }))
            }
            "NetworkDriver.CreateNetwork" => self.create_network(&decode(method, body)?),
            "NetworkDriver.DeleteNetwork" => self.delete_network(&decode(method, body)?),
            "NetworkDriver.CreateEndpoint" => self.create_endpoint(&decode(method, body)?),
            "NetworkDriver.DeleteEndpoint" => self.delete_endpoint(&decode(method, body)?),
            "NetworkDriver.EndpointOperInfo" => self.endpoint_info(&decode(method, body)?),
            "NetworkDriver.Join" => self.join(&decode(method, body)?),
            "NetworkDriver.Leave" => {
                // Docker takes the interface out of the container itself; the endpoint (and
                // the veth pair) goes at DeleteEndpoint.
                let _: api::EndpointRequest = decode(method, body)?;
                Ok(json!({}))
            }
            "NetworkDriver.ProgramExternalConnectivity" => {
                self.program_external(&decode(method, body)?)
            }
            "NetworkDriver.RevokeExternalConnectivity" => {
                self.revoke_external(&decode(method, body)?)
            }
            // Node discovery matters to global-scope drivers only.
            "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => {
                let _: Value = decode(method, body)?;
                Ok(json!({}))
            }
            other => Err(DriverError::Unknown(other.to_string())),
        }
    }

    fn create_network(&self, req: &api::CreateNetwork) -> Result<Value> {
        let create = network_create(req)?;
        let Request::NetworkCreate { name, subnet, .. } = &create else {
            return Err(invalid("internal: not a network create"));
        };
        match self.call(format!("creating network {name}"), &create) {
            Ok(_) => Ok(json!({})),
            Err(e) => {
                // Docker may create a network again (after its own restart): one of that name
                // with the same subnet is that network.
                let same = self
                    .ctl
                    .call(&Request::NetworkInspect {
                        names: vec![name.clone()],
                    })
                    .ok()
                    .and_then(|v| {
                        v.pointer("/0/IPAM/Config/0/Subnet")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .is_some_and(|s| subnet.is_some_and(|n| s == n.to_string()));
                if same { Ok(json!({})) } else { Err(e) }
            }
        }
    }

    fn delete_network(&self, req: &api::DeleteNetwork) -> Result<Value> {
        let name = network_name(&req.network_id)?;
        match self.call(
            format!("removing network {name}"),
            &Request::NetworkRm { name: name.clone() },
        ) {
            Ok(_) => Ok(json!({})),
            Err(e) => {
                // Gone already (a retry, or removed by hand): done. Only the daemon's own
                // "no such network" says so; an unreachable daemon is an error.
                let gone = matches!(
                    self.ctl.call(&Request::NetworkInspect { names: vec![name] }),
                    Err(CallError::Refused(why)) if why.contains("no such network")
                );
                if gone { Ok(json!({})) } else { Err(e) }
            }
        }
    }

    fn create_endpoint(&self, req: &api::CreateEndpoint) -> Result<Value> {
        let network = network_name(&req.network_id)?;
        let name = endpoint_name(&req.endpoint_id)?;
        let iface = req.interface.clone().unwrap_or_default();
        let ip = match iface.address.as_str() {
            "" => None,
            a => Some(addr_of("endpoint address", a)?),
        };
        // On a dual-stack network Docker's IPAM names the IPv6 address too (an IPv4-only
        // vswitch network refuses one, with the daemon's error).
        let ip6 = match iface.address_ipv6.as_str() {
            "" => None,
            a => Some(addr6_of("endpoint IPv6 address", a)?),
        };
        let mac = Some(iface.mac_address.clone()).filter(|m| !m.is_empty());
        let c = self.call(
            format!("connecting {name} to {network}"),
            &Request::Connect {
                network,
                netns: None,
                name: Some(name.clone()),
                ifname: None,
                ip,
                ip6,
                mac: mac.clone(),
                // Docker moves the peer into the container and configures it at Join.
                peer_in_host: true,
            },
        )?;
        // Only what Docker left empty may be answered (it refuses a changed address).
        let answer = || -> Result<EndpointInterface> {
            let mut answer = EndpointInterface::default();
            if mac.is_none() {
                answer.mac_address = str_field(&c, "mac")?;
            }
            if ip.is_none() {
                let prefix = c.get("prefix_len").and_then(Value::as_u64).unwrap_or(32);
                answer.address = format!("{}/{prefix}", str_field(&c, "ip")?);
            }
            if ip6.is_none()
                && let Some(ip6) = c.get("ip6").and_then(Value::as_str)
            {
                let prefix = c.get("prefix_len6").and_then(Value::as_u64).unwrap_or(128);
                answer.address_ipv6 = format!("{ip6}/{prefix}");
            }
            Ok(answer)
        };
        match answer() {
            Ok(answer) => Ok(json!({ "Interface": answer })),
            Err(e) => {
                // Docker sends no DeleteEndpoint after a failed create: undo the attach here.
                let _ = self.ctl.call(&Request::Disconnect {
                    network: network_name(&req.network_id)?,
                    name,
                    unpublish: true,
                    missing_ok: true,
                    netns: None,
                });
                Err(e)
            }
        }
    }

    fn delete_endpoint(&self, req: &api::EndpointRequest) -> Result<Value> {
        let network = network_name(&req.network_id)?;
        let name = endpoint_name(&req.endpoint_id)?;
        // The endpoint's published ports go with it; a second delete is a success.
        self.call(
            format!("disconnecting {name} from {network}"),
            &Request::Disconnect {
                network,
                name,
                unpublish: true,
                missing_ok: true,
                netns: None,
            },
        )?;
        Ok(json!({}))
    }

    /// The endpoint as the daemon has it.
    fn endpoint(&self, req: &api::EndpointRequest) -> Result<Value> {
        let network = network_name(&req.network_id)?;
        let name = endpoint_name(&req.endpoint_id)?;
        self.call(
            format!("looking up endpoint {name} on {network}"),
            &Request::ContainerCheck { network, name },
        )
    }

    fn endpoint_info(&self, req: &api::EndpointRequest) -> Result<Value> {
        // Informational only (`docker inspect` shows it): an endpoint the daemon cannot check
        // must not make Docker's inspect fail.
        let c = match self.endpoint(req) {
            Ok(c) => c,
            Err(DriverError::Daemon { what, source }) => {
                tracing::warn!("{what}: {source}");
                return Ok(json!({ "Value": {} }));
            }
            Err(e) => return Err(e),
        };
        let mut value = serde_json::Map::new();
        for key in ["port", "ip", "mac", "peer"] {
            if let Some(v) = c.get(key).filter(|v| !v.is_null()) {
                value.insert(format!("vswitch.{key}"), v.clone());
            }
        }
        Ok(json!({ "Value": value }))
    }

    fn join(&self, req: &api::EndpointRequest) -> Result<Value> {
        let c = self.endpoint(req)?;
        // The daemon names the peer it left for Docker (after its own restart too).
        let iface = InterfaceName {
            src_name: str_field(&c, "peer")?,
            dst_prefix: "eth".into(),
        };
        let mut answer = json!({ "InterfaceName": iface });
        // None on an internal network: the container gets no default route.
        if let Some(gw) = c.get("gateway").and_then(Value::as_str) {
            answer["Gateway"] = json!(gw);
        }
        if let Some(gw6) = c.get("gateway6").and_then(Value::as_str) {
            answer["GatewayIPv6"] = json!(gw6);
        }
        Ok(answer)
    }

    fn program_external(&self, req: &api::EndpointRequest) -> Result<Value> {
        let network = network_name(&req.network_id)?;
        let name = endpoint_name(&req.endpoint_id)?;
        let wanted = mappings(&req.options.clone().unwrap_or_default())?;
        if wanted.is_empty() {
            return Ok(json!({}));
        }
        // Docker may program an endpoint again: ports already published to it stay.
        let existing = published(&self.call("listing published ports".into(), &Request::PortLs)?);
        let mut done: Vec<(&'static str, u16)> = Vec::new();
        for m in &wanted {
            let mine = existing.iter().any(|p| {
                p.container == name
                    && p.network == network
                    && p.proto == m.proto
                    && p.container_port == m.container_port
                    && m.host_ports.contains(&p.host_port)
            });
            if mine {
                continue;
            }
            match self.publish_one(&network, &name, m) {
                Ok(port) => done.push((m.proto, port)),
                Err(e) => {
                    // All or nothing: Docker fails the container's start.
                    for (proto, host_port) in done {
                        let _ = self.ctl.call(&Request::PortRm {
                            proto: proto.into(),
                            host_port,
                            host_port_last: None,
                        });
                    }
                    return Err(e);
                }
            }
        }
        Ok(json!({}))
    }

    /// Publishes the first free host port of `m`'s range; which one.
    fn publish_one(&self, network: &str, name: &str, m: &Mapping) -> Result<u16> {
        let mut last_err = None;
        for host_port in m.host_ports.clone() {
            let req = Request::PortPublish {
                network: network.into(),
                container: name.into(),
                host_ip: m.host_ip,
                host_port,
                host_port_last: None,
                container_port: m.container_port,
                proto: m.proto.into(),
                // Docker leaves a remote driver's ports to it: nothing else holds them.
                host_proxy: true,
            };
            match self.call(format!("publishing {} port {host_port}", m.proto), &req) {
                Ok(_) => return Ok(host_port),
                // Taken (published already, or a host service has it): the range's next one.
                Err(e) if port_taken(&e) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| invalid("empty host port range")))
    }

    fn revoke_external(&self, req: &api::EndpointRequest) -> Result<Value> {
        let network = network_name(&req.network_id)?;
        let name = endpoint_name(&req.endpoint_id)?;
        let rows = published(&self.call("listing published ports".into(), &Request::PortLs)?);
        let mut failure = None;
        for p in rows
            .into_iter()
            .filter(|p| p.container == name && p.network == network)
        {
            let req = Request::PortRm {
                proto: p.proto.clone(),
                host_port: p.host_port,
                host_port_last: None,
            };
            if let Err(e) = self.call(
                format!("unpublishing {} port {}", p.proto, p.host_port),
                &req,
            ) {
                failure = Some(e);
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(json!({})),
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(method: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|source| DriverError::BadBody {
        method: method.to_string(),
        source,
    })
}

fn str_field(v: &Value, key: &str) -> Result<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| invalid(format!("the vswitch daemon's answer has no {key}: {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::tests::portmap;
    use std::sync::Mutex;

    const NID: &str = "2b90aec0fa142d0a0a7b001f6e79ea533e5e343513852e2b54a40fa3d7f53983";
    const EID: &str = "312eb383c0f58c21cfd718d6f76c4aa9f95409153290768dec119f072ad7c445";

    /// The fake daemon's answer to a request (as its JSON): a result or a refusal.
    type Answer = dyn Fn(&Value) -> std::result::Result<Value, String> + Send + Sync;

    /// A daemon that records each request (as its JSON) and answers with `answer`.
    struct Fake {
        sent: Mutex<Vec<Value>>,
        answer: Box<Answer>,
    }

    impl Fake {
        fn new(
            answer: impl Fn(&Value) -> std::result::Result<Value, String> + Send + Sync + 'static,
        ) -> Driver<Fake> {
            Driver::new(Fake {
                sent: Mutex::new(Vec::new()),
                answer: Box::new(answer),
            })
        }
    }

    impl Control for Fake {
        fn call(&self, req: &Request) -> std::result::Result<Value, CallError> {
            let v = serde_json::to_value(req).map_err(CallError::BadAnswer)?;
            self.sent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(v.clone());
            (self.answer)(&v).map_err(CallError::Refused)
        }
    }

    fn sent(d: &Driver<Fake>) -> Vec<Value> {
        d.ctl.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn body(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    #[test]
    fn create_network_takes_docker_pool_gateway_and_options() {
        let d = Fake::new(|_| Ok(json!({})));
        let b = body(json!({
            "NetworkID": NID,
            "Options": {
                "com.docker.network.enable_ipv6": false,
                "com.docker.network.internal": true,
                "com.docker.network.generic": {
                    "com.docker.network.driver.mtu": "1400",
                    "com.docker.network.bridge.enable_icc": "false"
                }
            },
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.77.0.0/24", "Gateway": "10.77.0.1/24"}],
            "IPv6Data": []
        }));
        assert_eq!(
            d.handle("NetworkDriver.CreateNetwork", &b)
                .expect("created"),
            json!({})
        );
        let req = &sent(&d)[0];
        assert_eq!(req["cmd"], "network_create");
        assert_eq!(req["name"], "dk-2b90aec0fa14");
        assert_eq!(req["subnet"], "10.77.0.0/24");
        assert_eq!(req["gateway"], "10.77.0.1");
        assert_eq!(req["internal"], true);
        assert_eq!(req["icc"], false);
        assert_eq!(req["mtu"], 1400);
        assert_eq!(req["labels"]["docker.network_id"], NID);
    }

    #[test]
    fn an_ipv6_network_becomes_a_dual_stack_vswitch_network() {
        let d = Fake::new(|_| Ok(json!({})));
        let b = body(json!({
            "NetworkID": NID,
            "Options": {"com.docker.network.enable_ipv6": true},
            "IPv4Data": [{"Pool": "10.77.0.0/24", "Gateway": "10.77.0.1/24"}],
            "IPv6Data": [{"Pool": "fd00:77::/64", "Gateway": "fd00:77::1/64"}],
        }));
        assert_eq!(
            d.handle("NetworkDriver.CreateNetwork", &b).unwrap(),
            json!({})
        );
        let req = &sent(&d)[0];
        assert_eq!(req["ipv6"], true);
        assert_eq!(req["subnet6"], "fd00:77::/64");
        assert_eq!(req["gateway6"], "fd00:77::1");
        let two = body(json!({
            "NetworkID": NID,
            "IPv4Data": [{"Pool": "10.77.0.0/24"}],
            "IPv6Data": [{"Pool": "fd00:77::/64"}, {"Pool": "fd00:78::/64"}],
        }));
        let e = d.handle("NetworkDriver.CreateNetwork", &two).unwrap_err();
        assert!(e.to_string().contains("one IPv6 prefix"), "{e}");
    }

    #[test]
    fn create_network_refuses_what_vswitch_cannot_do() {
        let d = Fake::new(|_| Ok(json!({})));
        let pool = json!([{"Pool": "10.77.0.0/24", "Gateway": "10.77.0.1/24"}]);
        for (options, v4, why) in [
            (json!({}), json!([]), "no IPv4 pool"),
            (
                json!({}),
                json!([{"Pool": "10.1.0.0/24"}, {"Pool": "10.2.0.0/24"}]),
                "one IPv4 subnet",
            ),
            (
                json!({"com.docker.network.generic": {"com.docker.network.bridge.name": "br0"}}),
                pool.clone(),
                "unknown option",
            ),
            (
                json!({"com.docker.network.generic": {"com.docker.network.driver.mtu": "big"}}),
                pool.clone(),
                "give an MTU",
            ),
        ] {
            let b = body(json!({"NetworkID": NID, "Options": options, "IPv4Data": v4}));
            let e = d
                .handle("NetworkDriver.CreateNetwork", &b)
                .expect_err("refused");
            assert!(e.to_string().contains(why), "{e} lacks {why:?}");
        }
        assert!(sent(&d).is_empty(), "nothing reached the daemon");
    }

    #[test]
    fn bad_bodies_and_ids_answer_errors() {
        let d = Fake::new(|_| Ok(json!({})));
        for (method, b) in [
            ("NetworkDriver.CreateNetwork", &b"{not json"[..]),
            ("NetworkDriver.CreateEndpoint", b"[1,2]"),
            ("NetworkDriver.Join", b"{\"NetworkID\": 5}"),
            ("NetworkDriver.Join", b"\xff\xfe"),
            ("NetworkDriver.DeleteNetwork", b"{\"NetworkID\": \"zz\"}"),
            ("NetworkDriver.DeleteEndpoint", b"{}"),
            (
                "NetworkDriver.ProgramExternalConnectivity",
                b"{\"NetworkID\":\"2b90aec0fa142d0a\",\"EndpointID\":\"312eb383c0f58c21\",\"Options\":{\"com.docker.network.portmap\":\"eighty\"}}",
            ),
        ] {
            let e = d.handle(method, b).expect_err("refused");
            assert!(
                matches!(e, DriverError::BadBody { .. } | DriverError::Invalid(_)),
                "{method}: {e:?}"
            );
        }
        assert!(matches!(
            d.handle("NetworkDriver.Frobnicate", b"{}"),
            Err(DriverError::Unknown(_))
        ));
        // Methods without a body take an empty one.
        assert_eq!(
            d.handle("Plugin.Activate", b"").expect("activate"),
            json!({"Implements": ["NetworkDriver"]})
        );
        assert_eq!(
            d.handle("NetworkDriver.GetCapabilities", b"null")
                .expect("caps")["Scope"],
            "local"
        );
        assert!(sent(&d).is_empty());
    }

    #[test]
    fn endpoint_connects_with_docker_address_and_answers_only_the_mac() {
        let d = Fake::new(|req| {
            assert_eq!(req["cmd"], "connect");
            Ok(
                json!({"name": req["name"], "ip": "10.77.0.2", "mac": "02:42:0a:4d:00:02",
                      "prefix_len": 24, "port": "vsw0", "peer": "vsw0p", "gateway": "10.77.0.1"}),
            )
        });
        let b = body(json!({
            "NetworkID": NID, "EndpointID": EID,
            "Interface": {"Address": "10.77.0.2/24", "AddressIPv6": "", "MacAddress": ""},
            "Options": {"com.docker.network.portmap": []}
        }));
        let answer = d
            .handle("NetworkDriver.CreateEndpoint", &b)
            .expect("created");
        assert_eq!(
            answer,
            json!({"Interface": {"MacAddress": "02:42:0a:4d:00:02"}})
        );
        let req = &sent(&d)[0];
        assert_eq!(req["network"], "dk-2b90aec0fa14");
        assert_eq!(req["name"], "ep-312eb383c0f5");
        assert_eq!(req["ip"], "10.77.0.2");
        assert_eq!(req["peer_in_host"], true);
        assert_eq!(req["netns"], Value::Null);

        // A MAC Docker chose is passed on and not answered back.
        let b = body(json!({"NetworkID": NID, "EndpointID": EID,
            "Interface": {"Address": "10.77.0.2/24", "MacAddress": "02:00:00:00:00:09"}}));
        let answer = d
            .handle("NetworkDriver.CreateEndpoint", &b)
            .expect("created");
        assert_eq!(answer, json!({"Interface": {}}));
        assert_eq!(sent(&d)[1]["mac"], "02:00:00:00:00:09");
    }

    #[test]
    fn join_moves_the_peer_and_names_the_gateway() {
        let d = Fake::new(|req| {
            assert_eq!(req["cmd"], "container_check");
            Ok(json!({"port": "vsw3", "peer": "vsw3p", "gateway": null}))
        });
        let b = body(json!({"NetworkID": NID, "EndpointID": EID, "SandboxKey": "/x"}));
        // No gateway (internal): none answered.
        assert_eq!(
            d.handle("NetworkDriver.Join", &b).expect("joined"),
            json!({"InterfaceName": {"SrcName": "vsw3p", "DstPrefix": "eth"}})
        );
        // An endpoint without a peer left for Docker cannot be joined.
        let d = Fake::new(|_| Ok(json!({"port": "vsw3", "peer": null})));
        assert!(d.handle("NetworkDriver.Join", &b).is_err());
        let d = Fake::new(|_| Ok(json!({"port": "vsw3", "peer": "vsw3p", "gateway": "10.77.0.1"})));
        assert_eq!(
            d.handle("NetworkDriver.Join", &b).expect("joined")["Gateway"],
            "10.77.0.1"
        );
        // A dual-stack endpoint gets its IPv6 default gateway too.
        let d = Fake::new(|_| {
            Ok(
                json!({"port": "vsw3", "peer": "vsw3p", "gateway": "10.77.0.1", "gateway6": "fd00:77::1"}),
            )
        });
        let joined = d.handle("NetworkDriver.Join", &b).expect("joined");
        assert_eq!(joined["GatewayIPv6"], "fd00:77::1");
    }

    #[test]
    fn a_dual_stack_endpoint_passes_docker_s_ipv6_address_or_answers_the_daemon_s() {
        let d = Fake::new(|req| {
            Ok(json!({
                "ip": "10.77.0.2", "prefix_len": 24, "mac": "02:42:0a:4d:00:02",
                "ip6": req["ip6"].as_str().unwrap_or("fd00:77::5"), "prefix_len6": 64
            }))
        });
        let given = body(json!({
            "NetworkID": NID, "EndpointID": EID,
            "Interface": {"Address": "10.77.0.2/24", "AddressIPv6": "fd00:77::2/64"}
        }));
        let answer = d.handle("NetworkDriver.CreateEndpoint", &given).unwrap();
        assert_eq!(sent(&d)[0]["ip6"], "fd00:77::2");
        assert!(answer["Interface"].get("AddressIPv6").is_none(), "{answer}");
        let left_empty = body(json!({"NetworkID": NID, "EndpointID": EID, "Interface": {}}));
        let answer = d
            .handle("NetworkDriver.CreateEndpoint", &left_empty)
            .unwrap();
        assert_eq!(answer["Interface"]["AddressIPv6"], "fd00:77::5/64");
    }

    #[test]
    fn endpoint_info_reports_the_port_and_survives_a_daemon_refusal() {
        let b = body(json!({"NetworkID": NID, "EndpointID": EID}));
        let d = Fake::new(|_| Ok(json!({"port": "vsw3", "ip": "10.77.0.2", "peer": null})));
        assert_eq!(
            d.handle("NetworkDriver.EndpointOperInfo", &b)
                .expect("info"),
            json!({"Value": {"vswitch.port": "vsw3", "vswitch.ip": "10.77.0.2"}})
        );
        let d = Fake::new(|_| Err("no container named ep-312eb383c0f5".into()));
        assert_eq!(
            d.handle("NetworkDriver.EndpointOperInfo", &b)
                .expect("info"),
            json!({"Value": {}})
        );
    }

    #[test]
    fn delete_endpoint_is_idempotent_and_drops_ports() {
        let d = Fake::new(|_| Ok(Value::Null));
        let b = body(json!({"NetworkID": NID, "EndpointID": EID}));
        d.handle("NetworkDriver.DeleteEndpoint", &b)
            .expect("deleted");
        let req = &sent(&d)[0];
        assert_eq!(req["cmd"], "disconnect");
        assert_eq!(req["unpublish"], true);
        assert_eq!(req["missing_ok"], true);
    }

    #[test]
    fn a_create_endpoint_whose_answer_is_unusable_is_undone() {
        let d = Fake::new(|req| match req["cmd"].as_str() {
            Some("connect") => Ok(json!({"name": req["name"]})),
            _ => Ok(Value::Null),
        });
        let b = body(json!({"NetworkID": NID, "EndpointID": EID, "Interface": {}}));
        assert!(d.handle("NetworkDriver.CreateEndpoint", &b).is_err());
        let undo = &sent(&d)[1];
        assert_eq!(undo["cmd"], "disconnect");
        assert_eq!(undo["name"], "ep-312eb383c0f5");
    }

    #[test]
    fn delete_network_of_an_unreachable_daemon_fails() {
        let d = Driver::new(Socket("/nonexistent/vswitch.sock".into()));
        let b = body(json!({"NetworkID": NID}));
        assert!(d.handle("NetworkDriver.DeleteNetwork", &b).is_err());
    }

    #[test]
    fn delete_network_of_a_gone_network_succeeds() {
        let d = Fake::new(|req| match req["cmd"].as_str() {
            Some("network_rm") => Err("no network".into()),
            _ => Err("no such network: dk-2b90aec0fa14".into()),
        });
        let b = body(json!({"NetworkID": NID}));
        d.handle("NetworkDriver.DeleteNetwork", &b)
            .expect("gone is fine");
        // One that exists but cannot go (containers left): the daemon's reason.
        let d = Fake::new(|req| match req["cmd"].as_str() {
            Some("network_rm") => Err("network has containers".into()),
            _ => Ok(json!([{}])),
        });
        let e = d
            .handle("NetworkDriver.DeleteNetwork", &b)
            .expect_err("refused");
        assert!(e.to_string().contains("has containers"), "{e}");
    }

    #[test]
    fn program_publishes_each_port_and_picks_a_free_one_of_a_range() {
        let d = Fake::new(|req| match req["cmd"].as_str() {
            Some("port_ls") => Ok(json!([])),
            // 5300 is taken: the next of the range is used.
            Some("port_publish") if req["host_port"] == 5300 => {
                Err("udp host port 5300 is already published to \"x\"".into())
            }
            _ => Ok(json!({})),
        });
        let b = body(json!({"NetworkID": NID, "EndpointID": EID, "Options": portmap()}));
        d.handle("NetworkDriver.ProgramExternalConnectivity", &b)
            .expect("programmed");
        let publishes: Vec<(Value, Value, Value)> = sent(&d)
            .iter()
            .filter(|r| r["cmd"] == "port_publish")
            .map(|r| {
                (
                    r["proto"].clone(),
                    r["host_ip"].clone(),
                    r["host_port"].clone(),
                )
            })
            .collect();
        assert_eq!(
            publishes,
            vec![
                (json!("tcp"), json!("127.0.0.1"), json!(8081)),
                (json!("tcp"), Value::Null, json!(8080)),
                (json!("udp"), Value::Null, json!(5300)),
                (json!("udp"), Value::Null, json!(5301)),
            ]
        );
        let first = sent(&d)
            .into_iter()
            .find(|r| r["cmd"] == "port_publish")
            .expect("a publish");
        assert_eq!(first["network"], "dk-2b90aec0fa14");
        assert_eq!(first["container"], "ep-312eb383c0f5");
        assert_eq!(first["container_port"], 80);
    }

    #[test]
    fn a_range_stops_at_a_refusal_that_is_not_a_taken_port() {
        let d = Fake::new(|req| match req["cmd"].as_str() {
            Some("port_ls") => Ok(json!([])),
            Some("port_publish") => Err("no container named \"ep-312eb383c0f5\"".into()),
            _ => Ok(json!({})),
        });
        let b = body(json!({"NetworkID": NID, "EndpointID": EID, "Options": portmap()}));
        assert!(
            d.handle("NetworkDriver.ProgramExternalConnectivity", &b)
                .is_err()
        );
        let tries = sent(&d)
            .iter()
            .filter(|r| r["cmd"] == "port_publish")
            .count();
        assert_eq!(tries, 1, "one refusal ends it: {:?}", sent(&d));
    }

    #[test]
    fn program_rolls_back_on_failure() {
        let d = Fake::new(|req| match req["cmd"].as_str() {
            Some("port_ls") => Ok(json!([])),
            Some("port_publish") if req["proto"] == "udp" => Err("udp port in use".into()),
            _ => Ok(json!({})),
        });
        let b = body(json!({"NetworkID": NID, "EndpointID": EID, "Options": portmap()}));
        let e = d
            .handle("NetworkDriver.ProgramExternalConnectivity", &b)
            .expect_err("failed");
        assert!(e.to_string().contains("in use"), "{e}");
        let removed: Vec<Value> = sent(&d)
            .iter()
            .filter(|r| r["cmd"] == "port_rm")
            .map(|r| r["host_port"].clone())
            .collect();
        assert_eq!(removed, vec![json!(8081), json!(8080)]);
    }

    #[test]
    fn revoke_removes_only_this_endpoints_ports() {
        let d = Fake::new(|req| match req["cmd"].as_str() {
            Some("port_ls") => Ok(json!([
                {"proto": "tcp", "host_port": 8080, "network": "dk-2b90aec0fa14", "container": "ep-312eb383c0f5", "container_port": 80},
                {"proto": "tcp", "host_port": 9090, "network": "dk-2b90aec0fa14", "container": "ep-000000000000", "container_port": 80},
                {"proto": "udp", "host_port": 5301, "network": "dk-2b90aec0fa14", "container": "ep-312eb383c0f5", "container_port": 53}
            ])),
            _ => Ok(json!({})),
        });
        let b = body(json!({"NetworkID": NID, "EndpointID": EID}));
        d.handle("NetworkDriver.RevokeExternalConnectivity", &b)
            .expect("revoked");
        let removed: Vec<(Value, Value)> = sent(&d)
            .iter()
            .filter(|r| r["cmd"] == "port_rm")
            .map(|r| (r["proto"].clone(), r["host_port"].clone()))
            .collect();
        assert_eq!(
            removed,
            vec![(json!("tcp"), json!(8080)), (json!("udp"), json!(5301))]
        );
    }
}
