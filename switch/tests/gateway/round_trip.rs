//! Property tests of masquerade: a packet out and the far host's reply back are exact reverses.

use super::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    // A packet leaving through masquerade and the reply the far host sends to what it saw
    // come back to the container as the exact reverse of the original tuple, with valid
    // checksums (checked by etherparse in `send`).
    #[test]
    fn masquerade_and_reply_round_trip(host in 2u8..250, far in 1u8..250, sport in 1u16.., dport in 1u16.., proto in 0u8..3) {
        let mut r = Rig::new();
        let c = ip(172, 17, 0, host);
        let remote = ip(198, 51, 100, far);
        let frame = match proto {
            0 => build::udp(MacAddr::docker(c), gw_mac(17), c, remote, sport, dport, b"payload"),
            1 => build::tcp(MacAddr::docker(c), gw_mac(17), c, remote, sport, dport, 1, 0, tcp_flags::SYN, b""),
            _ => build::icmp_echo(MacAddr::docker(c), gw_mac(17), c, remote, true, sport, 1, b"ping"),
        };
        let out = r.send(C1, frame);
        prop_assert_eq!(out.len(), 1);
        let (s, d, sp, dp, _) = fields(&out[0].data);
        prop_assert_eq!((s, d), (Ipv4Addr::from(UPLINK_IP), remote));
        let reply = match proto {
            0 => build::udp(ROUTER, uplink_mac(), remote, s, dp, sp, b"answer"),
            1 => build::tcp(ROUTER, uplink_mac(), remote, s, dp, sp, 9, 2, tcp_flags::SYN | tcp_flags::ACK, b""),
            _ => build::icmp_echo(ROUTER, uplink_mac(), remote, s, false, sp, 1, b"ping"),
        };
        let back = r.send(UP, reply);
        prop_assert_eq!(back.len(), 1);
        prop_assert_eq!(back[0].port, C1);
        let (s2, d2, sp2, dp2, _) = fields(&back[0].data);
        if proto == 2 {
            prop_assert_eq!((s2, d2, sp2), (remote, c, sport));
        } else {
            prop_assert_eq!((s2, d2, sp2, dp2), (remote, c, dport, sport));
        }
    }
}
