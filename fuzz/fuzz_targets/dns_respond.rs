//! `dns::respond` and `dns::query_name` on arbitrary datagrams: no panic, and every answer is a
//! DNS message with the query's id, within the size the client can take.
#![no_main]

use dns::{Decision, MAX_UDP_PAYLOAD, Zone, query_name, respond};
use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn lookup(name: &str) -> Option<Vec<IpAddr>> {
    match name {
        "b1" => Some(vec![Ipv4Addr::new(172, 18, 0, 2).into()]),
        "web" => Some(vec![
            Ipv4Addr::new(172, 18, 0, 10).into(),
            Ipv4Addr::new(172, 18, 0, 11).into(),
            Ipv4Addr::new(172, 18, 0, 10).into(),
        ]),
        "db" => Some(vec![]),
        // More records than fit in any response: truncation.
        "many" => Some(
            (0..200u8)
                .map(|i| Ipv4Addr::new(172, 18, 1, i).into())
                .collect(),
        ),
        // The same with AAAA records, and both families (ANY).
        "many6" => Some(
            (0..200u16)
                .map(|i| Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i).into())
                .collect(),
        ),
        "mixed" => Some(
            (0..200u8)
                .flat_map(|i| {
                    [
                        Ipv4Addr::new(172, 18, 2, i).into(),
                        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 2, u16::from(i)).into(),
                    ]
                })
                .collect(),
        ),
        _ => None,
    }
}

fn check(query: &[u8], zone: &Zone) {
    let Decision::Answer(bytes) = respond(query, zone) else {
        return;
    };
    let msg = Message::from_vec(&bytes)
        .unwrap_or_else(|e| panic!("answer {bytes:02x?} does not parse: {e}"));
    let id = u16::from_be_bytes([query[0], query[1]]);
    assert_eq!(msg.metadata.id, id);
    let limit = if msg.edns.is_some() {
        usize::from(MAX_UDP_PAYLOAD)
    } else {
        512
    };
    assert!(bytes.len() <= limit, "answer of {} bytes", bytes.len());
}

fuzz_target!(|data: &[u8]| {
    let _ = query_name(data);
    check(
        data,
        &Zone {
            domain: Some("vswitch.internal"),
            lookup: &lookup,
        },
    );
    check(
        data,
        &Zone {
            domain: None,
            lookup: &lookup,
        },
    );
});
