//! How a [`Frame`] looks: the same panels as plain text (`--once`) and as ratatui tables.

use super::model::{Frame, Order, Rates, SortKey};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};

/// A column: its heading, whether numbers (right-aligned), whether the sort key orders by it.
#[derive(Clone)]
pub struct Column {
    pub name: &'static str,
    pub right: bool,
    pub sorted: bool,
}

/// A titled table.
pub struct Panel {
    pub title: String,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<String>>,
}

impl Panel {
    /// Each column's width: its widest cell or heading.
    fn widths(&self) -> Vec<usize> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|s| s.chars().count())
                    .chain([c.name.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }
}

/// `1234567.0` as `1.23M`: three significant digits and an SI prefix; `-` before there is a
/// rate.
pub fn si(v: Option<f64>) -> String {
    let Some(v) = v else { return "-".into() };
    let (scaled, prefix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .iter()
        .find(|(f, _)| v >= *f)
        .map_or((v, ""), |(f, p)| (v / f, *p));
    if prefix.is_empty() {
        // Below 1000: whole numbers, but a small non-zero rate is not shown as 0.
        if v > 0.0 && v < 1.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.0}")
        }
    } else if scaled >= 100.0 {
        format!("{scaled:.0}{prefix}")
    } else if scaled >= 10.0 {
        format!("{scaled:.1}{prefix}")
    } else {
        format!("{scaled:.2}{prefix}")
    }
}

fn col(name: &'static str, right: bool) -> Column {
    Column {
        name,
        right,
        sorted: false,
    }
}

/// Marks the columns the order's key sorts by (`name` sorts the first column).
fn mark(mut columns: Vec<Column>, key: SortKey) -> Vec<Column> {
    let wanted = key.label();
    for (i, c) in columns.iter_mut().enumerate() {
        c.sorted = match key {
            SortKey::Name => i == 0,
            _ => c.name.ends_with(wanted),
        };
    }
    columns
}

fn rate_cells(r: Option<Rates>) -> [String; 5] {
    [
        si(r.map(|r| r.rx_pps)),
        si(r.map(|r| r.rx_bps)),
        si(r.map(|r| r.tx_pps)),
        si(r.map(|r| r.tx_bps)),
        si(r.map(|r| r.drops_ps)),
    ]
}

fn rate_columns(rx: &'static [&'static str; 2], tx: &'static [&'static str; 2]) -> Vec<Column> {
    vec![
        col(rx[0], true),
        col(rx[1], true),
        col(tx[0], true),
        col(tx[1], true),
        col("DROPS/s", true),
    ]
}

fn endpoint(addr: &str, port: u64) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// The panels of a frame: networks, ports, containers, the `flows` fastest flows, drops.
pub fn panels(f: &Frame, flows: usize) -> Vec<Panel> {
    let key = f.order.key;
    let networks = Panel {
        title: "Networks".into(),
        columns: mark(
            [
                vec![
                    col("NETWORK", false),
                    col("SUBNET", false),
                    col("CONTAINERS", true),
                ],
                rate_columns(&["RX pkt/s", "RX bit/s"], &["TX pkt/s", "TX bit/s"]),
            ]
            .concat(),
            key,
        ),
        rows: f
            .networks
            .iter()
            .map(|n| {
                [
                    vec![n.name.clone(), n.subnet.clone(), n.containers.to_string()],
                    rate_cells(n.rates).to_vec(),
                ]
                .concat()
            })
            .collect(),
    };
    let ports = Panel {
        title: "Ports".into(),
        columns: mark(
            [
                vec![col("PORT", false), col("NETWORK", false)],
                rate_columns(&["RX pkt/s", "RX bit/s"], &["TX pkt/s", "TX bit/s"]),
                vec![col("DROPS", true)],
            ]
            .concat(),
            key,
        ),
        rows: f
            .ports
            .iter()
            .map(|p| {
                [
                    vec![p.name.clone(), p.network.clone()],
                    rate_cells(p.rates).to_vec(),
                    vec![p.dropped.to_string()],
                ]
                .concat()
            })
            .collect(),
    };
    // A container's port receives what it sends: OUT is the port's rx.
    let containers = Panel {
        title: "Containers".into(),
        columns: mark(
            [
                vec![
                    col("CONTAINER", false),
                    col("NETWORK", false),
                    col("IPV4", false),
                    col("PORT", false),
                ],
                rate_columns(&["OUT pkt/s", "OUT bit/s"], &["IN pkt/s", "IN bit/s"]),
            ]
            .concat(),
            key,
        ),
        rows: f
            .containers
            .iter()
            .map(|c| {
                [
                    vec![
                        c.name.clone(),
                        c.network.clone(),
                        c.ip.clone(),
                        c.port.clone(),
                    ],
                    rate_cells(c.rates).to_vec(),
                ]
                .concat()
            })
            .collect(),
    };
    let shown = f.flows.len().min(flows);
    let more = f.flows.len() - shown;
    let flow_key = match key {
        SortKey::Drops => SortKey::Bits,
        k => k,
    };
    let flows = Panel {
        title: if more > 0 {
            format!("Top flows ({shown} of {})", f.flows.len())
        } else {
            format!("Top flows ({shown})")
        },
        columns: mark(
            vec![
                col("PROTO", false),
                col("SOURCE", false),
                col("DESTINATION", false),
                col("STATE", false),
                col("CONTAINER", false),
                col("pkt/s", true),
                col("bit/s", true),
                col("PACKETS", true),
                col("BYTES", true),
            ],
            flow_key,
        ),
        rows: f.flows[..shown]
            .iter()
            .map(|fl| {
                vec![
                    fl.proto.clone(),
                    endpoint(&fl.src, fl.src_port),
                    endpoint(&fl.dst, fl.dst_port),
                    fl.state.clone(),
                    fl.container.clone().unwrap_or_else(|| "-".into()),
                    si(fl.pps),
                    si(fl.bps),
                    fl.packets.to_string(),
                    si(Some(fl.bytes as f64)),
                ]
            })
            .collect(),
    };
    let drops = Panel {
        title: "Drops by reason".into(),
        columns: vec![col("REASON", false), col("per s", true), col("TOTAL", true)],
        rows: f
            .drops
            .iter()
            .map(|d| vec![d.reason.clone(), si(d.per_sec), d.total.to_string()])
            .collect(),
    };
    vec![networks, ports, containers, flows, drops]
}

