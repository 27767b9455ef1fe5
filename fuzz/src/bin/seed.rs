//! Fills `corpus/<target>/` with seeds from capture files and topology files.
//!
//! This is built like the fuzz targets (so one `cargo fuzz build` builds everything, with the
//! same instrumented dependencies) and does its work in libFuzzer's initialization hook, then
//! exits: run it as `SEED_CORPUS=DIR SEED_SOURCES=DIR:DIR... .../release/seed` (see `seed.sh`).
//! Every `*.pcap`/`*.pcapng` below a source directory is
//! read with `datapath::pcap` (files that are not Ethernet captures are skipped), every `*.toml`
//! is a `config` seed. From the frames:
//! - `frame_parse`: every distinct frame;
//! - `pipeline`: each capture as records of the `pipeline` target (frames on the port the file is
//!   named after when it is one of the topology's ports, else `c1`; at most 64 per seed, with
//!   clock records for the capture's time gaps);
//! - `nat_rewrite`: each distinct IPv4 packet, after a fixed parameter block;
//! - `dns_respond`: each distinct UDP payload to or from port 53.
//!
//! `control_request` gets hand-written request lines. Seeds are named by a hash of their bytes,
//! so running this twice adds nothing.

#![no_main]

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use vswitch_fuzz::{PORTS, record};

const CONTROL: &[&str] = &[
    r#"{"cmd":"status"}"#,
    r#"{"cmd":"stats"}"#,
    r#"{"cmd":"fdb"}"#,
    r#"{"cmd":"conntrack"}"#,
    r#"{"cmd":"conntrack_flush"}"#,
    r#"{"cmd":"connect","network":"bridge","netns":"/run/netns/c1"}"#,
    r#"{"cmd":"connect","network":"app","netns":"/proc/42/ns/net","name":"web","ifname":"eth1","ip":"172.18.0.9"}"#,
    r#"{"cmd":"disconnect","network":"app","name":"web"}"#,
    r#"{"cmd":"network_create","name":"app","subnet":"172.18.0.0/16","gateway":"172.18.0.1","ip_range":"172.18.5.0/24","internal":false,"icc":true,"mtu":1400,"labels":{"a":"b"}}"#,
    r#"{"cmd":"network_create","name":"x"}"#,
    r#"{"cmd":"network_ls"}"#,
    r#"{"cmd":"network_inspect","names":["bridge","app"]}"#,
    r#"{"cmd":"network_rm","name":"app"}"#,
    r#"{"cmd":"port_publish","network":"bridge","container":"web","host_port":8080,"container_port":80,"proto":"tcp"}"#,
    r#"{"cmd":"port_ls"}"#,
    r#"{"cmd":"port_rm","proto":"udp","host_port":5353}"#,
    r#"{"cmd":"shutdown"}"#,
    "{\"cmd\":\"network_create\",\"name\":\"caf\\u00e9\",\"labels\":{\"\\ud83d\\ude00\":\"\"}}\n",
];

fn hash(b: &[u8]) -> String {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    format!("{:016x}", h.finish())
}

fn put(corpus: &Path, target: &str, bytes: &[u8]) {
    let dir = corpus.join(target);
    let _ = fs::create_dir_all(&dir);
    let path = dir.join(hash(bytes));
    if !path.exists()
        && let Err(e) = fs::write(&path, bytes)
    {
        eprintln!("{}: {e}", path.display());
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn push_record(seed: &mut Vec<u8>, tag: u8, port: u8, body: &[u8]) {
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    seed.extend_from_slice(&[tag, port]);
    seed.extend_from_slice(&len.to_be_bytes());
    seed.extend_from_slice(&body[..usize::from(len)]);
}

/// Clock record body for a gap, in the units `vswitch_fuzz::advance` reads.
fn gap(nanos: u128) -> Option<[u8; 3]> {
    let (unit, n) = if nanos >= 3_600_000_000_000 {
        (3u8, nanos / 3_600_000_000_000)
    } else if nanos >= 60_000_000_000 {
        (2, nanos / 60_000_000_000)
    } else if nanos >= 1_000_000_000 {
        (1, nanos / 1_000_000_000)
    } else if nanos >= 1_000_000 {
        (0, nanos / 1_000_000)
    } else {
        return None;
    };
    let n = u16::try_from(n.min(999)).unwrap_or(999).to_be_bytes();
    Some([unit, n[0], n[1]])
}

fn seed_capture(corpus: &Path, path: &Path) {
    let records = match datapath::pcap::read_file(path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let port = PORTS.iter().position(|p| *p == stem).unwrap_or(0) as u8;
    for chunk in records.chunks(64) {
        let mut seed = vec![0u8];
        let mut last = chunk.first().map(|r| r.timestamp).unwrap_or_default();
        for r in chunk {
            if let Some(body) = gap(r.timestamp.saturating_sub(last).as_nanos()) {
                push_record(&mut seed, record::CLOCK, 0, &body);
            }
            last = r.timestamp;
            push_record(&mut seed, record::RAW, port, &r.data);
        }
        put(corpus, "pipeline", &seed);
    }
    for r in &records {
        let f = &r.data;
        put(corpus, "frame_parse", f);
        let Ok(c) = packet::classify(f) else {
            continue;
        };
        let packet::L3::Ipv4(_) = c.l3 else {
            continue;
        };
        // nat_rewrite: 40 parameter bytes (built = false) then the IPv4 packet.
        let mut n = vec![0u8; 40];
        for (i, b) in n.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        n[37] = 0; // foreign_inner
        n[38] = 0; // pad
        n[39] = 0; // built
        n.extend_from_slice(&f[c.l3_offset..c.ip_end]);
        put(corpus, "nat_rewrite", &n);
        if let packet::L4::Udp { src_port, dst_port } = c.l4
            && (src_port == 53 || dst_port == 53)
            && let Some(p) = f.get(c.l4_offset + 8..c.ip_end)
        {
            put(corpus, "dns_respond", p);
        }
    }
}

fn seed() {
    let (Some(corpus), Some(sources)) = (
        std::env::var_os("SEED_CORPUS").map(PathBuf::from),
        std::env::var_os("SEED_SOURCES"),
    ) else {
        eprintln!("usage: SEED_CORPUS=DIR SEED_SOURCES=DIR:DIR... seed");
        std::process::exit(2);
    };
    let corpus = &corpus;
    let sources: Vec<PathBuf> = std::env::split_paths(&sources).collect();
    for line in CONTROL {
        put(corpus, "control_request", line.as_bytes());
    }
    let mut files = Vec::new();
    for s in &sources {
        walk(s, &mut files);
    }
    for f in &files {
        match f.extension().and_then(|e| e.to_str()) {
            Some("pcap" | "pcapng") => seed_capture(corpus, f),
            Some("toml") => match fs::read(f) {
                Ok(b) => put(corpus, "config", &b),
                Err(e) => eprintln!("{}: {e}", f.display()),
            },
            _ => {}
        }
    }
    for t in [
        "frame_parse",
        "pipeline",
        "nat_rewrite",
        "control_request",
        "config",
        "dns_respond",
    ] {
        let n = fs::read_dir(corpus.join(t)).map(|d| d.count()).unwrap_or(0);
        println!("{t}: {n} seeds");
    }
    std::process::exit(0);
}

libfuzzer_sys::fuzz_target!(init: seed(), |_data: &[u8]| {});
