//! `vswitch capture`: asks the daemon for a live capture and writes what it streams as pcapng
//! (one interface per port, with its name and each frame's direction), classic pcap, or one
//! line per frame.

use anyhow::{Context, Result, bail};
use control::capture::Record;
use control::{Request, client::call_streaming};
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::net::Shutdown;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// File formats `-w` writes.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    /// pcapng: interface names and directions (tcpdump, tshark and Wireshark read it).
    Pcapng,
    /// Classic pcap with nanosecond times: one interface, no directions.
    Pcap,
}

/// `vswitch capture`'s arguments.
#[derive(clap::Args)]
pub struct CaptureArgs {
    /// A port (`vsw3`, `up0`), a container (`NAME` or `NETWORK/NAME`) or a network.
    target: String,
    /// A filter in tcpdump's syntax (needs libpcap where the daemon runs), e.g. `icmp or tcp
    /// port 80`. Words after the target are taken as the filter too, as tcpdump does.
    #[arg(long, short = 'f')]
    filter: Option<String>,
    /// Filter words, as tcpdump takes them.
    expression: Vec<String>,
    /// Write frames to this file (`-` for standard output) instead of one line per frame.
    #[arg(short = 'w')]
    write: Option<PathBuf>,
    /// The file format of `-w`.
    #[arg(long, value_enum, default_value_t = Format::Pcapng)]
    format: Format,
    /// Stop after this many frames.
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Bytes kept of each frame (default: all of it).
    #[arg(short = 's', long)]
    snaplen: Option<u32>,
    /// `in` (frames the port sent to the switch), `out` (frames the switch sent it, after NAT)
    /// or `both`.
    #[arg(long, default_value = "both")]
    direction: String,
    #[command(flatten)]
    client: crate::ClientArgs,
}