fn order_text(o: Order) -> String {
    format!(
        "sorted by {}{}",
        o.key.label(),
        if o.reversed { " (reversed)" } else { "" }
    )
}

/// The first line: version, uptime, loops, interval, order.
pub fn title(f: &Frame) -> String {
    let interval = f
        .interval_secs
        .map_or_else(|| "first sample".into(), |s| format!("rates over {s:.1}s"));
    format!(
        "vswitch {} · up {}s · {} packet loops · {} · {}",
        f.version,
        f.uptime_secs,
        f.workers,
        interval,
        order_text(f.order)
    )
}

/// The conntrack line: entries, limit, the fullest table, new connections per second.
pub fn conntrack_text(f: &Frame) -> String {
    let c = &f.conntrack;
    let mut t = format!("conntrack: {} entries", c.entries);
    if let Some(cap) = c.capacity {
        let pct = if cap > 0 {
            100.0 * c.entries as f64 / cap as f64
        } else {
            0.0
        };
        t.push_str(&format!(" of {cap} ({pct:.1}%)"));
    }
    if let Some(full) = c.fullest_table {
        t.push_str(&format!(", fullest table {:.1}%", 100.0 * full));
    }
    if let Some(n) = c.new_per_sec {
        t.push_str(&format!(", {} new/s", si(Some(n))));
    }
    t
}

/// The whole frame as plain text (no terminal codes), for `--once`.
pub fn plain(f: &Frame, flows: usize) -> String {
    let mut out = format!("{}\n{}\n", title(f), conntrack_text(f));
    for p in panels(f, flows) {
        out.push('\n');
        out.push_str(&p.title);
        out.push('\n');
        let w = p.widths();
        let line = |cells: Vec<&str>| {
            let mut l = String::new();
            for (i, (c, s)) in p.columns.iter().zip(cells).enumerate() {
                if i > 0 {
                    l.push_str("  ");
                }
                if c.right {
                    l.push_str(&format!("{s:>width$}", width = w[i]));
                } else {
                    l.push_str(&format!("{s:<width$}", width = w[i]));
                }
            }
            l.trim_end().to_string() + "\n"
        };
        out.push_str(&line(p.columns.iter().map(|c| c.name).collect()));
        if p.rows.is_empty() {
            out.push_str("(none)\n");
        }
        for r in &p.rows {
            out.push_str(&line(r.iter().map(String::as_str).collect()));
        }
    }
    out
}

fn table(p: &Panel) -> Table<'_> {
    let w = p.widths();
    let heading = Style::new().add_modifier(Modifier::BOLD);
    let header = Row::new(p.columns.iter().map(|c| {
        let line = Line::from(c.name);
        let line = if c.right { line.right_aligned() } else { line };
        let style = if c.sorted {
            heading.fg(Color::Yellow).add_modifier(Modifier::UNDERLINED)
        } else {
            heading
        };
        Cell::from(line).style(style)
    }));
    let rows = p.rows.iter().map(|r| {
        Row::new(r.iter().zip(&p.columns).map(|(s, c)| {
            let line = Line::from(s.as_str());
            Cell::from(if c.right { line.right_aligned() } else { line })
        }))
    });
    let widths = w.iter().map(|n| Constraint::Length(*n as u16));
    Table::new(rows, widths)
        .header(header)
        .column_spacing(2)
        .block(Block::bordered().title(Line::from(p.title.clone()).bold()))
}

/// Lines a panel needs: borders, heading, rows.
fn height(p: &Panel) -> u16 {
    (p.rows.len().max(1) + 3) as u16
}

