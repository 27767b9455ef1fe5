//! `vswitch`: the command-line entry point. Parses arguments with clap and hands off to the
//! library crates; the only crate that uses `anyhow`.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod capture;
mod events;
mod lan;
mod mapping;
mod table;
mod top;

use control::Request;
use std::net::Ipv4Addr;

/// Default control socket, next to the daemon's default state directory.
const DEFAULT_SOCKET: &str = "/run/vswitch/vswitch.sock";

#[derive(Parser)]
#[command(
    name = "vswitch",
    version,
    about = "Userspace virtual switch and NAT engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay pcap captures through the pipeline: one capture per egress port out, plus summary.json.
    Replay(ReplayArgs),
    /// Run the switch on real ports (TAP, AF_PACKET) in the foreground.
    Daemon(DaemonArgs),
    /// Daemon status: networks, containers, packet loop.
    Status(ClientArgs),
    /// Per-port counters and drops by reason.
    Stats(ClientArgs),
    /// Live view: networks, ports, containers and their top flows by rate, conntrack fill,
    /// drops by reason (q quits; s/Tab sorts; r reverses). `--once` prints one frame.
    Top(TopArgs),
    /// Forwarding database.
    Fdb {
        #[command(subcommand)]
        action: FdbAction,
    },
    /// Overlay networks' remote side: each network's VTEP flood list and the MACs known to be
    /// behind other hosts (from the cluster store, or learned from their VXLAN).
    Overlay(ClientArgs),
    /// Connection tracking table.
    Conntrack {
        #[command(subcommand)]
        action: ConntrackAction,
    },
    /// Attach and detach containers.
    Network {
        #[command(subcommand)]
        action: NetworkAction,
    },
    /// Published ports (DNAT from the uplink address to containers).
    Port {
        #[command(subcommand)]
        action: PortAction,
    },
    /// Live capture from the packet loops: a port, a container or a network, both ways (frames
    /// the switch sends are after NAT). `-w FILE` writes pcapng for tcpdump and Wireshark.
    Capture(capture::CaptureArgs),
    /// Stream events as they happen: conntrack (new, assured, destroyed with counts),
    /// containers attached and detached, ports up and down, limits hit.
    Events(events::EventsArgs),
    /// Ask the daemon to stop (it removes the links it created).
    Shutdown(ClientArgs),
    /// Ask the daemon to stop for an upgrade: as SIGTERM with --keep-state, it keeps the links
    /// and writes its connections to the state directory for the next start to restore.
    Upgrade(ClientArgs),
    /// Print the version.
    Version,
    /// Print a shell completion script: `vswitch completions bash > /etc/bash_completion.d/vswitch`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Throughput figures, side by side with the kernel: runs `vswitch-bench` (built beside
    /// vswitch: `cargo build --release -p vswitch-bench`) with these arguments.
    #[command(disable_help_flag = true)]
    Bench {
        /// pipeline | veth | rootless, and their options (`vswitch bench pipeline --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Args)]
struct DaemonArgs {
    /// Topology file (TOML); with --rootless it may be left out for the embedded one (a socket
    /// uplink, the default `bridge` network).
    #[arg(long, required_unless_present = "rootless")]
    config: Option<PathBuf>,
    /// Directory for the daemon's state and socket (default /run/vswitch; rootless:
    /// $XDG_STATE_HOME/vswitch).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Control socket path (default: STATE_DIR/vswitch.sock; rootless:
    /// $XDG_RUNTIME_DIR/vswitch/vswitch.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Packet-loop threads (default: one per core; rootless: 1).
    #[arg(long)]
    workers: Option<usize>,
    /// Run as an unprivileged user: in a user + network namespace of vswitch's own, with an
    /// uplink of host sockets and containers attached by `network connect --pid PID`.
    #[arg(long)]
    rootless: bool,
    /// Serve Prometheus metrics (the OpenMetrics text format) at http://ADDR/metrics, e.g.
    /// 127.0.0.1:9469; off by default.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Serve fault-injection requests (for tests).
    #[arg(long, hide = true)]
    fault_injection: bool,
    /// On SIGTERM/SIGINT, keep the containers' links and leases and write the connection
    /// tracking table, NAT mappings and FDB to STATE_DIR/keep-state.json; the next start
    /// (possibly of a newer binary) restores them, so connections survive the restart.
    #[arg(long)]
    keep_state: bool,
    /// Join a cluster of vswitch hosts for overlay networks: its etcd endpoints, comma
    /// separated (etcd://10.0.0.1:2379,etcd://10.0.0.2:2379). The uplink address is this
    /// host's VTEP.
    #[arg(long, value_name = "ETCD_URLS")]
    cluster: Option<String>,
    /// This host's name in the cluster (default: the kernel's host name); unique per host.
    #[arg(long, value_name = "NAME", requires = "cluster")]
    cluster_host: Option<String>,
    /// Seconds this host's endpoints outlive it in the cluster (its etcd lease's TTL).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10,
        requires = "cluster"
    )]
    cluster_ttl: u64,
}

