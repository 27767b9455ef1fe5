//! Crash safety: a child process loops allocate/release/publish on a store file as fast as it
//! can; the parent kills it with SIGKILL at pseudo-random moments, reopens the store each time and
//! checks that it opens cleanly (the file lives on /dev/shm when
//! present) and that every invariant holds (no address leased twice, every
//! lease inside its subnet, index and published ports consistent). The network is dual-stack:
//! every lease has its IPv6 address too (both were committed, or neither).
//!
//! The child is this test binary re-executed with `--exact child_loop` and `IPAM_CRASH_DB` set;
//! without the variable `child_loop` returns at once. Bounded: 20 kills, about 5 s.
//! `IPAM_CRASH_SEED` picks the kill schedule (printed on each run).

use ipam::{IpamError, Ipv6Spec, LeaseMeta, NetworkSpec, Store, StoreError};
use packet::PortProto;
use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ENV_DB: &str = "IPAM_CRASH_DB";
const NET: &str = "crash";
const SUBNET: &str = "10.77.0.0/26";
const SUBNET6: &str = "fd77::/120";
const CONTAINERS: u64 = 50;
const KILLS: usize = 20;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// The child: never returns while `IPAM_CRASH_DB` is set; prints `ops N` after each operation.
#[test]
fn child_loop() {
    let Ok(path) = std::env::var(ENV_DB) else {
        return;
    };
    let store = Store::open(&path).expect("child: open");
    let seed = std::process::id() as u64 | 1;
    let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let subnet: ipnet::Ipv4Net = SUBNET.parse().expect("subnet");
    for ops in 1u64.. {
        let r = rng.next();
        let container = format!("c{}", r % CONTAINERS);
        // a quarter of the allocations ask for a specific address
        let requested = (r >> 8).is_multiple_of(4);
        let requested = requested.then(|| {
            let hosts = u32::from(subnet.broadcast()) - u32::from(subnet.network());
            Ipv4Addr::from(u32::from(subnet.network()) + ((r >> 16) as u32 % hosts))
        });
        // and an eighth a specific IPv6 address (some of them the gateway or taken)
        let ip6 = (r >> 48).is_multiple_of(8).then(|| {
            let base = u128::from(SUBNET6.parse::<ipnet::Ipv6Net>().expect("subnet").network());
            Ipv6Addr::from(base + u128::from((r >> 52) % 256))
        });
        let meta = LeaseMeta {
            netns: format!("ns-{container}"),
            ifname: "eth0".into(),
            host_ifname: format!("veth{}", r % CONTAINERS),
            mac: None,
            ip6,
        };
        match store.allocate(NET, &container, requested, meta) {
            Ok(_) => {
                if (r >> 24).is_multiple_of(2) {
                    let port = 10_000 + ((r >> 32) % 64) as u16;
                    match store.publish(PortProto::Tcp, port, NET, &container, 80) {
                        Ok(_) | Err(StoreError::PortInUse { .. }) => {}
                        Err(e) => panic!("child: publish: {e}"),
                    }
                }
            }
            Err(StoreError::AlreadyConnected { .. }) => {
                store
                    .release(NET, &container, true)
                    .expect("child: release");
            }
            Err(StoreError::Address(
                IpamError::Exhausted(_)
                | IpamError::InUse(_)
                | IpamError::Reserved(..)
                | IpamError::InUse6(_)
                | IpamError::Reserved6(..),
            ))
            | Err(StoreError::MacInUse { .. }) => {}
            Err(e) => panic!("child: allocate: {e}"),
        }
        if (r >> 40).is_multiple_of(8) {
            let port = 10_000 + ((r >> 44) % 64) as u16;
            store
                .unpublish(PortProto::Tcp, port)
                .expect("child: unpublish");
        }
        println!("ops {ops}");
    }
}

