//! The embedded DNS at the gateway: names answered, the rest forwarded or refused.

use super::*;
use switch::dns_gateway::DnsTable;

fn query(id: u16, name: &str) -> Vec<u8> {
    build::dns_query(id, name, 1)
}

fn rcode(frame: &[u8]) -> u8 {
    frame[42 + 3] & 0x0f
}

#[test]
fn answers_own_names_forwards_others_and_keeps_networks_apart() {
    let topo = topo().replace(
        "[[publish]]",
        "[dns]\nupstream = [\"198.51.100.53\"]\n\n[[publish]]",
    );
    let mut r = Rig::with(&topo);
    let bridge = r.p.topology().network_by_name("bridge").unwrap();
    let backend = r.p.topology().network_by_name("backend").unwrap();
    r.p.set_dns_table(
        bridge,
        Some(DnsTable::new([("web".to_string(), ip(172, 17, 0, 3))])),
    );
    r.p.set_dns_table(backend, Some(DnsTable::default()));
    let c1 = ip(172, 17, 0, 2);
    let gw = ip(172, 17, 0, 1);
    let out = r.send(
        C1,
        build::udp(
            MacAddr::docker(c1),
            gw_mac(17),
            c1,
            gw,
            5353,
            53,
            &query(7, "WEB"),
        ),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].port, C1);
    let (s, d, sp, dp, _) = fields(&out[0].data);
    assert_eq!((s, d, sp, dp), (gw, c1, 53, 5353));
    let f = &out[0].data;
    assert_eq!(&f[42..44], &7u16.to_be_bytes());
    assert_eq!(rcode(f), 0);
    assert_eq!(&f[f.len() - 4..], &[172, 17, 0, 3], "the A record");
    let out = r.send(
        C1,
        build::udp(
            MacAddr::docker(c1),
            gw_mac(17),
            c1,
            gw,
            5353,
            53,
            &query(8, "nope.vswitch.internal"),
        ),
    );
    assert_eq!(rcode(&out[0].data), 3, "NXDOMAIN inside the domain");
    // Another network's gateway does not know this network's names.
    let b1 = ip(172, 18, 0, 2);
    let out = r.send(
        B1,
        build::udp(
            MacAddr::docker(b1),
            gw_mac(18),
            b1,
            ip(172, 18, 0, 1),
            5353,
            53,
            &query(9, "web.vswitch.internal"),
        ),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(rcode(&out[0].data), 3);
    // Anything else goes to the upstream resolver, masqueraded, and the answer comes back
    // from the gateway.
    let out = r.send(
        C1,
        build::udp(
            MacAddr::docker(c1),
            gw_mac(17),
            c1,
            gw,
            5353,
            53,
            &query(10, "example.org"),
        ),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].port, UP);
    let (s, d, sp, dp, _) = fields(&out[0].data);
    assert_eq!(
        (s, d, dp),
        (Ipv4Addr::from(UPLINK_IP), ip(198, 51, 100, 53), 53)
    );
    let answer = build::udp(
        ROUTER,
        uplink_mac(),
        ip(198, 51, 100, 53),
        UPLINK_IP.into(),
        53,
        sp,
        &query(10, "example.org"),
    );
    let back = r.send(UP, answer);
    assert_eq!(back.len(), 1);
    let (s, d, sp, dp, _) = fields(&back[0].data);
    assert_eq!((s, d, sp, dp), (gw, c1, 53, 5353));
    // Garbage to port 53 is a counted drop.
    assert!(
        r.send(
            C1,
            build::udp(MacAddr::docker(c1), gw_mac(17), c1, gw, 5353, 53, b"\x01")
        )
        .is_empty()
    );
    assert_eq!(r.drops(C1, DropReason::DnsDropped), 1);
}
