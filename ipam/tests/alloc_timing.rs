//! By-hand measurement of `allocate` cost against the number of leases on the network (issue
//! #20). Ignored: speed is not asserted. Run with
//! `cargo test -p ipam --release --test alloc_timing -- --ignored --nocapture`.
//! The file lives on /dev/shm when present so fsync does not hide the CPU cost.

use ipam::{LeaseMeta, NetworkSpec, Store};
use packet::PortProto;
use std::time::Instant;

fn meta(i: usize) -> LeaseMeta {
    LeaseMeta {
        netns: format!("/proc/{i}/ns/net"),
        ifname: "eth0".into(),
        host_ifname: format!("veth{i}"),
        mac: None,
        ip6: None,
    }
}

fn measure(leases: usize) {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let store = Store::open(dir.path().join("state.redb")).expect("open");
    let mut spec = NetworkSpec::new("big");
    spec.subnet = Some("10.80.0.0/16".parse().expect("cidr"));
    store.create_network(spec).expect("network");
    for i in 0..leases {
        store
            .allocate("big", &format!("c{i}"), None, meta(i))
            .expect("allocate");
        // a few published ports, as a real host has
        if i % 10 == 0 {
            store
                .publish(
                    PortProto::Tcp,
                    10_000 + i as u16,
                    "big",
                    &format!("c{i}"),
                    80,
                )
                .expect("publish");
        }
    }
    const ROUNDS: u32 = 200;
    let (mut alloc, mut rel) = (0u128, 0u128);
    for r in 0..ROUNDS {
        let c = format!("x{r}");
        let t = Instant::now();
        store
            .allocate("big", &c, None, meta(r as usize))
            .expect("allocate");
        alloc += t.elapsed().as_nanos();
        let t = Instant::now();
        store.release("big", &c, true).expect("release");
        rel += t.elapsed().as_nanos();
    }
    let open = Instant::now();
    drop(store);
    let store = Store::open(dir.path().join("state.redb")).expect("reopen");
    let open = open.elapsed();
    store.verify().expect("verify");
    println!(
        "{leases:>5} leases: allocate {:>6} µs, release {:>6} µs, reopen {:>6} µs",
        alloc / u128::from(ROUNDS) / 1000,
        rel / u128::from(ROUNDS) / 1000,
        open.as_micros()
    );
}

#[test]
#[ignore = "by-hand timing, run with --ignored --nocapture"]
fn allocate_cost_against_leases() {
    for n in [10, 1000, 1000] {
        measure(n);
    }
}