/// A writer the pcap writer and the flushing both hold (pcap-file's `PcapWriter` does not lend
/// its writer back).
#[derive(Clone)]
struct Shared(Rc<RefCell<Box<dyn Write>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// Where frames go.
enum Sink {
    PcapNg {
        writer: PcapNgWriter<Box<dyn Write>>,
        /// Port id -> interface index in the file.
        interfaces: HashMap<u16, u32>,
        names: HashMap<u16, String>,
    },
    Pcap(PcapWriter<Shared>, Shared),
    Lines {
        names: HashMap<u16, String>,
    },
}

impl Sink {
    fn open(args: &CaptureArgs, snaplen: u32) -> Result<Sink> {
        let Some(path) = &args.write else {
            return Ok(Sink::Lines {
                names: HashMap::new(),
            });
        };
        let out: Box<dyn Write> = if path.as_os_str() == "-" {
            Box::new(std::io::BufWriter::new(std::io::stdout()))
        } else {
            let f = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            Box::new(std::io::BufWriter::new(f))
        };
        Ok(match args.format {
            Format::Pcapng => Sink::PcapNg {
                writer: PcapNgWriter::new(out).context("writing the pcapng header")?,
                interfaces: HashMap::new(),
                names: HashMap::new(),
            },
            Format::Pcap => {
                let header = PcapHeader {
                    snaplen,
                    datalink: DataLink::ETHERNET,
                    ts_resolution: pcap_file::TsResolution::NanoSecond,
                    ..PcapHeader::default()
                };
                let shared = Shared(Rc::new(RefCell::new(out)));
                let writer = PcapWriter::with_header(shared.clone(), header)
                    .context("writing the pcap header")?;
                Sink::Pcap(writer, shared)
            }
        })
    }

    fn interface(&mut self, port: u16, name: String) {
        match self {
            Sink::PcapNg { names, .. } | Sink::Lines { names } => {
                names.insert(port, name);
            }
            Sink::Pcap(..) => {}
        }
    }

    fn frame(
        &mut self,
        time_ns: u64,
        port: u16,
        outbound: bool,
        wire_len: u32,
        data: &[u8],
    ) -> Result<()> {
        let time = Duration::from_nanos(time_ns);
        match self {
            Sink::PcapNg {
                writer,
                interfaces,
                names,
            } => {
                let next = u32::try_from(interfaces.len()).unwrap_or(u32::MAX);
                let interface_id = match interfaces.get(&port) {
                    Some(&i) => i,
                    None => {
                        let name = names
                            .get(&port)
                            .cloned()
                            .unwrap_or_else(|| format!("port{port}"));
                        writer
                            .write_pcapng_block(InterfaceDescriptionBlock {
                                linktype: DataLink::ETHERNET,
                                snaplen: 0,
                                options: vec![
                                    InterfaceDescriptionOption::IfName(Cow::Owned(name)),
                                    // Times in nanoseconds, as the frame blocks are written.
                                    InterfaceDescriptionOption::IfTsResol(9),
                                ],
                            })
                            .context("writing an interface block")?;
                        interfaces.insert(port, next);
                        next
                    }
                };
                // epb_flags bits 0-1: 1 inbound, 2 outbound.
                let flags = if outbound { 2 } else { 1 };
                writer
                    .write_pcapng_block(EnhancedPacketBlock {
                        interface_id,
                        timestamp: time,
                        original_len: wire_len,
                        data: Cow::Borrowed(data),
                        options: vec![EnhancedPacketOption::Flags(flags)],
                    })
                    .context("writing a frame")?;
            }
            Sink::Pcap(writer, _) => {
                writer
                    .write_packet(&PcapPacket::new(time, wire_len, data))
                    .context("writing a frame")?;
            }
            Sink::Lines { names } => {
                let name = names.get(&port).map_or("?", String::as_str);
                let way = if outbound { "Out" } else { "In " };
                println!("{} {name} {way} {}", clock(time), summary(data, wire_len));
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        match self {
            Sink::PcapNg { writer, .. } => writer.get_mut().flush()?,
            Sink::Pcap(_, out) => out.flush()?,
            Sink::Lines { .. } => std::io::stdout().flush()?,
        }
        Ok(())
    }
}

/// `HH:MM:SS.micros` in UTC, as tcpdump prints times.
pub fn clock(t: Duration) -> String {
    let secs = t.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        t.subsec_micros()
    )
}

/// One line about a frame: addresses, protocol, ports or ICMP type, length.
pub fn summary(data: &[u8], wire_len: u32) -> String {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let Ok(p) = SlicedPacket::from_ethernet(data) else {
        return format!("unparsed frame, length {wire_len}");
    };
    let (src, dst, what) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => (
            ip.header().source_addr().to_string(),
            ip.header().destination_addr().to_string(),
            "IP",
        ),
        Some(NetSlice::Ipv6(ip)) => (
            ip.header().source_addr().to_string(),
            ip.header().destination_addr().to_string(),
            "IP6",
        ),
        Some(NetSlice::Arp(arp)) => {
            let ip = |b: &[u8]| {
                <[u8; 4]>::try_from(b)
                    .map_or_else(|_| "?".into(), |a| std::net::Ipv4Addr::from(a).to_string())
            };
            let op = arp.operation().0;
            return match op {
                1 => format!(
                    "ARP who-has {} tell {}, length {wire_len}",
                    ip(arp.target_protocol_addr()),
                    ip(arp.sender_protocol_addr())
                ),
                2 => format!(
                    "ARP reply {} is-at {}, length {wire_len}",
                    ip(arp.sender_protocol_addr()),
                    packet::MacAddr(<[u8; 6]>::try_from(arp.sender_hw_addr()).unwrap_or_default())
                ),
                _ => format!("ARP op {op}, length {wire_len}"),
            };
        }
        None => {
            let ether = p
                .link
                .as_ref()
                .and_then(|l| l.to_header())
                .map_or(0, |h| match h {
                    etherparse::LinkHeader::Ethernet2(e) => e.ether_type.0,
                    etherparse::LinkHeader::LinuxSll(_) => 0,
                });
            return format!("ethertype 0x{ether:04x}, length {wire_len}");
        }
    };
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let mut flags = String::new();
            for (on, c) in [
                (t.syn(), 'S'),
                (t.fin(), 'F'),
                (t.rst(), 'R'),
                (t.psh(), 'P'),
                (t.ack(), '.'),
            ] {
                if on {
                    flags.push(c);
                }
            }
            format!(
                "{what} {src}.{} > {dst}.{}: TCP [{flags}] seq {}, length {wire_len}",
                t.source_port(),
                t.destination_port(),
                t.sequence_number()
            )
        }
        Some(TransportSlice::Udp(u)) => format!(
            "{what} {src}.{} > {dst}.{}: UDP, length {wire_len}",
            u.source_port(),
            u.destination_port()
        ),
        Some(TransportSlice::Icmpv4(i)) => {
            use etherparse::Icmpv4Type as T;
            let kind = match i.icmp_type() {
                T::EchoRequest(e) => format!("echo request, id {}, seq {}", e.id, e.seq),
                T::EchoReply(e) => format!("echo reply, id {}, seq {}", e.id, e.seq),
                T::DestinationUnreachable(_) => "destination unreachable".into(),
                T::TimeExceeded(_) => "time exceeded".into(),
                _ => format!("type {}", i.type_u8()),
            };
            format!("{what} {src} > {dst}: ICMP {kind}, length {wire_len}")
        }
        Some(TransportSlice::Icmpv6(i)) => format!(
            "{what} {src} > {dst}: ICMP6 type {}, length {wire_len}",
            i.type_u8()
        ),
        Some(TransportSlice::Igmp(_)) => format!("{what} {src} > {dst}: IGMP, length {wire_len}"),
        None => format!("{what} {src} > {dst}: length {wire_len}"),
    }
}

