//! What every driver shares: stopping on Ctrl-C, repetition statistics, the machine a run
//! happened on, a progress bar, the output options, and where the `vswitch` binary under test is.

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT/SIGTERM: every loop of the bench checks it and winds down.
static STOP: AtomicBool = AtomicBool::new(false);

pub fn install_signal_handlers() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        // The conditional shutdown goes first: a second signal, once STOP is set, exits at once.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, &STOP);
        let _ = signal_hook::flag::register(sig, &STOP);
    }
}

/// True once the user asked to stop.
pub fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Fails with "interrupted" once the user asked to stop.
pub fn check_stop() -> Result<()> {
    if stopped() {
        bail!("interrupted: cleaning up (Ctrl-C again to exit at once)");
    }
    Ok(())
}

/// Sleeps `secs`, waking every 50 ms to honour Ctrl-C.
pub fn sleep_checked(secs: f64) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs.max(0.0));
    loop {
        check_stop()?;
        let now = std::time::Instant::now();
        if now >= deadline {
            return Ok(());
        }
        std::thread::sleep((deadline - now).min(std::time::Duration::from_millis(50)));
    }
}

/// Median, minimum and maximum of a set of repetitions.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Stat {
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Stat {
    /// Summary of `values` (not empty).
    pub fn of(values: &[f64]) -> Stat {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Stat {
                median: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Stat {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }

    /// `f(x)` applied to each of the three figures (`f` monotonic increasing).
    pub fn map(self, f: impl Fn(f64) -> f64) -> Stat {
        Stat {
            median: f(self.median),
            min: f(self.min),
            max: f(self.max),
        }
    }

    /// "12.3 (12.1–12.5)" with `prec` decimals.
    pub fn show(&self, prec: usize) -> String {
        if self.min == self.max {
            format!("{:.prec$}", self.median)
        } else {
            format!(
                "{:.prec$} ({:.prec$}–{:.prec$})",
                self.median, self.min, self.max
            )
        }
    }
}

/// Where and when a run happened, for the JSON and the docs.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// UTC date and time of the run (RFC 3339).
    pub date: String,
    /// CPU model (from /proc/cpuinfo).
    pub cpu: String,
    /// CPUs available to this process.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// 1-minute load average when the run began: other work on the machine skews every figure.
    pub load_avg_1m: f64,
}

impl Machine {
    pub fn now() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let load_avg_1m = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
            .unwrap_or(0.0);
        Machine {
            load_avg_1m,
            date: utc_now(),
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel,
        }
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ` (no date crate needed).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
pub fn progress(len: u64) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// `--json` and `--plot` shared by both modes.
#[derive(Args, Clone)]
pub struct OutputArgs {
    /// Print the results as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also draw the results into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

impl OutputArgs {
    /// Writes `report` the way the options ask: the plot (if asked) by `plot`, then JSON on
    /// stdout, or the human table by `table` followed by where the plot went.
    pub fn emit<R: Serialize>(
        &self,
        report: &R,
        plot: impl FnOnce(&R, &std::path::Path) -> Result<()>,
        table: impl FnOnce(&R),
    ) -> Result<()> {
        if let Some(path) = &self.plot {
            plot(report, path)?;
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(report)?);
        } else {
            table(report);
            if let Some(path) = &self.plot {
                println!("plot: {}", path.display());
            }
        }
        Ok(())
    }
}

/// The `vswitch` binary the labs run: `$VSWITCH_BIN`, else the one next to this program (both
/// are built into the same target folder).
pub fn vswitch_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("VSWITCH_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().context("locating the vswitch-bench binary")?;
    let sibling = me.with_file_name("vswitch");
    if !sibling.exists() {
        bail!(
            "no vswitch binary beside {}: build it (cargo build --release -p vswitch) or set VSWITCH_BIN",
            me.display()
        );
    }
    Ok(sibling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_median_min_max() {
        let s = Stat::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Stat::of(&[4.0, 1.0, 2.0, 3.0]);
        assert_eq!(s.median, 2.5);
    }

    #[test]
    fn date_format() {
        let d = utc_now();
        assert_eq!(d.len(), 20, "{d}");
        assert!(d.starts_with("20"), "{d}");
    }
}
