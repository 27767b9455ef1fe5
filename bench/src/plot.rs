//! `--plot FILE.svg`: the bench results drawn with plotters (SVG backend only, no font files:
//! text is laid out by plotters' built-in estimate and rendered by the SVG viewer).

use crate::harness::Stat;
use crate::pipeline::{Kind, Report as PipelineReport};
use crate::scale::Report as ScaleReport;
use crate::veth::Report as VethReport;
use anyhow::{Result, anyhow};
use plotters::prelude::*;
use std::path::Path;

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot: {e:?}")
}

/// A min–max whisker at `x` from `lo` to `hi`.
fn whisker(x: f64, lo: f64, hi: f64, w: f64) -> [PathElement<(f64, f64)>; 3] {
    [
        PathElement::new(vec![(x, lo), (x, hi)], BLACK.stroke_width(1)),
        PathElement::new(vec![(x - w, lo), (x + w, lo)], BLACK.stroke_width(1)),
        PathElement::new(vec![(x - w, hi), (x + w, hi)], BLACK.stroke_width(1)),
    ]
}

/// Left: aggregate Mpps against workers, one line per case. Right: Mpps per case with one worker
/// and with the most workers, median bars with min–max whiskers.
pub fn pipeline(r: &PipelineReport, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(
            &format!(
                "vswitch bench pipeline — {} — {}",
                r.machine.cpu, r.machine.date
            ),
            ("sans-serif", 18),
        )
        .map_err(err)?;
    let (left, right) = root.split_horizontally(540);

    // Cases in run order, each with its results by worker count.
    let mut cases: Vec<(String, Vec<(usize, Stat)>)> = Vec::new();
    for c in &r.results {
        let v6 = if c.family == "ipv6" { "6" } else { "" };
        let label = match c.case {
            Kind::L2 => format!("l2{v6} {:.0}B", c.frame_bytes),
            Kind::Nat => format!(
                "nat{} {} flows {:.0}B",
                v6.repeat(2),
                c.flows.unwrap_or(0),
                c.frame_bytes
            ),
            Kind::Pcap => format!("pcap mix ~{:.0}B", c.frame_bytes),
        };
        match cases.iter_mut().find(|(l, _)| *l == label) {
            Some((_, v)) => v.push((c.workers, c.mpps)),
            None => cases.push((label, vec![(c.workers, c.mpps)])),
        }
    }
    let max_workers = r.results.iter().map(|c| c.workers).max().unwrap_or(1);
    let ymax = r.results.iter().map(|c| c.mpps.max).fold(0.0, f64::max) * 1.15 + 0.1;

    let mut chart = ChartBuilder::on(&left)
        .caption(
            format!(
                "scaling: aggregate Mpps by workers (free CPUs at start: {:.2})",
                r.free_cpus
            ),
            ("sans-serif", 15),
        )
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.8f64..(max_workers as f64 + 0.2), 0f64..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("worker threads (one pipeline each)")
        .y_desc("Mpps")
        .x_labels(max_workers + 1)
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-6 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(err)?;
    for (i, (label, points)) in cases.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = points.iter().map(|(w, s)| (*w as f64, s.median)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 11))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    // Right: bars per case.
    let n = cases.len().max(1);
    let mut chart = ChartBuilder::on(&right)
        .caption(
            format!("Mpps per case: 1 worker vs {max_workers} (median, min–max)"),
            ("sans-serif", 15),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..ymax)
        .map_err(err)?;
    let labels: Vec<String> = r
        .results
        .iter()
        .filter(|c| c.workers == 1)
        .map(|c| match c.case {
            Kind::L2 if c.family == "ipv6" => format!("l2₆/{:.0}", c.frame_bytes),
            Kind::L2 => format!("l2/{:.0}", c.frame_bytes),
            Kind::Nat => format!(
                "nat{}{}/{:.0}",
                if c.family == "ipv6" { "66·" } else { "" },
                short_count(c.flows.unwrap_or(0)),
                c.frame_bytes
            ),
            Kind::Pcap => "pcap".to_string(),
        })
        .collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_style(("sans-serif", 10))
        .x_desc("case (flows) / frame bytes")
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("Mpps")
        .draw()
        .map_err(err)?;
    let one = Palette99::pick(0).to_rgba();
    let many = Palette99::pick(1).to_rgba();
    for (i, (_, points)) in cases.iter().enumerate() {
        let x = i as f64;
        let mut bars = vec![(
            x - 0.36,
            x - 0.02,
            points.iter().find(|(w, _)| *w == 1),
            one,
        )];
        if max_workers > 1 {
            bars.push((
                x + 0.02,
                x + 0.36,
                points.iter().find(|(w, _)| *w == max_workers),
                many,
            ));
        }
        for (x0, x1, p, color) in bars {
            let Some((_, s)) = p else { continue };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x1, s.median)],
                    color.filled(),
                )))
                .map_err(err)?;
            chart
                .draw_series(whisker((x0 + x1) / 2.0, s.min, s.max, 0.05))
                .map_err(err)?;
        }
    }
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(-10.0, -1.0), (-9.0, -1.0)],
            one.filled(),
        )))
        .map_err(err)?
        .label("1 worker")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], one.filled()));
    if max_workers > 1 {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(-10.0, -1.0), (-9.0, -1.0)],
                many.filled(),
            )))
            .map_err(err)?
            .label(format!("{max_workers} workers"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], many.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 11))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// One panel per test (UDP kpps, TCP Gbit/s, NAT TCP Gbit/s, NAT UDP kpps): vswitch and its peers (the kernel
