//! TCP connection state machine, modelled on Linux `nf_conntrack_proto_tcp`
//! without window tracking.
//!
//! Owns the per-connection TCP state ([`TcpState`]) and the little sequence
//! bookkeeping needed to judge RSTs and handshakes ([`TcpTrack`]). The
//! transition table is Linux's (`tcp_conntracks[][][]`), minus
//! `SYN_SENT2` (simultaneous open) and minus loose pickup (an entry is only
//! ever started by a SYN). Invariants:
//! - [`step`] never changes `TcpTrack` for a packet it judges invalid, so an
//!   invalid packet can neither advance the state nor poison the sequence
//!   numbers used for later RST checks;
//! - sequence comparisons are modulo 2^32 (`after`), never plain `<`.

use crate::tuple::Direction;

/// TCP conntrack states, named and printed as Linux does (`SYN_SENT`, ...).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    /// Entry created by `insert`, first packet not tracked yet.
    None,
    /// SYN seen in the original direction.
    SynSent,
    /// SYN/ACK seen in the reply direction.
    SynRecv,
    /// Handshake completed.
    Established,
    /// One FIN seen.
    FinWait,
    /// The first FIN was acknowledged (Linux naming).
    CloseWait,
    /// FINs seen in both directions, waiting for the last ACK.
    LastAck,
    /// Last ACK seen.
    TimeWait,
    /// Closed by an accepted RST.
    Close,
}

impl TcpState {
    /// Linux spelling, e.g. `"SYN_SENT"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
        }
    }
}

impl std::fmt::Display for TcpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The TCP header fields the tracker needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSegment {
    /// SYN flag.
    pub syn: bool,
    /// ACK flag.
    pub ack: bool,
    /// FIN flag.
    pub fin: bool,
    /// RST flag.
    pub rst: bool,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number (meaningful only with `ack`).
    pub ack_no: u32,
    /// TCP payload length in bytes.
    pub payload_len: u32,
}

impl TcpSegment {
    /// FIN bit of the TCP flags byte.
    pub const FLAG_FIN: u8 = 0x01;
    /// SYN bit.
    pub const FLAG_SYN: u8 = 0x02;
    /// RST bit.
    pub const FLAG_RST: u8 = 0x04;
    /// ACK bit.
    pub const FLAG_ACK: u8 = 0x10;

    /// Builds a segment from the raw flags byte (offset 13 of the header).
    pub const fn from_flags(flags: u8, seq: u32, ack_no: u32, payload_len: u32) -> Self {
        TcpSegment {
            syn: flags & Self::FLAG_SYN != 0,
            ack: flags & Self::FLAG_ACK != 0,
            fin: flags & Self::FLAG_FIN != 0,
            rst: flags & Self::FLAG_RST != 0,
            seq,
            ack_no,
            payload_len,
        }
    }

    /// Sequence number just past this segment (SYN and FIN count as one).
    pub const fn end_seq(&self) -> u32 {
        self.seq
            .wrapping_add(self.payload_len)
            .wrapping_add(self.syn as u32)
            .wrapping_add(self.fin as u32)
    }
}

/// Whether a packet with no entry may create one (TCP: a plain SYN only).
pub fn tcp_may_create(seg: &TcpSegment) -> bool {
    seg.syn && !seg.ack && !seg.rst && !seg.fin
}

/// `a` is strictly after `b` in sequence space (RFC 1982 style).
const fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// Per-connection sequence bookkeeping (both directions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TcpTrack {
    /// Highest `end_seq` sent, per direction.
    pub(crate) next_seq: [u32; 2],
    /// Highest ACK number sent, per direction.
    pub(crate) last_ack: [u32; 2],
    /// Initial sequence number of the original direction.
    pub(crate) isn: u32,
    pub(crate) seen: [bool; 2],
    pub(crate) ack_seen: [bool; 2],
    /// End of an original-direction SYN we let through on a live entry: a
    /// SYN/ACK acknowledging it means both ends restarted and we resync.
    pub(crate) ignored_syn_end: Option<u32>,
    /// In SYN_SENT: the ACK number of a reply-direction ACK (a server's challenge ACK for a
    /// connection it still holds); the client's RST answering it carries this sequence.
    pub(crate) challenge_ack: Option<u32>,
}

impl TcpTrack {
    /// `ack_no` acknowledges the original SYN (TFO data may or may not be acked).
    fn acks_syn(&self, ack_no: u32) -> bool {
        let off = ack_no.wrapping_sub(self.isn);
        off >= 1 && off <= self.next_seq[0].wrapping_sub(self.isn)
    }

