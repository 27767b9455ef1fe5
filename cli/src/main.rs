//! `vswitch`: the command-line entry point. Parses arguments with clap and hands off to the
//! library crates; the only crate that uses `anyhow`.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod control;
mod daemon;
mod table;

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
    /// Forwarding database.
    Fdb {
        #[command(subcommand)]
        action: FdbAction,
    },
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
    /// Ask the daemon to stop (it removes the links it created).
    Shutdown(ClientArgs),
}

#[derive(Args)]
struct DaemonArgs {
    /// Topology file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Directory for the daemon's state and socket.
    #[arg(long, default_value = "/run/vswitch")]
    state_dir: PathBuf,
    /// Control socket path (default: STATE_DIR/vswitch.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Packet-loop threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
}

#[derive(Args, Clone)]
struct ClientArgs {
    /// Control socket of the daemon.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET, env = "VSWITCH_SOCKET")]
    socket: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
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
        /// Container name (default: the namespace's name).
        #[arg(long)]
        name: Option<String>,
        /// Interface name inside the container.
        #[arg(long, default_value = "eth0")]
        ifname: String,
        /// Address (default: lowest free in the subnet).
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Detach a container.
    Disconnect {
        /// Network name.
        network: String,
        /// Container name.
        name: String,
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
    let result = match cli.command {
        Command::Replay(args) => replay(args),
        Command::Daemon(args) => run_daemon(args),
        Command::Status(c) => client(&c, &Request::Status, table::print_status),
        Command::Stats(c) => client(&c, &Request::Stats, table::print_stats),
        Command::Fdb {
            action: FdbAction::Show(c),
        } => client(&c, &Request::Fdb, table::print_fdb),
        Command::Conntrack {
            action: ConntrackAction::Ls { client: c, proto },
        } => client(&c, &Request::Conntrack, |v| {
            table::print_conntrack(v, proto.as_deref())
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
                    client: c,
                },
        } => {
            let netns = match (netns, pid) {
                (Some(p), _) => p,
                (None, Some(pid)) => PathBuf::from(format!("/proc/{pid}/ns/net")),
                (None, None) => PathBuf::new(),
            };
            let netns = netns.to_string_lossy().into_owned();
            let req = Request::Connect {
                network,
                netns,
                name,
                ifname: Some(ifname),
                ip,
            };
            client(&c, &req, table::print_container)
        }
        Command::Network {
            action:
                NetworkAction::Disconnect {
                    network,
                    name,
                    client: c,
                },
        } => client(&c, &Request::Disconnect { network, name }, |v| {
            println!("disconnected {}", v["name"].as_str().unwrap_or("?"))
        }),
        Command::Shutdown(c) => client(&c, &Request::Shutdown, |_| println!("daemon stopping")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_daemon(args: DaemonArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let socket = args
        .socket
        .unwrap_or_else(|| args.state_dir.join("vswitch.sock"));
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    daemon::run(daemon::DaemonOptions {
        config: args.config,
        state_dir: args.state_dir,
        socket,
        workers,
    })
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

/// Inputs of a scenario folder: `in/PORT.pcap`, sorted by port name.
fn scenario_inputs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let in_dir = dir.join("in");
    let entries = std::fs::read_dir(&in_dir).with_context(|| {
        format!(
            "{}: a scenario needs an in/ folder of PORT.pcap files",
            in_dir.display()
        )
    })?;
    let mut inputs = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let is_capture = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("pcap" | "pcapng")
        );
        if let (true, Some(port)) = (is_capture, path.file_stem().and_then(|s| s.to_str())) {
            inputs.push((port.to_string(), path.clone()));
        }
    }
    inputs.sort();
    Ok(inputs)
}

fn replay(args: ReplayArgs) -> Result<()> {
    let (config_path, mut inputs) = match &args.scenario {
        Some(dir) => (dir.join("topo.toml"), scenario_inputs(dir)?),
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
