//! `vswitch-bench` (also run as `vswitch bench`): throughput figures, side by side with the
//! kernel.
//!
//! - `pipeline`: an in-memory generator driving the real [`switch::Pipeline`] (no I/O), one
//!   independent pipeline per worker thread (the daemon is flow-affine per worker, so that is
//!   the honest model of scaling);
//! - `veth`: a namespace lab measured end to end (trafgen, iperf3) through the vswitch daemon
//!   and, in the same run, through a Linux bridge and a Linux router doing MASQUERADE, a raw
//!   veth pair (no switch), and Open vSwitch's userspace datapath when it is installed;
//! - `scale`: containers attached one after another on one network (1,000 by default), attach
//!   time, daemon RSS, a ping and the softirq share as they join, against a Linux bridge;
//! - `rootless`: TCP from a rootless container to the host through vswitch, slirp4netns and
//!   pasta.
//!
//! Every measurement is bounded in time; Ctrl-C (SIGINT) or SIGTERM stops the run at the next
//! check, and the lab's `Drop` removes what the run created (a second Ctrl-C exits at once).
//! Output: a human table on stdout, `--json` for machines, `--plot FILE.svg` for a chart; a
//! progress bar on stderr when stderr is a terminal. The labs run the `vswitch` binary built
//! beside this one (or `$VSWITCH_BIN`).

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod harness;
mod lab;
mod pipeline;
mod plot;
mod rootless;
mod scale;
mod veth;

#[derive(Parser)]
#[command(
    name = "vswitch-bench",
    version,
    about = "vswitch's throughput figures, side by side with the kernel"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// In-memory generator driving the real pipeline (no I/O): L2, NAT on N live flows, a pcap mix.
    Pipeline(pipeline::PipelineArgs),
    /// Namespace lab: vswitch daemon vs Linux bridge vs iptables/nft MASQUERADE (needs root).
    Veth(veth::VethArgs),
    /// Many containers on one network: attach time, RSS, ping and softirq as they join, vswitch
    /// vs a Linux bridge (needs root).
    Scale(scale::ScaleArgs),
    /// TCP from a rootless container to the host: vswitch's socket gateway vs slirp4netns vs
    /// pasta, same run (needs root for the stand-in host namespace, and a plain user).
    Rootless(rootless::RootlessArgs),
    /// Fallback packet generator used by `veth` when trafgen is missing (internal).
    #[command(hide = true)]
    Blast(veth::BlastArgs),
}

fn run(cli: Cli) -> Result<()> {
    harness::install_signal_handlers();
    match cli.mode {
        Mode::Pipeline(a) => pipeline::run(a),
        Mode::Veth(a) => veth::run(a),
        Mode::Rootless(a) => rootless::run(a),
        Mode::Scale(a) => scale::run(a),
        Mode::Blast(a) => veth::blast(a),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitch-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
