//! The sockets against real veth pairs (root; skipped otherwise).

use super::*;
use crate::io::in_netns;
use crate::io::testutil::{VethPair, link_stat, skip_unless_root};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const ETHERTYPE_TEST: [u8; 2] = [0x88, 0xb5]; // IEEE local experimental

/// A test frame: broadcast, ethertype 0x88b5, `seq` in the first payload bytes, `len` long.
fn test_frame(seq: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(18)];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    f[12..14].copy_from_slice(&ETHERTYPE_TEST);
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[18..].iter_mut().enumerate() {
        *b = (seq as usize + i) as u8;
    }
    f
}

fn small_ring() -> RingConfig {
    RingConfig {
        block_size: 1 << 16,
        block_count: 4,
        ..RingConfig::default()
    }
}

/// Sends every frame through `send` (a socket's `tx_batch`), retrying while the device queue
/// is full.
fn send_all(refs: &[&[u8]], mut send: impl FnMut(&[&[u8]]) -> std::io::Result<usize>) {
    let mut sent = 0;
    while sent < refs.len() {
        match send(&refs[sent..]) {
            Ok(k) => sent += k,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
            Err(e) => panic!("tx_batch: {e}"),
        }
    }
}

/// Reads test frames from `ring` until `want` arrive or 3 s pass.
fn collect(ring: &mut AfPacket, want: usize, max_per_call: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while got.len() < want && Instant::now() < deadline {
        let n = ring.rx_batch(max_per_call, |f| {
            if f.len() >= 14 && f[12..14] == ETHERTYPE_TEST {
                got.push(f.to_vec());
            }
        });
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    got
}

#[test]
fn ring_receives_what_the_peer_sends() {
    if skip_unless_root("ring_receives_what_the_peer_sends") {
        return;
    }
    let pair = VethPair::new(1500);
    let mut rx = in_netns(pair.a.path(), || AfPacket::open(&pair.a_if, &small_ring()))
        .unwrap()
        .unwrap();
    let mut tx = in_netns(pair.b.path(), || {
        AfPacket::open(
            &pair.b_if,
            &RingConfig {
                qdisc_bypass: true,
                ..small_ring()
            },
        )
    })
    .unwrap()
    .unwrap();

    // Sizes from minimum to MTU; 300 frames span several 64 KiB blocks.
    let sizes = [60usize, 64, 100, 1000, 1514];
    let frames: Vec<Vec<u8>> = (0..300u32)
        .map(|i| test_frame(i, sizes[i as usize % sizes.len()]))
        .collect();
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let before = link_stat(&pair.a, &pair.a_if, "rx", "packets");
    send_all(&refs, |rest| tx.tx_batch(rest));
    // Small `max` exercises stopping and resuming in the middle of a block.
    let got = collect(&mut rx, frames.len(), 7);
    assert_eq!(got.len(), frames.len(), "all frames arrive, in order");
    assert_eq!(got, frames, "bytes and lengths intact");
    let after = link_stat(&pair.a, &pair.a_if, "rx", "packets");
    assert!(after - before >= frames.len() as u64, "{before} -> {after}");
    let st = rx.stats();
    assert_eq!(st.csum_partial, 0);
    assert_eq!(st.truncated, 0);
    assert_eq!(st.corrupt_blocks, 0);
    assert!(st.blocks >= 1, "{st:?}");

    // The sender's ring does not see its own transmissions.
    let own = collect(&mut tx, 1, 64);
    assert!(own.is_empty(), "tx ring saw {} own frames", own.len());
}

#[test]
fn simple_socket_round_trip_and_ignores_own() {
    if skip_unless_root("simple_socket_round_trip_and_ignores_own") {
        return;
    }
    let pair = VethPair::new(1500);
    let a = in_netns(pair.a.path(), || AfPacketSimple::open(&pair.a_if))
        .unwrap()
        .unwrap();
    let b = in_netns(pair.b.path(), || AfPacketSimple::open(&pair.b_if))
        .unwrap()
        .unwrap();
    let frame = test_frame(7, 64);
    assert_eq!(b.send(&frame).unwrap(), 64);
    assert_eq!(b.send_batch(&[&frame, &frame]).unwrap(), 2);
    let mut buf = [0u8; 2048];
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while got < 3 && Instant::now() < deadline {
        match a.recv(&mut buf) {
            Ok(n) if buf[12..14] == ETHERTYPE_TEST => {
                assert_eq!(&buf[..n], &frame[..]);
                got += 1;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
    assert_eq!(got, 3);
    // b sent, but must not read its own frames back.
    loop {
        match b.recv(&mut buf) {
            Ok(_) => assert_ne!(buf[12..14], ETHERTYPE_TEST, "own frame seen"),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
                break;
            }
        }
    }
}

#[test]
fn bad_ring_configs_are_refused() {
    let bad = [
        RingConfig {
            block_size: 1000,
            ..RingConfig::default()
        },
        RingConfig {
            block_count: 0,
            ..RingConfig::default()
        },
        RingConfig {
            frame_size: 100,
            ..RingConfig::default()
        },
    ];
    for cfg in bad {
        let err = AfPacket::open("lo", &cfg).unwrap_err();
        assert!(matches!(err, IoError::BadRingConfig(_)), "{err}");
    }
    let err = AfPacket::open("vsnosuchif0", &RingConfig::default()).unwrap_err();
    assert!(matches!(err, IoError::NoSuchInterface { .. }), "{err}");
}

/// An Ethernet + IPv4 + UDP frame (checksums zero: the flow dissector does not check them).
fn udp_frame(src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + 18];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.0);
    ip[16..20].copy_from_slice(&dst.0);
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&src.1.to_be_bytes());
    udp[2..4].copy_from_slice(&dst.1.to_be_bytes());
    udp[4..6].copy_from_slice(&26u16.to_be_bytes());
    f
}