/// Runs a capture until the count, the duration, Ctrl-C or the daemon ends it.
pub fn run(args: CaptureArgs) -> Result<()> {
    let filter = match (&args.filter, args.expression.is_empty()) {
        (Some(_), false) => {
            bail!("give the filter once: with --filter or as words after the target")
        }
        (Some(f), true) => Some(f.clone()),
        (None, false) => Some(args.expression.join(" ")),
        (None, true) => None,
    };
    let req = Request::Capture {
        target: args.target.clone(),
        filter,
        snaplen: args.snaplen,
        direction: Some(args.direction.clone()),
    };
    let (answer, mut reader) = call_streaming(&args.client.socket, &req)?;
    let snaplen = answer["snaplen"]
        .as_u64()
        .and_then(|s| u32::try_from(s).ok())
        .unwrap_or(262_144);
    let mut sink = Sink::open(&args, snaplen)?;
    eprintln!(
        "capturing on {} ({}){}; Ctrl-C to stop",
        args.target,
        answer["what"].as_str().unwrap_or("?"),
        answer["filter"]
            .as_str()
            .map(|f| format!(", filter {f:?}"))
            .unwrap_or_default()
    );
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("handling Ctrl-C")?;
    }
    // Records are read on their own thread, so that this one can end the capture at any time.
    let (tx, rx) = std::sync::mpsc::sync_channel(4096);
    let ender = reader
        .get_ref()
        .try_clone()
        .context("cloning the daemon's socket")?;
    std::thread::spawn(move || {
        loop {
            let r = Record::read_from(&mut reader);
            let last = !matches!(r, Ok(Some(_)));
            if tx.send(r).is_err() || last {
                return;
            }
        }
    });
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let (mut written, mut counts) = (0u64, (0u64, 0u64));
    let mut ending = false;
    let mut pending = 0usize;
    loop {
        let done = stop.load(Ordering::Relaxed)
            || deadline.is_some_and(|d| Instant::now() >= d)
            || args.count.is_some_and(|c| written >= c);
        if done && !ending {
            // The daemon answers a shut-down half with the final counts, then closes.
            ending = true;
            let _ = ender.shutdown(Shutdown::Write);
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(Some(Record::Interface { port, name }))) => sink.interface(port, name),
            Ok(Ok(Some(Record::Frame {
                time_ns,
                port,
                outbound,
                wire_len,
                data,
            }))) => {
                if args.count.is_none_or(|c| written < c) {
                    sink.frame(time_ns, port, outbound, wire_len, &data)?;
                    written += 1;
                }
                pending += 1;
            }
            Ok(Ok(Some(Record::Stats { captured, dropped }))) => counts = (captured, dropped),
            Ok(Ok(None)) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Ok(Err(e)) => {
                sink.flush()?;
                return Err(e.into());
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        // Frames reach a pipe (`-w - | tcpdump -r -`) within a batch or a quiet 100 ms.
        if pending >= 64 || (pending > 0 && ending) {
            sink.flush()?;
            pending = 0;
        }
    }
    sink.flush()?;
    eprintln!(
        "{written} frames written; the daemon captured {}, and dropped {} (capture queue full)",
        counts.0, counts.1
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_name_addresses_ports_and_kinds() {
        use packet::MacAddr;
        use std::net::Ipv4Addr;
        let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
        let (x, y) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3));
        let syn = testkit::frames::tcp(a, b, x, y, 40000, 80, 7, 0, packet::tcp_flags::SYN, &[]);
        assert_eq!(
            summary(&syn, syn.len() as u32),
            format!(
                "IP 10.0.0.2.40000 > 10.0.0.3.80: TCP [S] seq 7, length {}",
                syn.len()
            )
        );
        let ping = testkit::frames::icmp_echo(a, b, x, y, true, 5, 1, b"hi");
        let s = summary(&ping, ping.len() as u32);
        assert!(s.contains("ICMP echo request, id 5, seq 1"), "{s}");
        let arp = testkit::frames::arp_request(a, x, y);
        let s = summary(&arp, 42);
        assert_eq!(s, "ARP who-has 10.0.0.3 tell 10.0.0.2, length 42");
        assert_eq!(summary(&[1, 2, 3], 3), "unparsed frame, length 3");
        assert_eq!(
            clock(Duration::new(86_400 + 3_723, 4_000)),
            "01:02:03.000004"
        );
    }
}
