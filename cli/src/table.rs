//! Human-readable tables for terminal output.

use datapath::replay::Summary;
use std::path::Path;

/// Prints a replay summary: per-port counters, drops by reason, and the FDB.
pub fn print_replay(s: &Summary, out_dir: &Path) {
    println!(
        "replayed {} frames, wrote {} frames to {}",
        s.frames_in,
        s.frames_out,
        out_dir.display()
    );
    println!();
    println!(
        "{:<12} {:<10} {:>8} {:>8} {:>9} {:>6} {:>8}  drops",
        "PORT", "NETWORK", "RX", "TX", "FORWARDED", "LOCAL", "DROPPED"
    );
    for p in &s.state.ports {
        let c = &p.counters;
        let drops = serde_json::to_string(&c.drops).unwrap_or_default();
        println!(
            "{:<12} {:<10} {:>8} {:>8} {:>9} {:>6} {:>8}  {}",
            p.name,
            p.network,
            c.rx_frames,
            c.tx_frames,
            c.forwarded,
            c.local,
            c.dropped(),
            drops
        );
    }
    println!();
    println!(
        "{:<10} {:<19} {:<12} {:>8}",
        "NETWORK", "MAC", "PORT", "AGE(s)"
    );
    for r in &s.state.fdb {
        println!(
            "{:<10} {:<19} {:<12} {:>8.1}",
            r.network, r.mac, r.port, r.age_secs
        );
    }
}