/// with and without offloads, the raw veth pair, Open vSwitch without and with TSO) side by
/// side, median bars with min–max whiskers, each peer's bar labelled with vswitch's ratio.
pub fn veth(r: &VethReport, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (2500, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(
            &format!(
                "vswitch bench veth — vswitch vs its peers, same run — {} — {}",
                r.machine.cpu, r.machine.date
            ),
            ("sans-serif", 18),
        )
        .map_err(err)?;
    let panels = root.split_evenly((1, 5));
    let tests = [
        ("udp_64B_pps", "64 B UDP (kpps received)", 1e-3),
        ("tcp_gbps", "TCP container → container (Gbit/s)", 1.0),
        (
            "nat_tcp_gbps",
            "TCP through NAT: vswitch vs iptables (Gbit/s)",
            1.0,
        ),
        (
            "nat_udp_64B_pps",
            "64 B UDP through NAT (kpps arrived masqueraded)",
            1e-3,
        ),
        (
            "overlay_tcp_gbps",
            "TCP across two hosts over VXLAN (Gbit/s)",
            1.0,
        ),
    ];
    for (panel, (test, title, scale)) in panels.iter().zip(tests) {
        let rows: Vec<_> = r.rows.iter().filter(|x| x.test == test).collect();
        let vs = rows
            .iter()
            .find(|x| x.system == "vswitch")
            .map(|x| x.value.median);
        let ymax = rows.iter().map(|x| x.value.max * scale).fold(0.0, f64::max) * 1.2 + 1e-3;
        let n = rows.len().max(1);
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 14))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..ymax)
            .map_err(err)?;
        let labels: Vec<String> = rows.iter().map(|x| label(&x.system, x.offloads)).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_style(("sans-serif", 9))
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(err)?;
        for (i, row) in rows.iter().enumerate() {
            let x = i as f64;
            let s = row.value.map(|v| v * scale);
            let color = match row.system.as_str() {
                "vswitch" => Palette99::pick(0),
                "raw-veth" => Palette99::pick(2),
                s if s.starts_with("ovs") => Palette99::pick(4),
                _ if row.offloads == "off" => Palette99::pick(1),
                _ => Palette99::pick(3),
            }
            .to_rgba();
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x - 0.3, 0.0), (x + 0.3, s.median)],
                    color.filled(),
                )))
                .map_err(err)?;
            chart
                .draw_series(whisker(x, s.min, s.max, 0.06))
                .map_err(err)?;
            let value = format!("{:.p$}", s.median, p = prec(s.median));
            let ratio = match vs {
                Some(v) if row.system != "vswitch" && row.value.median > 0.0 => {
                    format!("vswitch {:.2}×", v / row.value.median)
                }
                _ => String::new(),
            };
            for (k, text) in [(1.0, ratio), (0.0, value)] {
                chart
                    .draw_series(std::iter::once(Text::new(
                        text,
                        (x - 0.3, s.max + ymax * (0.02 + 0.045 * k)),
                        ("sans-serif", 10),
                    )))
                    .map_err(err)?;
            }
        }
        let skipped: Vec<String> = r
            .skipped
            .iter()
            .filter(|k| k.test == test)
            .map(|k| label(&k.system, ""))
            .collect();
        if !skipped.is_empty() {
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{} skipped", skipped.join(", ")),
                    (-0.45, ymax * 0.97),
                    ("sans-serif", 10),
                )))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

/// 1, 1k, 100k, 1M.
fn short_count(n: u32) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

/// Decimals worth showing for a bar's value.
fn prec(v: f64) -> usize {
    if v < 10.0 { 2 } else { 1 }
}

/// A bar's label: "vswitch", "bridge (defaults)", "iptables (offl. off)", "raw veth", "OVS",
/// "OVS+TSO".
fn label(system: &str, offloads: &str) -> String {
    match system {
        "vswitch" => "vswitch".into(),
        "raw-veth" => "raw veth".into(),
        "ovs-netdev" => "OVS".into(),
        "ovs-netdev+tso" => "OVS+TSO".into(),
        s => {
            let s = s.strip_prefix("linux-router+").unwrap_or(s);
            let s = s.strip_prefix("linux-").unwrap_or(s);
            let o = if offloads == "off" {
                "offl. off"
            } else {
                "defaults"
            };
            format!("{s} ({o})")
        }
    }
}

/// Attach time of every container in order, one line per switch.
pub fn scale(r: &ScaleReport, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (1000, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let n = r.containers as f64;
    let ymax = r
        .sides
        .iter()
        .flat_map(|s| s.attach_ms.iter().copied())
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "vswitch bench scale — time per attach — {} — {}",
                r.machine.cpu, r.machine.date
            ),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..n, 0f64..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("containers attached before")
        .y_desc("ms per attach")
        .draw()
        .map_err(err)?;
    for (k, s) in r.sides.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.attach_ms.iter().enumerate().map(|(i, &y)| (i as f64, y)),
                color.stroke_width(1),
            ))
            .map_err(err)?
            .label(s.system)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