/// The direction-free flow key of a frame built by `udp_frame`.
fn flow_key(f: &[u8]) -> Option<[u8; 12]> {
    if f.len() < 42 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
        return None;
    }
    let a: [u8; 6] = f[26..30]
        .iter()
        .chain(&f[34..36])
        .copied()
        .collect::<Vec<_>>()
        .try_into()
        .ok()?;
    let b: [u8; 6] = f[30..34]
        .iter()
        .chain(&f[36..38])
        .copied()
        .collect::<Vec<_>>()
        .try_into()
        .ok()?;
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut k = [0u8; 12];
    k[..6].copy_from_slice(&lo);
    k[6..].copy_from_slice(&hi);
    Some(k)
}

#[test]
fn fanout_hash_is_symmetric() {
    if skip_unless_root("fanout_hash_is_symmetric") {
        return;
    }
    let pair = VethPair::new(1500);
    let cfg = RingConfig {
        fanout_group: Some(0x5a5a),
        ..small_ring()
    };
    let mut rings = in_netns(pair.a.path(), || {
        (0..2)
            .map(|_| AfPacket::open(&pair.a_if, &cfg))
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap()
    .unwrap();
    // A member with different fanout settings is refused with a clear error.
    let ifindex = rings[0].ifindex();
    let other = in_netns(pair.a.path(), || {
        let fd = packet_socket(&pair.a_if).unwrap();
        bind(&fd, ifindex).unwrap();
        let arg: u32 = 0x5a5a | (libc::PACKET_FANOUT_LB << 16);
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)
    })
    .unwrap();
    assert!(other.is_err(), "joining with another mode must fail");

    let tx = in_netns(pair.b.path(), || AfPacketSimple::open(&pair.b_if))
        .unwrap()
        .unwrap();
    // 32 flows, each sent in both directions.
    let mut frames = Vec::new();
    for i in 0..32u8 {
        let c = ([192, 0, 2, 10 + i], 40000 + u16::from(i));
        let s = ([198, 51, 100, 1], 53);
        frames.push(udp_frame(c, s));
        frames.push(udp_frame(s, c));
    }
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    assert_eq!(tx.send_batch(&refs).unwrap(), refs.len());

    let mut owner: std::collections::HashMap<[u8; 12], usize> = Default::default();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while seen < frames.len() && Instant::now() < deadline {
        for (i, ring) in rings.iter_mut().enumerate() {
            ring.rx_batch(64, |f| {
                if let Some(k) = flow_key(f) {
                    seen += 1;
                    let first = *owner.entry(k).or_insert(i);
                    assert_eq!(first, i, "both directions of a flow go to one socket");
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(seen, frames.len());
    assert_eq!(owner.len(), 32);
    let on_first = owner.values().filter(|&&i| i == 0).count();
    assert!(
        on_first > 0 && on_first < 32,
        "flows spread over both sockets ({on_first}/32 on the first)"
    );
}

/// Thread CPU time, for receiver cost per frame.
fn thread_cpu() -> Duration {
    // SAFETY: timespec is plain old data; all zeroes is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct RunResult {
    sent: usize,
    received: usize,
    wall: Duration,
    rx_cpu: Duration,
    kernel_drops: u32,
}

/// Injects `count` 64-byte frames from the b end (sendmmsg, qdisc bypass off: veth has no
/// qdisc queue anyway) while this thread spins on the receiver at the a end.
fn bench_run(pair: &VethPair, count: usize, ring: bool) -> RunResult {
    enum Rx {
        Ring(AfPacket),
        Simple(AfPacketSimple),
    }
    let mut rx = in_netns(pair.a.path(), || {
        if ring {
            AfPacket::open(&pair.a_if, &RingConfig::default()).map(Rx::Ring)
        } else {
            AfPacketSimple::open(&pair.a_if).map(Rx::Simple)
        }
    })
    .unwrap()
    .unwrap();
    let tx = in_netns(pair.b.path(), || AfPacketSimple::open(&pair.b_if))
        .unwrap()
        .unwrap();
    let frames: Vec<Vec<u8>> = (0..64u32).map(|i| test_frame(i, 64)).collect();
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    let start = Instant::now();
    let hard_deadline = start + Duration::from_secs(20);
    std::thread::scope(|s| {
        let sender = s.spawn(|| {
            let mut sent = 0;
            while sent < count && Instant::now() < hard_deadline {
                let want = (count - sent).min(refs.len());
                match tx.send_batch(&refs[..want]) {
                    Ok(k) => sent += k,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("send: {e}"),
                }
            }
            done.store(true, Ordering::Release);
            sent
        });
        let cpu0 = thread_cpu();
        let mut received = 0usize;
        let mut last = Instant::now();
        let mut buf = [0u8; 2048];
        loop {
            let n = match &mut rx {
                Rx::Ring(r) => r.rx_batch(64, |f| {
                    if f[12..14] == ETHERTYPE_TEST {
                        received += 1;
                    }
                }),
                Rx::Simple(r) => match r.recv(&mut buf) {
                    Ok(_) => {
                        if buf[12..14] == ETHERTYPE_TEST {
                            received += 1;
                        }
                        1
                    }
                    Err(_) => 0,
                },
            };
            let now = Instant::now();
            if n > 0 {
                last = now;
            } else if (done.load(Ordering::Acquire) && now - last > Duration::from_millis(200))
                || now > hard_deadline
            {
                break;
            }
            if received >= count {
                last = now;
                break;
            }
        }
        let rx_cpu = thread_cpu() - cpu0;
        let sent = sender.join().unwrap();
        let kernel_drops = match &rx {
            Rx::Ring(r) => r.kernel_stats().unwrap().drops,
            Rx::Simple(r) => r.kernel_stats().unwrap().drops,
        };
        RunResult {
            sent,
            received,
            wall: last - start,
            rx_cpu,
            kernel_drops,
        }
    })
}

/// `cargo test --release -p datapath io::afpacket::tests::bench_ring_vs_simple -- --ignored
/// --nocapture`: ring RX vs per-packet recvfrom on a veth pair, 200k 64-byte frames a run.
#[test]
#[ignore = "benchmark; run with --ignored --nocapture in release mode"]
fn bench_ring_vs_simple() {
    if skip_unless_root("bench_ring_vs_simple") {
        return;
    }
    const COUNT: usize = 200_000;
    let pair = VethPair::new(1500);
    let mut ring_pps = Vec::new();
    let mut simple_pps = Vec::new();
    for round in 0..3 {
        for ring in [true, false] {
            let r = bench_run(&pair, COUNT, ring);
            let pps = r.received as f64 / r.wall.as_secs_f64();
            let ns_per = r.rx_cpu.as_nanos() as f64 / r.received.max(1) as f64;
            eprintln!(
                "round {round} {:6}: sent {} received {} ({:.1}%) in {:?} = {:.0} kpps, \
                 rx thread cpu {:.0} ns/frame (spinning included), kernel drops {}",
                if ring { "ring" } else { "simple" },
                r.sent,
                r.received,
                100.0 * r.received as f64 / r.sent.max(1) as f64,
                r.wall,
                pps / 1e3,
                ns_per,
                r.kernel_drops
            );
            if ring {
                ring_pps.push(pps);
            } else {
                simple_pps.push(pps);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (rp, sp) = (median(&mut ring_pps), median(&mut simple_pps));
    eprintln!(
        "median received rate: ring {:.0} kpps, simple {:.0} kpps, ratio {:.2}",
        rp / 1e3,
        sp / 1e3,
        rp / sp
    );
}

/// Reads test frames from a queue socket until `want` arrived or 3 s passed, `max` per call,
/// with a scratch of `slots`; returns them with their metadata.
fn collect_queue(
    q: &mut AfPacketQueue,
    want: usize,
    max: usize,
    slots: usize,
) -> Vec<(Vec<u8>, FrameMeta)> {
    let mut scratch = RxScratch::new(slots);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while got.len() < want && Instant::now() < deadline {
        let n = q.rx_batch_meta(max, &mut scratch, |frame, meta| {
            if frame.get(12..14) == Some(&ETHERTYPE_TEST[..]) {
                got.push((frame.to_vec(), meta));
            }
        });
        assert!(
            n <= max.min(slots),
            "read {n} with max {max}, {slots} slots"
        );
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    got
}

#[test]
fn queue_socket_receives_in_order_and_ignores_own() {
    if skip_unless_root("queue_socket_receives_in_order_and_ignores_own") {
        return;
    }
    let pair = VethPair::new(1500);
    let opts = SocketOptions {
        rcvbuf: Some(4 << 20),
        ..SocketOptions::default()
    };
    let mut rx = in_netns(pair.a.path(), || AfPacketQueue::open(&pair.a_if, &opts))
        .unwrap()
        .unwrap();
    let mut tx = in_netns(pair.b.path(), || AfPacketQueue::open(&pair.b_if, &opts))
        .unwrap()
        .unwrap();
    let sizes = [60usize, 64, 100, 1000, 1514];
    let frames: Vec<Vec<u8>> = (0..300u32)
        .map(|i| test_frame(i, sizes[i as usize % sizes.len()]))
        .collect();
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    send_all(&refs, |rest| tx.tx_batch(rest));
    // Fewer slots than `max`, and `max` that does not divide the count: batches stop short.
    let got = collect_queue(&mut rx, frames.len(), 64, 7);
    let bytes: Vec<Vec<u8>> = got.iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(bytes, frames, "all frames arrive whole, in order");
    assert!(got.iter().all(|(f, m)| m.wire_len as usize == f.len()));
    let st = rx.stats();
    assert_eq!(st.truncated, 0);
    assert!(st.frames >= 300 && st.batches >= 300 / 7, "{st:?}");
    assert_eq!(
        rx.kernel_stats().unwrap().drops,
        0,
        "4 MiB of queue holds 300 frames"
    );
    let own = collect_queue(&mut tx, 1, 64, 64);
    assert!(own.is_empty(), "the sender read {} own frames", own.len());
}

#[test]
fn queue_socket_reads_the_virtio_net_header() {
    if skip_unless_root("queue_socket_reads_the_virtio_net_header") {
        return;
    }
    let pair = VethPair::new(1500);
    let vnet = SocketOptions {
        vnet_hdr: true,
        ..SocketOptions::default()
    };
    let mut rx = in_netns(pair.a.path(), || AfPacketQueue::open(&pair.a_if, &vnet))
        .unwrap()
        .unwrap();
    let mut tx = in_netns(pair.b.path(), || AfPacketQueue::open(&pair.b_if, &vnet))
        .unwrap()
        .unwrap();
    let frame = test_frame(3, 200);
    // A plain frame: an all-zero header (no GSO, checksum complete) on both sides.
    assert_eq!(
        tx.tx_batch(&[&frame]).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
    assert_eq!(
        tx.tx_batch_vnet(&[&frame], &[[0; VNET_HDR_LEN]]).unwrap(),
        1
    );
    let got = collect_queue(&mut rx, 1, 64, 64);
    assert_eq!(got.len(), 1);
    let (bytes, meta) = &got[0];
    assert_eq!(
        bytes, &frame,
        "the header is split off, not left in the frame"
    );
    assert_eq!(meta.vnet, [0; VNET_HDR_LEN]);
    assert!(!meta.csum_partial);
}