    /// An RST is exact when its seq is what the receiver expects next: the
    /// sender's next sequence number, or the last ACK the peer sent.
    fn rst_exact(&self, dir: Direction, seq: u32) -> bool {
        let d = dir.index();
        let o = dir.opposite().index();
        (self.seen[d] && seq == self.next_seq[d]) || (self.ack_seen[o] && seq == self.last_ack[o])
    }

    /// Records an accepted segment. `reset` overwrites `next_seq` (new ISN).
    fn record(&mut self, dir: Direction, seg: &TcpSegment, reset: bool) {
        let d = dir.index();
        // An RST carries no data the peer will acknowledge.
        if !seg.rst {
            let end = seg.end_seq();
            if reset || !self.seen[d] || after(end, self.next_seq[d]) {
                self.next_seq[d] = end;
            }
        }
        if seg.ack && (!self.ack_seen[d] || after(seg.ack_no, self.last_ack[d])) {
            self.last_ack[d] = seg.ack_no;
            self.ack_seen[d] = true;
        }
        self.seen[d] = true;
        self.ignored_syn_end = None;
    }

    /// A packet has been accepted in the reply direction.
    pub(crate) fn seen_reply(&self) -> bool {
        self.seen[1]
    }

    /// The 21-byte form the table stores: five words and a flags byte, for a connection in
    /// `state`. Which words are kept depends on the state, because no state needs all seven
    /// fields (see [`PackedTrack`]).
    pub(crate) fn pack(&self, state: TcpState) -> PackedTrack {
        let mut flags = u8::from(self.seen[0])
            | u8::from(self.seen[1]) << 1
            | u8::from(self.ack_seen[0]) << 2
            | u8::from(self.ack_seen[1]) << 3;
        let (w3, w4) = if handshaking(state) {
            flags |= u8::from(self.challenge_ack.is_some()) << 4;
            (self.isn, self.challenge_ack.unwrap_or(0))
        } else {
            flags |= u8::from(self.ignored_syn_end.is_some()) << 4;
            (self.last_ack[1], self.ignored_syn_end.unwrap_or(0))
        };
        PackedTrack {
            words: [self.next_seq[0], self.next_seq[1], self.last_ack[0], w3, w4],
            flags,
        }
    }

    /// Inverse of [`pack`](Self::pack) for the same `state`.
    pub(crate) fn unpack(p: &PackedTrack, state: TcpState) -> TcpTrack {
        let [n0, n1, a0, w3, w4] = p.words;
        let f = p.flags;
        let bit = |i: u8| f & (1 << i) != 0;
        let (last_ack1, isn, challenge_ack, ignored_syn_end) = if handshaking(state) {
            (0, w3, bit(4).then_some(w4), None)
        } else {
            (w3, 0, None, bit(4).then_some(w4))
        };
        TcpTrack {
            next_seq: [n0, n1],
            last_ack: [a0, last_ack1],
            isn,
            seen: [bit(0), bit(1)],
            ack_seen: [bit(2), bit(3)],
            ignored_syn_end,
            challenge_ack,
        }
    }
}

/// Before the SYN/ACK: the states in which `isn` and `challenge_ack` are read.
const fn handshaking(state: TcpState) -> bool {
    matches!(state, TcpState::None | TcpState::SynSent)
}

/// [`TcpTrack`] as stored in a table slot: 21 bytes instead of 40.
///
/// No state reads all seven fields. `isn` and `challenge_ack` are read only in NONE and
/// SYN_SENT, `ignored_syn_end` only after it; and before the SYN/ACK nothing has been
/// recorded for the reply direction (`step` records only accepted segments, and every
/// accepted reply-direction segment leaves SYN_SENT), so `last_ack[1]` is still 0 and
/// `ignored_syn_end` still `None` there (it is only set after SYN_SENT, and NONE -> SYN_SENT
/// resets the whole track). Hence `unpack(pack(t, s), s)` behaves exactly like `t` under
/// `step` from state `s`: it equals `t` in NONE / SYN_SENT, and elsewhere differs only in
/// fields no later step reads (`isn`, `challenge_ack`, which come back as 0 / `None`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PackedTrack {
    /// `next_seq[0]`, `next_seq[1]`, `last_ack[0]`, then `isn`, `challenge_ack` (NONE and
    /// SYN_SENT) or `last_ack[1]`, `ignored_syn_end` (every later state).
    pub(crate) words: [u32; 5],
    /// `seen[0..2]`, `ack_seen[0..2]`, then whether the last word holds a value (`Some`).
    pub(crate) flags: u8,
}