#[test]
fn kill9_never_duplicates_a_lease() {
    if std::env::var_os(ENV_DB).is_some() {
        return;
    }
    let seed: u64 = std::env::var("IPAM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0001);
    eprintln!("IPAM_CRASH_SEED={seed}");
    let mut rng = XorShift(seed | 1);
    // tmpfs when there is one: fsync is then cheap, so the child gets through many more
    // transactions per run and the kills land at many more points. A SIGKILL loses no page
    // cache, so what it tests is the same as on disk.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let path = dir.path().join("state.redb");
    {
        let s = Store::open(&path).unwrap();
        let mut spec = NetworkSpec::new(NET);
        spec.subnet = Some(SUBNET.parse().unwrap());
        spec.ipv6 = Some(Ipv6Spec {
            subnet: Some(SUBNET6.parse().unwrap()),
            gateway: None,
        });
        s.create_network(spec).unwrap();
    }
    let subnet: ipnet::Ipv4Net = SUBNET.parse().unwrap();
    let subnet6: ipnet::Ipv6Net = SUBNET6.parse().unwrap();
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let (mut child_ops, mut leases_checked, mut snapshots) = (0u64, 0usize, Vec::new());
    for kill in 0..KILLS {
        let mut child = Command::new(&exe)
            .args(["--exact", "child_loop", "--nocapture", "--test-threads=1"])
            .env(ENV_DB, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30 + rng.next() % 220));
        let early = child.try_wait().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            early.is_none(),
            "child exited by itself ({early:?}) before kill {kill}:\n{out}\n{err}"
        );
        child_ops += out
            .lines()
            .filter_map(|l| l.strip_prefix("ops ")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);

        let s = Store::open(&path)
            .unwrap_or_else(|e| panic!("store does not open after kill {kill}: {e}"));
        leases_checked += s
            .verify()
            .unwrap_or_else(|e| panic!("invariant broken after kill {kill}: {e}"));
        // the same checks spelled out, independent of `verify`
        let leases = s.leases(NET).unwrap();
        let mut ips: Vec<Ipv4Addr> = leases.iter().map(|(ip, _)| *ip).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(
            ips.len(),
            leases.len(),
            "duplicate address after kill {kill}"
        );
        let mut names: Vec<&str> = leases.iter().map(|(_, l)| l.container.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(
            names.len(),
            leases.len(),
            "container leased twice after kill {kill}"
        );
        for (ip, _) in &leases {
            assert!(subnet.contains(ip), "{ip} outside {subnet}");
            assert_ne!(*ip, Ipv4Addr::new(10, 77, 0, 1), "gateway leased");
        }
        let mut ip6s: Vec<Ipv6Addr> = leases
            .iter()
            .map(|(ip, l)| {
                l.ip6
                    .unwrap_or_else(|| panic!("{ip} without its IPv6 address after kill {kill}"))
            })
            .collect();
        ip6s.sort();
        ip6s.dedup();
        assert_eq!(ip6s.len(), leases.len(), "duplicate IPv6 after kill {kill}");
        for ip6 in &ip6s {
            assert!(subnet6.contains(ip6), "{ip6} outside {subnet6}");
            assert!(
                ![subnet6.network(), "fd77::1".parse().unwrap()].contains(ip6),
                "{ip6} is reserved"
            );
        }
        for (_, _, p) in s.published().unwrap() {
            assert!(
                leases
                    .iter()
                    .any(|(ip, l)| l.container == p.container && Some(*ip) == p.container_ip)
            );
        }
        snapshots.push(leases);
    }
    let distinct = {
        let mut v = snapshots.clone();
        v.dedup();
        v.len()
    };
    eprintln!(
        "{KILLS} kills in {:.1?}: child reported >= {child_ops} ops, {leases_checked} leases checked, {distinct} distinct lease sets",
        started.elapsed()
    );
    assert!(child_ops > 0, "the child never got going");
    assert!(distinct > 1, "the child never changed the state");
}