/// Draws the frame; `error` is the last refresh's failure, if any.
pub fn draw(out: &mut ratatui::Frame<'_>, f: &Frame, error: Option<&str>) {
    let area = out.area();
    // As many flows as the screen has room for; the panel is cut to fit anyway.
    let mut all = panels(f, area.height as usize);
    let drops = all.pop();
    let flows = all.pop();
    let (Some(drops), Some(flows)) = (drops, flows) else {
        return;
    };
    let [networks, ports, containers] = match <[Panel; 3]>::try_from(all) {
        Ok(p) => p,
        Err(_) => return,
    };
    // The fixed panels share what is left after the header, the footer and 6 lines of flows.
    let room = area.height.saturating_sub(2 + 1 + 6);
    let cap = (room / 3).max(4);
    let top_h = height(&networks).max(height(&drops)).min(cap);
    let [head, top, mid, low, rest, foot] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(top_h),
        Constraint::Length(height(&ports).min(cap)),
        Constraint::Length(height(&containers).min(cap)),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(area);
    out.render_widget(
        Paragraph::new(vec![
            Line::from(title(f)).bold(),
            Line::from(conntrack_text(f)),
        ]),
        head,
    );
    let drops_w = (drops.widths().iter().sum::<usize>() + 2 * 2 + 2).max(30) as u16;
    let [left, right] =
        Layout::horizontal([Constraint::Min(20), Constraint::Length(drops_w)]).areas(top);
    out.render_widget(table(&networks), left);
    out.render_widget(table(&drops), right);
    out.render_widget(table(&ports), mid);
    out.render_widget(table(&containers), low);
    out.render_widget(table(&flows), rest);
    let keys = "q quit · s/Tab sort · r reverse";
    let footer = match error {
        Some(e) => Line::from(format!("{keys} · refresh failed: {e}")).fg(Color::Red),
        None => Line::from(keys).dim(),
    };
    out.render_widget(Paragraph::new(footer), foot);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::top::model::{Frame, Order, Sample};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use serde_json::json;

    fn frame() -> Frame {
        let status = json!({
            "version": "0.1.0", "uptime_secs": 5, "workers": [{}],
            "networks": [{"name": "bridge", "subnet": "172.17.0.0/16"}],
            "containers": [{"name": "c1", "network": "bridge", "ip": "172.17.0.2", "port": "vsw1"}]
        });
        let stats = |rx: u64, bytes: u64| {
            json!({"ports": [{"name": "vsw1", "network": "bridge", "rx_frames": rx,
                              "rx_bytes": bytes, "drops": {"no_route": rx / 10}}]})
        };
        let ct = |p: u64, b: u64| {
            json!({"entries": [{"original": {"proto": "tcp", "src": "172.17.0.2",
                "src_port": 40000, "dst": "203.0.113.1", "dst_port": 5201},
                "state": {"proto": "tcp", "state": "ESTABLISHED"},
                "packets": [p, 0], "bytes": [b, 0]}]})
        };
        let a = Sample::from_json(&status, &stats(0, 0), &ct(0, 0));
        let b = Sample::from_json(&status, &stats(1000, 1_500_000), &ct(1000, 1_500_000));
        Frame::new(Some(&a), &b, 1.0, Order::default())
    }

    #[test]
    fn si_prefixes() {
        assert_eq!(si(None), "-");
        assert_eq!(si(Some(0.0)), "0");
        assert_eq!(si(Some(0.5)), "0.5");
        assert_eq!(si(Some(999.0)), "999");
        assert_eq!(si(Some(1234.0)), "1.23k");
        assert_eq!(si(Some(12_345_678.0)), "12.3M");
        assert_eq!(si(Some(123_456_789_000.0)), "123G");
    }

    #[test]
    fn plain_text_has_every_panel_and_no_control_codes() {
        let text = plain(&frame(), 10);
        for want in [
            "conntrack: 1 entries",
            "Networks",
            "Ports",
            "Containers",
            "Top flows (1)",
            "Drops by reason",
            "no_route",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
        let flow = text
            .lines()
            .find(|l| l.contains("203.0.113.1:5201"))
            .unwrap();
        // 1.5 MB in 1 s: 12 Mbit/s, 1000 packets/s, from c1.
        assert!(flow.contains("12.0M") && flow.contains("1.00k") && flow.contains("c1"));
        assert!(!text.contains('\x1b'), "{text:?}");
    }

    #[test]
    fn the_screen_shows_the_same_rows() {
        let mut t = Terminal::new(TestBackend::new(160, 40)).unwrap();
        let f = frame();
        t.draw(|out| draw(out, &f, Some("boom"))).unwrap();
        assert_eq!(t.backend().buffer().area.width, 160);
        let buf = t.backend().buffer();
        let lines: Vec<String> = (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect()
            })
            .collect();
        let all = lines.join("\n");
        for want in ["c1", "203.0.113.1:5201", "12.0M", "refresh failed: boom"] {
            assert!(all.contains(want), "{want} missing:\n{all}");
        }
    }
}