/// Result of feeding one segment to the state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Drop-worthy: state, sequence numbers and timeout untouched.
    Invalid,
    /// Let through without state change or timeout refresh (Linux `sIG`).
    Ignore,
    /// A SYN on a closed entry: the caller must replace the entry.
    Reopen,
    /// Accepted; move to `state`, refreshing the timeout when `refresh`.
    Accept { state: TcpState, refresh: bool },
}

/// Which row of the Linux table a segment selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Syn,
    SynAck,
    Fin,
    Ack,
    Rst,
}

fn kind(seg: &TcpSegment) -> Option<Kind> {
    if seg.syn && (seg.fin || seg.rst) {
        return None;
    }
    Some(if seg.rst {
        Kind::Rst
    } else if seg.syn {
        if seg.ack { Kind::SynAck } else { Kind::Syn }
    } else if seg.fin {
        Kind::Fin
    } else if seg.ack {
        Kind::Ack
    } else {
        return None;
    })
}

/// Feeds one segment travelling in `dir` to a connection in `state`.
pub(crate) fn step(
    state: TcpState,
    trk: &mut TcpTrack,
    dir: Direction,
    seg: &TcpSegment,
) -> Outcome {
    use TcpState as S;
    let Some(kind) = kind(seg) else {
        return Outcome::Invalid;
    };
    let orig = dir == Direction::Original;
    let accept = |state| Outcome::Accept {
        state,
        refresh: true,
    };
    let out = match kind {
        Kind::Syn if orig => match state {
            S::None => {
                *trk = TcpTrack {
                    isn: seg.seq,
                    ..TcpTrack::default()
                };
                trk.record(dir, seg, true);
                return accept(S::SynSent);
            }
            S::SynSent => {
                // Retransmission (or a new ISN): Linux does not renew the
                // timeout, so a SYN flood on one tuple cannot pin the entry.
                trk.isn = seg.seq;
                trk.record(dir, seg, true);
                return Outcome::Accept {
                    state: S::SynSent,
                    refresh: false,
                };
            }
            S::TimeWait | S::Close => Outcome::Reopen,
            _ => {
                // Our entry may be stale (peer restarted): let the SYN reach
                // the server so it answers with a SYN/ACK or challenge ACK.
                trk.ignored_syn_end = Some(seg.end_seq());
                Outcome::Ignore
            }
        },
        Kind::Syn => {
            if state == S::SynSent {
                Outcome::Ignore
            } else {
                Outcome::Invalid
            }
        }
        Kind::SynAck if orig => Outcome::Invalid,
        Kind::SynAck => match state {
            S::None => Outcome::Invalid,
            S::SynSent => {
                if trk.acks_syn(seg.ack_no) {
                    trk.record(dir, seg, true);
                    return accept(S::SynRecv);
                }
                Outcome::Invalid
            }
            _ => match trk.ignored_syn_end {
                Some(end) if end == seg.ack_no => {
                    // Both ends restarted the connection; resync to it.
                    let syn_end = end;
                    trk.record(dir, seg, true);
                    trk.next_seq[0] = syn_end;
                    trk.isn = syn_end.wrapping_sub(1);
                    return accept(S::SynRecv);
                }
                _ => Outcome::Ignore,
            },
        },
        Kind::Fin => match state {
            S::None | S::SynSent => Outcome::Invalid,
            S::SynRecv | S::Established => accept(S::FinWait),
            S::FinWait | S::CloseWait | S::LastAck => accept(S::LastAck),
            S::TimeWait => accept(S::TimeWait),
            S::Close => accept(S::Close),
        },
        Kind::Ack => match state {
            S::None => Outcome::Invalid,
            S::SynSent => {
                if orig {
                    Outcome::Invalid
                } else {
                    trk.challenge_ack = Some(seg.ack_no);
                    Outcome::Ignore
                }
            }
            S::SynRecv => accept(if orig { S::Established } else { S::SynRecv }),
            S::Established => accept(S::Established),
            S::FinWait | S::CloseWait => accept(S::CloseWait),
            S::LastAck | S::TimeWait => accept(S::TimeWait),
            S::Close => accept(S::Close),
        },
        Kind::Rst => match state {
            S::None => Outcome::Invalid,
            // The client gives up its own connection attempt. Typically it answers a challenge
            // ACK from a server whose socket for this tuple is still in TIME_WAIT; the RST must
            // reach the server to end that TIME_WAIT (Linux, without tcp_rfc1337), or every
            // retransmitted SYN meets the same challenge ACK until it times out. Linux's table
            // takes SYN_SENT + RST (original direction) to CLOSE as well.
            // Only an RST a real client would send closes: one answering the challenge ACK
            // (its sequence is that ACK's number), or one in sequence with its own SYN.
            S::SynSent if orig => {
                if trk.challenge_ack == Some(seg.seq) || seg.seq == trk.isn.wrapping_add(1) {
                    accept(S::Close)
                } else {
                    Outcome::Ignore
                }
            }
            S::SynSent => {
                if seg.ack && trk.acks_syn(seg.ack_no) {
                    accept(S::Close)
                } else {
                    Outcome::Invalid
                }
            }
            _ => {
                if trk.rst_exact(dir, seg.seq) {
                    accept(S::Close)
                } else {
                    Outcome::Invalid
                }
            }
        },
    };
    if let Outcome::Accept { .. } = out {
        trk.record(dir, seg, false);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Original as O, Reply as R};

    fn seg(flags: u8, seq: u32, ack_no: u32, len: u32) -> TcpSegment {
        TcpSegment::from_flags(flags, seq, ack_no, len)
    }
    const SYN: u8 = TcpSegment::FLAG_SYN;
    const ACK: u8 = TcpSegment::FLAG_ACK;
    const FIN: u8 = TcpSegment::FLAG_FIN;
    const RST: u8 = TcpSegment::FLAG_RST;

    fn state_of(o: Outcome) -> TcpState {
        match o {
            Outcome::Accept { state, .. } => state,
            other => panic!("expected accept, got {other:?}"),
        }
    }

    /// Runs the handshake; client ISN 1000, server ISN 5000.
    fn established() -> (TcpState, TcpTrack) {
        let mut t = TcpTrack::default();
        let s = state_of(step(TcpState::None, &mut t, O, &seg(SYN, 1000, 0, 0)));
        let s = state_of(step(s, &mut t, R, &seg(SYN | ACK, 5000, 1001, 0)));
        let s = state_of(step(s, &mut t, O, &seg(ACK, 1001, 5001, 0)));
        assert_eq!(s, TcpState::Established);
        (s, t)
    }

    #[test]
    fn may_create_only_plain_syn() {
        assert!(tcp_may_create(&seg(SYN, 1, 0, 0)));
        assert!(!tcp_may_create(&seg(SYN | ACK, 1, 0, 0)));
        assert!(!tcp_may_create(&seg(ACK, 1, 0, 0)));
        assert!(!tcp_may_create(&seg(SYN | RST, 1, 0, 0)));
        assert!(!tcp_may_create(&seg(SYN | FIN, 1, 0, 0)));
        assert!(!tcp_may_create(&seg(0, 1, 0, 0)));
    }

    #[test]
    fn end_seq_counts_syn_fin_and_wraps() {
        assert_eq!(seg(SYN, 10, 0, 0).end_seq(), 11);
        assert_eq!(seg(FIN | ACK, 10, 0, 5).end_seq(), 16);
        assert_eq!(seg(ACK, u32::MAX, 0, 2).end_seq(), 1);
        assert!(after(1, u32::MAX));
        assert!(!after(u32::MAX, 1));
    }

    #[test]
    fn bad_flag_combinations_are_invalid_and_change_nothing() {
        let (s, t) = established();
        for flags in [0, SYN | FIN, SYN | RST, SYN | FIN | ACK] {
            let mut t2 = t;
            assert_eq!(
                step(s, &mut t2, O, &seg(flags, 1001, 5001, 0)),
                Outcome::Invalid
            );
            assert_eq!(t2, t);
        }
    }

    #[test]
    fn synack_must_ack_the_syn() {
        let mut t = TcpTrack::default();
        let s = state_of(step(TcpState::None, &mut t, O, &seg(SYN, 1000, 0, 0)));
        assert_eq!(
            step(s, &mut t, R, &seg(SYN | ACK, 5000, 77, 0)),
            Outcome::Invalid
        );
        assert_eq!(
            state_of(step(s, &mut t, R, &seg(SYN | ACK, 5000, 1001, 0))),
            TcpState::SynRecv
        );
    }

    #[test]
    fn syn_retransmit_does_not_refresh() {
        let mut t = TcpTrack::default();
        let s = state_of(step(TcpState::None, &mut t, O, &seg(SYN, 1000, 0, 0)));
        assert_eq!(
            step(s, &mut t, O, &seg(SYN, 1000, 0, 0)),
            Outcome::Accept {
                state: TcpState::SynSent,
                refresh: false
            }
        );
    }

    #[test]
    fn first_packet_must_be_syn() {
        let mut t = TcpTrack::default();
        assert_eq!(
            step(TcpState::None, &mut t, O, &seg(ACK, 1, 1, 0)),
            Outcome::Invalid
        );
        assert_eq!(
            step(TcpState::None, &mut t, R, &seg(SYN, 1, 0, 0)),
            Outcome::Invalid
        );
        assert_eq!(
            step(TcpState::None, &mut t, O, &seg(RST, 1, 0, 0)),
            Outcome::Invalid
        );
    }

    #[test]
    fn data_advances_next_seq_and_rst_after_data_is_exact() {
        let (s, mut t) = established();
        let s = state_of(step(s, &mut t, O, &seg(ACK, 1001, 5001, 100)));
        // A retransmission of old data must not move next_seq backwards.
        let s = state_of(step(s, &mut t, O, &seg(ACK, 1001, 5001, 50)));
        assert_eq!(step(s, &mut t, O, &seg(RST, 1051, 0, 0)), Outcome::Invalid);
        assert_eq!(
            state_of(step(s, &mut t, O, &seg(RST, 1101, 0, 0))),
            TcpState::Close
        );
    }

    #[test]
    fn synack_acking_ignored_syn_resyncs() {
        let (s, mut t) = established();
        assert_eq!(step(s, &mut t, O, &seg(SYN, 9000, 0, 0)), Outcome::Ignore);
        let s = state_of(step(s, &mut t, R, &seg(SYN | ACK, 7000, 9001, 0)));
        assert_eq!(s, TcpState::SynRecv);
        let s = state_of(step(s, &mut t, O, &seg(ACK, 9001, 7001, 0)));
        assert_eq!(s, TcpState::Established);
        assert_eq!(
            state_of(step(s, &mut t, O, &seg(RST, 9001, 0, 0))),
            TcpState::Close
        );
    }

    #[test]
    fn retransmitted_synack_is_ignored() {
        let mut t = TcpTrack::default();
        let s = state_of(step(TcpState::None, &mut t, O, &seg(SYN, 1000, 0, 0)));
        let s = state_of(step(s, &mut t, R, &seg(SYN | ACK, 5000, 1001, 0)));
        assert_eq!(
            step(s, &mut t, R, &seg(SYN | ACK, 5000, 1001, 0)),
            Outcome::Ignore
        );
        assert_eq!(
            step(s, &mut t, O, &seg(SYN | ACK, 5000, 1001, 0)),
            Outcome::Invalid
        );
    }

    proptest::proptest! {
        /// The packed form the table stores steps exactly like the full track.
        #[test]
        fn packed_track_steps_like_the_full_one(
            steps in proptest::collection::vec(
                (proptest::bool::ANY, 0u8..32, 0u32..6, 0u32..6, 0u32..3),
                1..40,
            ),
        ) {
            let (mut state, mut full) = (TcpState::None, TcpTrack::default());
            let mut packed = TcpTrack::default().pack(state);
            for (reply, flags, seq, ack_no, len) in steps {
                let dir = if reply { R } else { O };
                // Sequence numbers near both ISNs (1000 / 5000) so that exact RSTs and
                // acknowledgements happen; bit 4 of `flags` picks ACK.
                let base = if reply { 5000 } else { 1000 };
                let flags = (flags & 0x0f) | if flags & 0x10 != 0 { ACK } else { 0 };
                let s = seg(flags, base + seq, 6000 - base + ack_no - 1, len);
                let mut unpacked = TcpTrack::unpack(&packed, state);
                if matches!(state, TcpState::None | TcpState::SynSent) {
                    proptest::prop_assert_eq!(unpacked, full);
                }
                let want = step(state, &mut full, dir, &s);
                let got = step(state, &mut unpacked, dir, &s);
                proptest::prop_assert_eq!(got, want);
                if let Outcome::Accept { state: next, .. } = want {
                    state = next;
                }
                packed = unpacked.pack(state);
            }
        }
    }

    #[test]
    fn display_names_match_linux() {
        assert_eq!(TcpState::SynSent.to_string(), "SYN_SENT");
        assert_eq!(TcpState::TimeWait.to_string(), "TIME_WAIT");
        assert_eq!(TcpState::CloseWait.as_str(), "CLOSE_WAIT");
    }
}
