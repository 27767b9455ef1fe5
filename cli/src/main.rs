//! `vswitch`: the command-line entry point. Parses arguments with clap and hands off to the
//! library crates; the only crate that uses `anyhow`.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod table;

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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitch: {e:#}");
            ExitCode::FAILURE
        }
    }
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