#[derive(Args, Clone)]
struct ClientArgs {
    /// Control socket of the daemon.
    #[arg(long, global = true, default_value_os_t = default_socket(), env = "VSWITCH_SOCKET")]
    socket: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Args)]
struct TopArgs {
    /// Seconds between refreshes (and between the two samples of --once); fractions allowed.
    #[arg(long, default_value = "1", value_parser = top::parse_interval, value_name = "SECS")]
    interval: std::time::Duration,
    /// Print one plain-text frame (rates over --interval) and exit: for scripts.
    #[arg(long)]
    once: bool,
    /// Order rows by bits, packets, drops or name (per second, largest first).
    #[arg(long, default_value = "bits", value_parser = top::sort_key, value_name = "KEY")]
    sort: top::model::SortKey,
    /// Smallest (or last name) first.
    #[arg(long)]
    reverse: bool,
    /// With --once: how many flows to print.
    #[arg(long, default_value_t = 10, value_name = "N")]
    flows: usize,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand)]
enum FdbAction {
    /// List learned MACs.
    Show(ClientArgs),
}

#[derive(Subcommand)]
enum ConntrackAction {
    /// List tracked connections (like conntrack -L).
    Ls {
        #[command(flatten)]
        client: ClientArgs,
        /// Only this protocol (tcp, udp, icmp).
        #[arg(short = 'p', long)]
        proto: Option<String>,
        /// Only entries whose original source is this address (conntrack -L --src).
        #[arg(long)]
        src: Option<std::net::IpAddr>,
        /// Only entries whose original destination is this address (conntrack -L --dst).
        #[arg(long)]
        dst: Option<std::net::IpAddr>,
    },
    /// Forget every tracked connection.
    Flush(ClientArgs),
}

