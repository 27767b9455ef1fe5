//! `vswitch top`: networks, ports, containers and their flows by rate, conntrack fill and drops
//! by reason, refreshed every `--interval` seconds from the daemon's `status`, `stats` and
//! `conntrack` answers over the control socket. `--once` prints one plain-text (or JSON) frame
//! made of two samples for scripts.

pub mod model;
pub mod view;

use anyhow::{Context, Result, bail};
use control::Request;
use model::{Frame, Order, Sample, SortKey};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

/// What `vswitch top` was asked for.
pub struct Options<'a> {
    pub socket: &'a Path,
    pub interval: Duration,
    pub once: bool,
    pub json: bool,
    pub order: Order,
    /// Flows printed by `--once`.
    pub flows: usize,
}

/// One sample of the daemon, and when it was taken.
fn sample(socket: &Path) -> Result<(Sample, Instant)> {
    let status = control::call(socket, &Request::Status)?;
    let at = Instant::now();
    let stats = control::call(socket, &Request::Stats)?;
    let conntrack = control::call(socket, &Request::Conntrack)?;
    Ok((Sample::from_json(&status, &stats, &conntrack), at))
}

/// Runs `vswitch top`.
pub fn run(o: &Options<'_>) -> Result<()> {
    if o.json && !o.once {
        bail!("--json prints one frame: give --once too (vswitch top --once --json)");
    }
    if o.interval.is_zero() {
        bail!("--interval must be more than 0 seconds");
    }
    if o.once {
        return once(o);
    }
    if !std::io::stdout().is_terminal() {
        bail!("vswitch top needs a terminal; for scripts use `vswitch top --once` (plain text)");
    }
    // Reach the daemon before taking the screen over: a daemon that is not running is an error
    // on the normal screen.
    let first = sample(o.socket)?;
    interactive(o, first)
}

fn once(o: &Options<'_>) -> Result<()> {
    let (before, t0) = sample(o.socket)?;
    std::thread::sleep(o.interval);
    let (now, t1) = sample(o.socket)?;
    let frame = Frame::new(
        Some(&before),
        &now,
        t1.duration_since(t0).as_secs_f64(),
        o.order,
    );
    if o.json {
        println!("{}", serde_json::to_string_pretty(&frame)?);
    } else {
        print!("{}", view::plain(&frame, o.flows));
    }
    Ok(())
}

/// The terminal in raw mode on the alternate screen; restored when dropped, on every way out
/// (an error returned, a panic: ratatui's panic hook restores it before the message prints).
struct Screen(ratatui::DefaultTerminal);

impl Screen {
    fn new() -> Result<Screen> {
        let t = ratatui::try_init().context("cannot set the terminal up")?;
        Ok(Screen(t))
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.0.show_cursor();
        let _ = ratatui::try_restore();
    }
}

/// What a key asks for.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    Quit,
    NextSort,
    Reverse,
    Nothing,
}

fn key(k: KeyEvent) -> Key {
    if k.kind != KeyEventKind::Press {
        return Key::Nothing;
    }
    match k.code {
        KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => Key::Quit,
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Quit,
        KeyCode::Char('s') | KeyCode::Char('S') | KeyCode::Tab => Key::NextSort,
        KeyCode::Char('r') | KeyCode::Char('R') => Key::Reverse,
        _ => Key::Nothing,
    }
}

fn interactive(o: &Options<'_>, first: (Sample, Instant)) -> Result<()> {
    let mut screen = Screen::new()?;
    let mut order = o.order;
    let mut before: Option<(Sample, Instant)> = None;
    let mut now = first;
    let mut error: Option<String> = None;
    loop {
        let frame = |order| {
            let secs = before
                .as_ref()
                .map_or(0.0, |(_, t)| now.1.duration_since(*t).as_secs_f64());
            Frame::new(before.as_ref().map(|(s, _)| s), &now.0, secs, order)
        };
        let mut shown = frame(order);
        screen
            .0
            .draw(|out| view::draw(out, &shown, error.as_deref()))?;
        let next = now.1 + o.interval;
        // Keys until the next sample is due.
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            if !event::poll(left)? {
                break;
            }
            let redraw = match event::read()? {
                Event::Key(k) => match key(k) {
                    Key::Quit => return Ok(()),
                    Key::NextSort => {
                        order.key = order.key.next();
                        true
                    }
                    Key::Reverse => {
                        order.reversed = !order.reversed;
                        true
                    }
                    Key::Nothing => false,
                },
                Event::Resize(..) => true,
                _ => false,
            };
            if redraw {
                shown = frame(order);
                screen
                    .0
                    .draw(|out| view::draw(out, &shown, error.as_deref()))?;
            }
        }
        // A daemon that went away (or restarted) is shown in the footer, and asked again.
        match sample(o.socket) {
            Ok(s) => {
                before = Some(std::mem::replace(&mut now, s));
                error = None;
            }
            Err(e) => {
                error = Some(format!("{e:#}"));
                now.1 = Instant::now();
            }
        }
    }
}

/// Parses `--interval` seconds (fractions allowed, e.g. 0.5).
pub fn parse_interval(s: &str) -> std::result::Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
        return Err(format!("{s}: give between 0 and 3600 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `--sort` values.
pub fn sort_key(s: &str) -> std::result::Result<SortKey, String> {
    match s {
        "bits" | "bit/s" => Ok(SortKey::Bits),
        "packets" | "pkt/s" => Ok(SortKey::Packets),
        "drops" => Ok(SortKey::Drops),
        "name" => Ok(SortKey::Name),
        _ => Err(format!("{s:?}: bits, packets, drops or name")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let k = |code, modifiers| key(KeyEvent::new(code, modifiers));
        assert_eq!(k(KeyCode::Char('q'), KeyModifiers::NONE), Key::Quit);
        assert_eq!(k(KeyCode::Esc, KeyModifiers::NONE), Key::Quit);
        assert_eq!(k(KeyCode::Char('c'), KeyModifiers::CONTROL), Key::Quit);
        assert_eq!(k(KeyCode::Char('c'), KeyModifiers::NONE), Key::Nothing);
        assert_eq!(k(KeyCode::Tab, KeyModifiers::NONE), Key::NextSort);
        assert_eq!(k(KeyCode::Char('s'), KeyModifiers::NONE), Key::NextSort);
        assert_eq!(k(KeyCode::Char('r'), KeyModifiers::NONE), Key::Reverse);
    }

    #[test]
    fn interval_and_sort_arguments() {
        assert_eq!(parse_interval("0.5").unwrap(), Duration::from_millis(500));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("-1").is_err());
        assert!(parse_interval("soon").is_err());
        assert_eq!(sort_key("packets").unwrap(), SortKey::Packets);
        assert!(sort_key("speed").is_err());
    }
}
