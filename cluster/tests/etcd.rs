//! The cluster crate against a real etcd (`/usr/bin/etcd`, installed by `bash scripts/test.sh`):
//! networks and VNIs, concurrent allocation from two hosts, views, lease expiry and outages.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cluster::{Cluster, ClusterConfig, ClusterView, Error, NetworkRecord};
use crossbeam_channel::Receiver;

/// One etcd server on free local ports, killed (and its data removed) on drop.
struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client: u16,
    peer: u16,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    l.local_addr().expect("local address").port()
}

impl Etcd {
    /// Ports and a data directory, no server yet.
    fn stopped() -> Etcd {
        Etcd {
            child: None,
            dir: tempfile::tempdir().expect("temporary directory"),
            client: free_port(),
            peer: free_port(),
        }
    }

    fn start() -> Etcd {
        let mut e = Etcd::stopped();
        e.spawn();
        e
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    /// Starts etcd (again, with the same ports and data) and waits until it is healthy.
    fn spawn(&mut self) {
        let c = self.url();
        let p = format!("http://127.0.0.1:{}", self.peer);
        let data: PathBuf = self.dir.path().join("data");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log file");
        let child = Command::new("etcd")
            .args(["--name", "default", "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
            .args([
                "--listen-peer-urls",
                &p,
                "--initial-advertise-peer-urls",
                &p,
            ])
            .args(["--initial-cluster", &format!("default={p}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "etcd is not installed: run `bash scripts/test.sh` (it installs etcd-server) or `apt-get install etcd-server`"
            ),
            Err(e) => panic!("starting etcd: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.healthy() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        panic!("etcd did not become healthy within 10 s; its log:\n{log}");
    }

    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.client)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.contains("\"health\":\"true\"")
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A prefix no other test uses.
fn prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "/test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn config(etcd: &Etcd, prefix: &str, host: &str, last: u8) -> ClusterConfig {
    ClusterConfig {
        endpoints: vec![etcd.url()],
        prefix: prefix.to_string(),
        host: host.to_string(),
        vtep: Ipv4Addr::new(192, 168, 50, last),
        ttl: Duration::from_secs(2),
    }
}

fn net(name: &str, third: u8) -> NetworkRecord {
    NetworkRecord {
        name: name.to_string(),
        subnet: format!("10.77.{third}.0/24"),
        gateway: Ipv4Addr::new(10, 77, third, 1),
        vni: 0,
        icc: true,
        internal: false,
        created_by: "h1".to_string(),
    }
}

/// Waits (bounded) for a view on `rx` that satisfies `ok`.
fn wait_view(
    rx: &Receiver<ClusterView>,
    within: Duration,
    ok: impl Fn(&ClusterView) -> bool,
) -> ClusterView {
    let deadline = Instant::now() + within;
    let mut last = None;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(v) if ok(&v) => return v,
            Ok(v) => last = Some(v),
            Err(_) => break,
        }
    }
    panic!("no matching view within {within:?}; last one: {last:#?}");
}

#[test]
fn config_is_checked_and_an_absent_etcd_is_not_fatal() {
    let etcd_less = ClusterConfig {
        endpoints: vec![format!("http://127.0.0.1:{}", free_port())],
        prefix: prefix(),
        host: "h1".into(),
        vtep: Ipv4Addr::new(192, 168, 50, 1),
        ttl: Duration::from_secs(2),
    };
    for bad in [
        ClusterConfig {
            endpoints: vec![],
            ..etcd_less.clone()
        },
        ClusterConfig {
            host: String::new(),
            ..etcd_less.clone()
        },
        ClusterConfig {
            ttl: Duration::from_secs(1),
            ..etcd_less.clone()
        },
    ] {
        assert!(matches!(Cluster::connect(bad), Err(Error::Config(_))));
    }
    let t = Instant::now();
    let c = Cluster::connect(etcd_less).expect("connect does not need etcd up");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "connect took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let err = c.view().expect_err("no etcd");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("--cluster"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(4));
    c.close();
    c.close();
}

#[test]
fn a_host_that_joined_before_etcd_ran_catches_up() {
    let mut etcd = Etcd::stopped();
    let p = prefix();
    let h1 = Cluster::connect(config(&etcd, &p, "h1", 1)).expect("connect without etcd");
    let rx = h1.subscribe();
    etcd.spawn();
    let v = wait_view(&rx, Duration::from_secs(5), |v| v.hosts.len() == 1);
    assert_eq!(v.hosts[0].host, "h1");
    h1.create_network(net("blue", 0)).expect("create");
    assert_eq!(
        h1.allocate("blue", "a", None, None).expect("allocate"),
        Ipv4Addr::new(10, 77, 0, 2)
    );
}

#[test]
fn networks_vnis_and_refusal_while_in_use() {
    let etcd = Etcd::start();
    let p = prefix();
    let h1 = Cluster::connect(config(&etcd, &p, "h1", 1)).expect("connect h1");
    let h2 = Cluster::connect(config(&etcd, &p, "h2", 2)).expect("connect h2");
    let blue = h1.create_network(net("blue", 0)).expect("create blue");
    assert_eq!(blue.vni, 256);
    let red = h2.create_network(net("red", 1)).expect("create red");
    assert_eq!(red.vni, 257);
    assert!(
        matches!(h2.create_network(net("blue", 2)), Err(Error::NetworkExists(n)) if n == "blue")
    );
    let mut bad = net("bad", 3);
    bad.subnet = "10.77.3.0/33".into();
    assert!(matches!(h1.create_network(bad), Err(Error::Invalid(_))));
    let mut bad = net("bad", 3);
    bad.gateway = Ipv4Addr::new(10, 99, 0, 1);
    assert!(matches!(h1.create_network(bad), Err(Error::Invalid(_))));

    assert!(matches!(
        h1.allocate("nope", "c", None, None),
        Err(Error::NoSuchNetwork(_))
    ));
    let ip = h1.allocate("blue", "c1", None, None).expect("allocate");
    assert_eq!(ip, Ipv4Addr::new(10, 77, 0, 2));
    let gw = Some(Ipv4Addr::new(10, 77, 0, 1));
    assert!(matches!(
        h2.allocate("blue", "c2", None, gw),
        Err(Error::Invalid(_))
    ));
    assert!(
        matches!(h2.allocate("blue", "c2", None, Some(ip)), Err(Error::AddressInUse(a)) if a == ip)
    );
    let wanted = Ipv4Addr::new(10, 77, 0, 200);
    assert_eq!(
        h2.allocate("blue", "c2", Some("02:00:00:00:00:c2"), Some(wanted))
            .expect("requested"),
        wanted
    );
    // Another host's endpoint is neither released nor claimed by h1.
    h1.release("blue", wanted)
        .expect("release of another host's address is a no-op");
    assert!(matches!(
        h1.claim("blue", "x", "02:00:00:00:00:01", wanted),
        Err(Error::AddressInUse(_))
    ));
    h1.claim("blue", "c1", "02:42:0a:4d:00:02", ip)
        .expect("claim own");

    let view = h2.view().expect("view");
    assert_eq!(
        view.networks
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        ["blue", "red"]
    );
    assert_eq!(view.endpoints.len(), 2);
    assert_eq!(view.endpoints[0].mac, "02:42:0a:4d:00:02");
    assert_eq!(view.endpoints[0].host, "h1");
    assert_eq!(view.endpoints[1].mac, "02:00:00:00:00:c2");
    assert_eq!(view.endpoints[1].vtep, Ipv4Addr::new(192, 168, 50, 2));
    assert_eq!(view.hosts.len(), 2);

    assert!(matches!(
        h2.delete_network("blue"),
        Err(Error::InUse { endpoints: 2, .. })
    ));
    h1.release("blue", ip).expect("release");
    h2.release("blue", wanted).expect("release");
    h2.release("blue", wanted).expect("release twice");
    h2.delete_network("blue").expect("delete blue");
    assert!(matches!(
        h2.delete_network("blue"),
        Err(Error::NoSuchNetwork(_))
    ));
    // The freed VNI is the lowest free one again.
    assert_eq!(h1.create_network(net("green", 4)).expect("green").vni, 256);

    // Garbage in etcd is skipped, not fatal.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([etcd.url()], None)
            .await
            .expect("raw client");
        c.put(format!("{p}/networks/junk"), "{not json", None)
            .await
            .expect("put");
        c.put(format!("{p}/endpoints/green/10.77.4.9"), "[]", None)
            .await
            .expect("put");
    });
    let view = h1.view().expect("view with garbage");
    assert_eq!(
        view.networks
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        ["green", "red"]
    );
    assert!(view.endpoints.is_empty());
}

#[test]
fn two_hosts_allocating_concurrently_get_distinct_addresses() {
    let etcd = Etcd::start();
    let p = prefix();
    let h1 = Cluster::connect(config(&etcd, &p, "h1", 1)).expect("connect h1");
    let h2 = Cluster::connect(config(&etcd, &p, "h2", 2)).expect("connect h2");
    h1.create_network(net("blue", 0)).expect("create");
    let ips: Vec<Ipv4Addr> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (host, c) in [("h1", &h1), ("h2", &h2)] {
            for t in 0..5 {
                handles.push(s.spawn(move || {
                    (0..4)
                        .map(|i| {
                            c.allocate("blue", &format!("{host}-{t}-{i}"), None, None)
                                .expect("allocate")
                        })
                        .collect::<Vec<_>>()
                }));
            }
        }
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(ips.len(), 40);
    let distinct: BTreeSet<Ipv4Addr> = ips.iter().copied().collect();
    assert_eq!(distinct.len(), 40, "{ips:?}");
    let view = h1.view().expect("view");
    assert_eq!(view.endpoints.len(), 40);
    assert_eq!(view.endpoints.iter().filter(|e| e.host == "h1").count(), 20);

    // Networks created at once from both hosts get distinct VNIs.
    let vnis: BTreeSet<u32> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10u8)
            .map(|i| {
                let c = if i % 2 == 0 { &h1 } else { &h2 };
                s.spawn(move || {
                    c.create_network(net(&format!("n{i}"), 10 + i))
                        .expect("create")
                        .vni
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(vnis.len(), 10, "{vnis:?}");
    assert!(!vnis.contains(&256), "blue has 256: {vnis:?}");
}

#[test]
fn subscribers_see_changes_and_close_removes_a_host_at_once() {
    let etcd = Etcd::start();
    let p = prefix();
    let h1 = Cluster::connect(config(&etcd, &p, "h1", 1)).expect("connect h1");
    let h2 = Cluster::connect(config(&etcd, &p, "h2", 2)).expect("connect h2");
    let rx = h2.subscribe();
    h2.create_network(net("blue", 0)).expect("create");
    let ip = h1.allocate("blue", "web", None, None).expect("allocate");
    let v = wait_view(&rx, Duration::from_secs(1), |v| {
        v.endpoints.iter().any(|e| e.ip == ip && e.host == "h1")
    });
    assert!(
        v.hosts
            .iter()
            .any(|h| h.host == "h1" && h.vtep == Ipv4Addr::new(192, 168, 50, 1))
    );
    assert_eq!(v.endpoints[0].mac, packet::MacAddr::docker(ip).to_string());
    // A late subscriber gets the newest view at once.
    let late = h2.subscribe();
    wait_view(&late, Duration::from_secs(1), |v| v.endpoints.len() == 1);

    h1.close();
    h1.close();
    wait_view(&rx, Duration::from_secs(1), |v| {
        v.endpoints.is_empty() && v.hosts.iter().all(|h| h.host != "h1")
    });
    assert!(matches!(
        h1.allocate("blue", "x", None, None),
        Err(Error::Closed)
    ));
}

#[test]
fn a_crashed_host_expires_with_its_ttl() {
    let etcd = Etcd::start();
    let p = prefix();
    let h1 = Cluster::connect(config(&etcd, &p, "h1", 1)).expect("connect h1");
    let h2 = Cluster::connect(config(&etcd, &p, "h2", 2)).expect("connect h2");
    h1.create_network(net("blue", 0)).expect("create");
    h1.allocate("blue", "web", None, None).expect("allocate");
    let rx = h2.subscribe();
    drop(h1);
    // Not revoked: still there right after the drop.
    assert_eq!(h2.view().expect("view").endpoints.len(), 1);
    let t = Instant::now();
    wait_view(&rx, Duration::from_secs(8), |v| {
        v.endpoints.is_empty() && v.hosts.iter().all(|h| h.host != "h1")
    });
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "gone too soon: {:?}",
        t.elapsed()
    );
}

#[test]
fn an_etcd_outage_is_reported_and_survived() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let mut etcd = Etcd::start();
    let p = prefix();
    let h1 = Cluster::connect(config(&etcd, &p, "h1", 1)).expect("connect h1");
    h1.create_network(net("blue", 0)).expect("create");
    let first = h1.allocate("blue", "a", None, None).expect("allocate");
    let rx = h1.subscribe();
    wait_view(&rx, Duration::from_secs(1), |v| v.endpoints.len() == 1);

    etcd.kill();
    let t = Instant::now();
    let err = h1
        .allocate("blue", "b", None, None)
        .expect_err("etcd is down");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    assert!(matches!(h1.view(), Err(Error::Unavailable { .. })));
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t.elapsed()
    );

    while rx.try_recv().is_ok() {}
    etcd.spawn();
    let v = wait_view(&rx, Duration::from_secs(10), |v| v.endpoints.len() == 1);
    assert_eq!(v.endpoints[0].ip, first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let second = loop {
        match h1.allocate("blue", "b", None, None) {
            Ok(ip) => break ip,
            Err(e) if Instant::now() < deadline => {
                eprintln!("allocate after restart: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("allocate after the restart: {e}"),
        }
    };
    assert_ne!(second, first);
    wait_view(&rx, Duration::from_secs(1), |v| v.endpoints.len() == 2);
}

#[test]
fn a_lost_lease_is_replaced_and_endpoints_put_back_but_never_over_another_host() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let etcd = Etcd::start();
    let p = prefix();
    let h1 = Cluster::connect(config(&etcd, &p, "h1", 1)).expect("connect h1");
    let h2 = Cluster::connect(config(&etcd, &p, "h2", 2)).expect("connect h2");
    h1.create_network(net("blue", 0)).expect("create");
    let kept = h1.allocate("blue", "kept", None, None).expect("allocate");
    let lost = h1.allocate("blue", "lost", None, None).expect("allocate");
    let rx = h2.subscribe();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([etcd.url()], None)
            .await
            .expect("raw client");
        let host = c.get(format!("{p}/hosts/h1"), None).await.expect("get");
        let lease = host.kvs().first().expect("h1's host record").lease();
        c.lease_revoke(lease).await.expect("revoke");
    });
    // h2 takes one of h1's addresses before h1 notices its lease is gone.
    h2.allocate("blue", "thief", None, Some(lost))
        .expect("h2 takes the address");
    // Old views (before the revoke) have `lost` on h1; only the republished one fits.
    wait_view(&rx, Duration::from_secs(5), |v| {
        let holder = |ip| {
            v.endpoints
                .iter()
                .find(|e| e.ip == ip)
                .map(|e| e.host.as_str())
        };
        v.hosts.iter().any(|h| h.host == "h1")
            && holder(kept) == Some("h1")
            && holder(lost) == Some("h2")
    });
    h1.release("blue", lost)
        .expect("release is a no-op for another host's address");
    let v = h2.view().expect("view");
    assert_eq!(
        v.endpoints
            .iter()
            .find(|e| e.ip == lost)
            .map(|e| e.host.as_str()),
        Some("h2")
    );
}