#[derive(Subcommand)]
enum NetworkAction {
    /// Attach a container (a network namespace) to NETWORK: veth pair, address, default route.
    Connect {
        /// Network name.
        network: String,
        /// Namespace path (/run/netns/NAME).
        #[arg(long, required_unless_present = "pid", conflicts_with = "pid")]
        netns: Option<PathBuf>,
        /// A process whose network namespace to use.
        #[arg(long)]
        pid: Option<u32>,
        /// Container name (default: the namespace's name; `pid-PID` with --pid).
        #[arg(long)]
        name: Option<String>,
        /// Interface name inside the container.
        #[arg(long, default_value = "eth0")]
        ifname: String,
        /// Address (default: lowest free in the subnet).
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        /// IPv6 address on a dual-stack network (default: lowest free from the prefix's ::2).
        #[arg(long)]
        ip6: Option<std::net::Ipv6Addr>,
        /// MAC address (default: derived from the address, as Docker does).
        #[arg(long)]
        mac: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Detach a container. Its published ports stay its own and come back when it connects
    /// again, unless --unpublish.
    Disconnect {
        /// Network name.
        network: String,
        /// Container name.
        name: String,
        /// Also remove the ports published to it.
        #[arg(long)]
        unpublish: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create a network (like `docker network create`).
    Create {
        /// Network name.
        name: String,
        /// Subnet in CIDR form (default: the next free /16 from 172.18.0.0/16 up); given twice,
        /// an IPv4 and an IPv6 one (as `docker network create --ipv6 --subnet A --subnet B`).
        #[arg(long)]
        subnet: Vec<ipnet::IpNet>,
        /// Gateway address (default: the subnet's first host, the IPv6 prefix's ::1); one per
        /// family.
        #[arg(long)]
        gateway: Vec<std::net::IpAddr>,
        /// Dual-stack: give the network an IPv6 prefix too (default: the next free /64 of
        /// fd00:7673:7700::/48); implied by an IPv6 --subnet.
        #[arg(long)]
        ipv6: bool,
        /// Allocate container addresses from this sub-range only.
        #[arg(long)]
        ip_range: Option<ipnet::Ipv4Net>,
        /// No uplink: traffic never leaves the network.
        #[arg(long)]
        internal: bool,
        /// Inter-container communication (`--icc=false` isolates containers from each other).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        icc: bool,
        /// Drop frames whose source MAC, IPv4 address or ARP sender is not the container's own
        /// (`--anti-spoofing=false` lets containers use any address).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        anti_spoofing: bool,
        /// MTU of the network's links.
        #[arg(long)]
        mtu: Option<u16>,
        /// Label KEY=VALUE (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// `overlay`: one network across every host of the cluster (the daemons run with
        /// `--cluster`), carried between hosts in VXLAN; `macvlan`: bridged onto the uplink's
        /// LAN (--subnet is the LAN's, --gateway its router; no NAT, no DNS of vswitch's);
        /// `vswitch` (the default): this host's.
        #[arg(long, short = 'd')]
        driver: Option<String>,
        /// A macvlan network's 802.1Q VLAN id on the uplink (1-4094): its frames leave tagged,
        /// only frames with the tag reach it.
        #[arg(long)]
        vlan: Option<String>,
        /// A macvlan network's mode: `bridge` (default: its containers reach each other) or
        /// `private` (each reaches the LAN only).
        #[arg(long, value_name = "bridge|private")]
        macvlan_mode: Option<String>,
        /// An address of the subnet never handed out, NAME=IP (repeatable; the LAN's other
        /// routers and hosts on a macvlan network).
        #[arg(long = "aux-address", value_name = "NAME=IP")]
        aux_addresses: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List networks.
    Ls(ClientArgs),
    /// Show networks as JSON shaped like `docker network inspect`.
    Inspect {
        /// Network names.
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a network that has no containers.
    Rm {
        /// Network name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum PortAction {
    /// Publish HOSTPORT on the uplink address (and to the host itself) to CONTAINERPORT of
    /// CONTAINER.
    Publish {
        /// Network of the container.
        network: String,
        /// Container name.
        container: String,
        /// [HOSTIP:]HOSTPORT[-LAST]:CONTAINERPORT[-LAST][/tcp|udp], e.g. 8080:80,
        /// 127.0.0.1:8080:80 (the host only) or 8000-8010:8000-8010/udp.
        mapping: String,
        /// Do not let the host's own connections in through the host proxy (another
        /// program on the host holds the port).
        #[arg(long)]
        no_host_proxy: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List published ports.
    Ls(ClientArgs),
    /// Remove a published port: HOSTPORT[-LAST][/tcp|udp].
    Rm {
        /// e.g. 8080/tcp or 8000-8010/udp.
        port: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
struct ReplayArgs {
    /// Topology file (TOML).
    #[arg(long, required_unless_present = "scenario")]
    config: Option<PathBuf>,
    /// Input capture bound to a port: PORT=FILE.pcap (repeatable; pcap or pcapng).
    #[arg(long = "in", value_name = "PORT=FILE")]
    inputs: Vec<String>,
    /// A fixture folder: uses DIR/topo.toml and every DIR/in/PORT.pcap.
    #[arg(long, conflicts_with = "config")]
    scenario: Option<PathBuf>,
    /// Where to write PORT.pcap files and summary.json.
    #[arg(long)]
    out_dir: PathBuf,
    /// Print the summary as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Daemon(_)) {
        // `vswitch stats | head` ends quietly when head exits.
        datapath::io::process::die_on_broken_pipe();
    }
    let result = match cli.command {
        Command::Replay(args) => replay(args),
        Command::Daemon(args) => run_daemon(args),
        Command::Status(c) => client(&c, &Request::Status, table::print_status),
        Command::Stats(c) => client(&c, &Request::Stats, table::print_stats),
        Command::Top(t) => top::run(&top::Options {
            socket: &t.client.socket,
            interval: t.interval,
            once: t.once,
            json: t.client.json,
            order: top::model::Order {
                key: t.sort,
                reversed: t.reverse,
            },
            flows: t.flows,
        }),
        Command::Fdb {
            action: FdbAction::Show(c),
        } => client(&c, &Request::Fdb, table::print_fdb),
        Command::Overlay(c) => client(&c, &Request::Overlay, table::print_overlay),
        Command::Conntrack {
            action:
                ConntrackAction::Ls {
                    client: c,
                    proto,
                    src,
                    dst,
                },
        } => client(&c, &Request::Conntrack, |v| {
            table::print_conntrack(v, proto.as_deref(), src, dst)
        }),
        Command::Conntrack {
            action: ConntrackAction::Flush(c),
        } => client(&c, &Request::ConntrackFlush, |_| println!("flushed")),
        Command::Network {
            action:
                NetworkAction::Connect {
                    network,
                    netns,
                    pid,
                    name,
                    ifname,
                    ip,
                    ip6,
                    mac,
                    client: c,
                },
        } => {
            let netns = match (netns, pid) {
                (Some(p), _) => Some(p.to_string_lossy().into_owned()),
                (None, Some(pid)) => Some(format!("/proc/{pid}/ns/net")),
                (None, None) => None,
            };
            let req = Request::Connect {
                network,
                netns,
                name,
                ifname: Some(ifname),
                ip,
                ip6,
                mac,
                peer_in_host: false,
            };
            client(&c, &req, table::print_container)
        }
        Command::Network {
            action:
                NetworkAction::Disconnect {
                    network,
                    name,
                    unpublish,
                    client: c,
                },
        } => {
            let req = Request::Disconnect {
                network,
                name,
                unpublish,
                missing_ok: false,
                netns: None,
            };
            client(&c, &req, |v| {
                println!("disconnected {}", v["name"].as_str().unwrap_or("?"))
            })
        }
        Command::Capture(args) => capture::run(args),
        Command::Events(args) => events::run(args),
        Command::Shutdown(c) => client(&c, &Request::Shutdown, |_| println!("daemon stopping")),
        Command::Upgrade(c) => client(&c, &Request::Upgrade, |v| {
            println!(
                "daemon stopping, keeping its state in {}: start the new binary with the same \
                 --state-dir",
                v.get("state")
                    .and_then(|s| s.as_str())
                    .unwrap_or("its state directory")
            )
        }),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "vswitch", &mut std::io::stdout());
            Ok(())
        }
        Command::Version => {
            println!("vswitch {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Network {
            action:
                NetworkAction::Create {
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
                    driver,
                    vlan,
                    macvlan_mode,
                    aux_addresses,
                    client: c,
                },
        } => {
            let labels = parse_labels(&labels);
            let families = split_families(&subnet, &gateway);
            labels.and_then(|labels| {
                let (subnet, subnet6, gateway, gateway6) = families?;
                let lan = lan::macvlan_flags(
                    driver.as_deref(),
                    vlan.as_deref(),
                    macvlan_mode.as_deref(),
                    ipv6 || subnet6.is_some() || gateway6.is_some(),
                )?;
                let aux_addresses = lan::parse_aux(&aux_addresses)?;
                let req = Request::NetworkCreate {
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
                    vlan: lan.vlan,
                    macvlan_mode: lan.mode,
                    aux_addresses,
                };
                client(&c, &req, |v| {
                    println!("{}", v["Id"].as_str().unwrap_or("?"))
                })
            })
        }
        Command::Network {
            action: NetworkAction::Ls(c),
        } => client(&c, &Request::NetworkLs, table::print_networks),
        Command::Network {
            action: NetworkAction::Inspect { names, client: c },
        } => {
            // Like docker, inspect always prints JSON.
            control::call(&c.socket, &Request::NetworkInspect { names })
                .map_err(anyhow::Error::from)
                .and_then(|v| {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    Ok(())
                })
        }
        Command::Network {
            action: NetworkAction::Rm { name, client: c },
        } => client(&c, &Request::NetworkRm { name }, |v| {
            println!("{}", v["name"].as_str().unwrap_or("?"))
        }),
        Command::Port {
            action:
                PortAction::Publish {
                    network,
                    container,
                    mapping,
                    no_host_proxy,
                    client: c,
                },
        } => mapping::parse_mapping(&mapping).and_then(|m| {
            let req = Request::PortPublish {
                network,
                container,
                host_ip: m.host_ip,
                host_port: m.host_port,
                host_port_last: m.host_port_last,
                container_port: m.container_port,
                proto: m.proto,
                host_proxy: !no_host_proxy,
            };
            client(&c, &req, table::print_published)
        }),
        Command::Port {
            action: PortAction::Ls(c),
        } => client(&c, &Request::PortLs, table::print_ports),
        Command::Port {
            action: PortAction::Rm { port, client: c },
        } => mapping::parse_host_ports(&port).and_then(|(first, last, proto)| {
            let req = Request::PortRm {
                proto,
                host_port: first,
                host_port_last: (last != first).then_some(last),
            };
            client(&c, &req, table::print_unpublished)
        }),
        Command::Bench { args } => run_bench(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--subnet` and `--gateway` values sorted by family: at most one of each.
#[allow(clippy::type_complexity)]
fn split_families(
    subnets: &[ipnet::IpNet],
    gateways: &[std::net::IpAddr],
) -> Result<(
    Option<ipnet::Ipv4Net>,
    Option<ipnet::Ipv6Net>,
    Option<Ipv4Addr>,
    Option<std::net::Ipv6Addr>,
)> {
    use ipnet::IpNet;
    use std::net::IpAddr;
    let one = |what: &str, n: usize| {
        if n > 1 {
            bail!("give at most one IPv4 and one IPv6 {what}");
        }
        Ok(())
    };
    let v4: Vec<_> = subnets
        .iter()
        .filter_map(|s| match s {
            IpNet::V4(n) => Some(*n),
            IpNet::V6(_) => None,
        })
        .collect();
    let v6: Vec<_> = subnets
        .iter()
        .filter_map(|s| match s {
            IpNet::V6(n) => Some(*n),
            IpNet::V4(_) => None,
        })
        .collect();
    let g4: Vec<_> = gateways
        .iter()
        .filter_map(|g| match g {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
        .collect();
    let g6: Vec<_> = gateways
        .iter()
        .filter_map(|g| match g {
            IpAddr::V6(a) => Some(*a),
            IpAddr::V4(_) => None,
        })
        .collect();
    one("--subnet", v4.len().max(v6.len()))?;
    one("--gateway", g4.len().max(g6.len()))?;
    Ok((
        v4.first().copied(),
        v6.first().copied(),
        g4.first().copied(),
        g6.first().copied(),
    ))
}

fn parse_labels(labels: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--label {l:?}: expected KEY=VALUE"),
        })
        .collect()
}

fn run_daemon(args: DaemonArgs) -> Result<()> {
    // First, while the process is still single-threaded: the helper that stays in the host's
    // namespaces is forked, then this process leaves them.
    let rootless = if args.rootless {
        Some(daemon::enter_rootless()?)
    } else {
        None
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let (state_dir, socket) = daemon::paths(args.rootless, args.state_dir, args.socket)?;
    daemon::run(daemon::DaemonOptions {
        config: args.config,
        state_dir,
        socket,
        workers: daemon::workers(args.rootless, args.workers),
        rootless,
        metrics: args.metrics,
        fault_injection: args.fault_injection,
        keep_state: args.keep_state,
        cluster: args
            .cluster
            .map(|urls| -> Result<_> {
                Ok(daemon::cluster::ClusterOptions {
                    endpoints: daemon::cluster::parse_endpoints(&urls)?,
                    host: match args.cluster_host {
                        Some(h) => h,
                        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                            .map(|h| h.trim().to_string())
                            .context("reading the host name: give --cluster-host NAME")?,
                    },
                    ttl: std::time::Duration::from_secs(args.cluster_ttl.max(2)),
                })
            })
            .transpose()?,
    })
}

/// `vswitch bench ARGS`: the benchmark drivers live in their own binary, out of the product;
/// this runs the `vswitch-bench` beside this binary (or on PATH) in this process's place.
fn run_bench(args: &[std::ffi::OsString]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let me = std::env::current_exe().context("locating the vswitch binary")?;
    let sibling = me.with_file_name("vswitch-bench");
    let program = if sibling.exists() {
        sibling
    } else {
        PathBuf::from("vswitch-bench")
    };
    let err = std::process::Command::new(&program)
        .args(args)
        .env("VSWITCH_BIN", &me)
        .exec();
    bail!(
        "cannot run {}: {err} (build it: cargo build --release -p vswitch-bench)",
        program.display()
    )
}

/// The rootless daemon's socket when one is running for this user, else the system daemon's.
fn default_socket() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(|r| PathBuf::from(r).join("vswitch").join("vswitch.sock"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

fn client(c: &ClientArgs, req: &Request, human: impl FnOnce(&serde_json::Value)) -> Result<()> {
    let v = control::call(&c.socket, req)?;
    if c.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        human(&v);
    }
    Ok(())
}

fn replay(args: ReplayArgs) -> Result<()> {
    let (config_path, mut inputs) = match &args.scenario {
        Some(dir) => (
            dir.join("topo.toml"),
            datapath::replay::scenario_inputs(dir)?,
        ),
        None => (
            args.config
                .clone()
                .context("--config or --scenario is required")?,
            Vec::new(),
        ),
    };
    for spec in &args.inputs {
        let Some((port, file)) = spec.split_once('=') else {
            bail!("--in {spec:?}: expected PORT=FILE, e.g. --in c1=client.pcap");
        };
        inputs.push((port.to_string(), PathBuf::from(file)));
    }
    if inputs.is_empty() {
        bail!("nothing to replay: give --in PORT=FILE (or a --scenario with an in/ folder)");
    }
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("cannot read topology {}", config_path.display()))?;
    let config =
        switch::Config::from_toml(&text).with_context(|| config_path.display().to_string())?;
    let summary = datapath::replay::replay(&config, &inputs, &args.out_dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        table::print_replay(&summary, &args.out_dir);
    }
    Ok(())
}
