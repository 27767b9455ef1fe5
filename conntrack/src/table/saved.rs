//! Export and import of a table's entries, for a restart that keeps its connections.
//!
//! A [`SavedEntry`] holds everything an entry is made of with its times made relative to the
//! clock it was read at: `age_ns` (since creation), `idle_ns` (since the last packet) and
//! `remaining_ns` (until it expires). [`Conntrack::import`] rebases them on the clock of the
//! table it goes into, so a table exported at clock `t1` and imported at `t2` expires each entry
//! `remaining_ns` after `t2`. The TCP sequence bookkeeping travels too (an exact RST must
//! still close a restored connection, and only that RST). Caller data (`mark`) is kept as is:
//! it is the caller's to translate.
//!
//! Import is input-driven (a snapshot file) and so checks what it is given: inconsistent
//! entries are refused with an [`ImportError`], never a panic.

use super::*;
use crate::tcp::TcpTrack;

/// The protocol state of a saved entry, with the TCP sequence bookkeeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "proto", rename_all = "lowercase")]
pub enum SavedState {
    /// TCP, in `state`, with its sequence bookkeeping.
    Tcp {
        /// Connection state (Linux spelling).
        state: TcpState,
        /// Sequence bookkeeping.
        track: SavedTcp,
    },
    /// UDP.
    Udp {
        /// A reply-direction packet has been seen.
        replied: bool,
    },
    /// ICMP echo.
    Icmp {
        /// A reply-direction packet has been seen.
        replied: bool,
    },
}

/// TCP sequence bookkeeping of a saved entry (index 0: original direction, 1: reply).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedTcp {
    /// Highest end sequence sent.
    pub next_seq: [u32; 2],
    /// Highest ACK number sent.
    pub last_ack: [u32; 2],
    /// Initial sequence number of the original direction (read only while handshaking).
    pub isn: u32,
    /// A segment was accepted in that direction.
    pub seen: [bool; 2],
    /// An ACK was accepted in that direction.
    pub ack_seen: [bool; 2],
    /// End of an original SYN let through on a live entry.
    pub ignored_syn_end: Option<u32>,
    /// ACK number of a challenge ACK seen in SYN_SENT.
    pub challenge_ack: Option<u32>,
}

impl From<TcpTrack> for SavedTcp {
    fn from(t: TcpTrack) -> SavedTcp {
        SavedTcp {
            next_seq: t.next_seq,
            last_ack: t.last_ack,
            isn: t.isn,
            seen: t.seen,
            ack_seen: t.ack_seen,
            ignored_syn_end: t.ignored_syn_end,
            challenge_ack: t.challenge_ack,
        }
    }
}

impl From<SavedTcp> for TcpTrack {
    fn from(t: SavedTcp) -> TcpTrack {
        TcpTrack {
            next_seq: t.next_seq,
            last_ack: t.last_ack,
            isn: t.isn,
            seen: t.seen,
            ack_seen: t.ack_seen,
            ignored_syn_end: t.ignored_syn_end,
            challenge_ack: t.challenge_ack,
        }
    }
}

/// One entry as exported: see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(bound = "")]
pub struct SavedEntry<A: Address = Ipv4Addr> {
    /// Tuple of the packet that created the entry.
    pub original: Tuple<A>,
    /// Tuple reply packets carry on the wire (after NAT).
    pub reply: Tuple<A>,
    /// Protocol state.
    pub state: SavedState,
    /// Seen as a real two-way connection.
    pub assured: bool,
    /// Nanoseconds since it was created.
    pub age_ns: u64,
    /// Nanoseconds since its last packet.
    pub idle_ns: u64,
    /// Nanoseconds until it expires (> 0).
    pub remaining_ns: u64,
    /// Packets per direction.
    pub packets: [u64; 2],
    /// Bytes per direction.
    pub bytes: [u64; 2],
    /// Caller data.
    pub mark: u32,
}

/// Why [`Conntrack::import`] refused an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImportError<A: Address = Ipv4Addr> {
    /// The state names another protocol than the original tuple.
    #[error("entry {0}: its state is for another protocol than its tuple")]
    ProtocolMismatch(Tuple<A>),
    /// The entry had no time left.
    #[error("entry {0}: already expired")]
    Expired(Tuple<A>),
    /// The table refused it (full, duplicate, over a limit).
    #[error("entry {0}: {1}")]
    Insert(Tuple<A>, InsertError<A>),
}

impl<A: Address> Conntrack<A> {
    /// Every live entry at `now`, in `iter` order, with its times relative to `now` (which
    /// should be the clock's current reading; a `now` behind the table clock is taken as the
    /// clock).
    pub fn export(&self, now: u64) -> Vec<SavedEntry<A>> {
        let now = now.max(self.clock);
        self.slots()
            .filter(|(_, s)| s.is_live() && self.expires_at(s) > now)
            .map(|(idx, s)| {
                let e = self.entry_at(idx, s);
                let state = match e.state {
                    State::Tcp(state) => {
                        let packed = PackedTrack {
                            words: s.tcp,
                            flags: s.tcp_flags,
                        };
                        SavedState::Tcp {
                            state,
                            track: TcpTrack::unpack(&packed, state).into(),
                        }
                    }
                    State::Udp { replied } => SavedState::Udp { replied },
                    State::Icmp { replied } => SavedState::Icmp { replied },
                };
                SavedEntry {
                    original: e.original,
                    reply: e.reply,
                    state,
                    assured: e.assured,
                    age_ns: now.saturating_sub(e.created),
                    idle_ns: now.saturating_sub(e.last_seen),
                    remaining_ns: e.expires_at.saturating_sub(now),
                    packets: e.packets,
                    bytes: e.bytes,
                    mark: e.mark,
                }
            })
            .collect()
    }

    /// Puts a saved entry back, its times rebased on `now`: it expires `remaining_ns` after
    /// `now` (at most its class's timeout in this table's configuration), was created
    /// `age_ns` and last seen `idle_ns` before `now` (saturating at 0 when `now` is smaller).
    /// Counts no packet and no `new`; the per-address limits apply as for `insert`. Entries may
    /// come in any order: each joins its expiry list where its expiry time puts it.
    pub fn import(&mut self, saved: &SavedEntry<A>, now: u64) -> Result<EntryId, ImportError<A>> {
        let state = match (saved.state, saved.original.proto) {
            (SavedState::Tcp { state, .. }, L4Proto::Tcp) => State::Tcp(state),
            (SavedState::Udp { replied }, L4Proto::Udp) => State::Udp { replied },
            (SavedState::Icmp { replied }, L4Proto::Icmp) => State::Icmp { replied },
            _ => return Err(ImportError::ProtocolMismatch(saved.original)),
        };
        if saved.remaining_ns == 0 {
            return Err(ImportError::Expired(saved.original));
        }
        let (original, reply) = (saved.original, saved.reply);
        let new_before = self.counters.new;
        let id = self
            .insert(original, reply, saved.mark, now)
            .map_err(|e| ImportError::Insert(original, e))?;
        self.counters.new = new_before;
        let clock = self.clock;
        let kind = kind_of(state, saved.assured);
        let list = list_of(state, saved.assured);
        let timeout = self
            .timeouts
            .get(usize::from(LIST_OF_KIND[usize::from(kind)]) / 2)
            .copied()
            .unwrap_or(0);
        let remaining = saved.remaining_ns.min(timeout);
        let refreshed_at = clock.saturating_add(remaining).saturating_sub(timeout);
        // A lifetime cut to this table's timeout (or times clamped at 0) moves the refresh:
        // the last packet is never before it, nor the creation after it.
        let last_seen = clock.saturating_sub(saved.idle_ns).max(refreshed_at);
        let created = clock.saturating_sub(saved.age_ns).min(refreshed_at);
        let idx = id.idx;
        // `insert` linked the fresh entry at the tail of its initial list.
        let first_list = list_of(
            match original.proto {
                L4Proto::Tcp => State::Tcp(TcpState::None),
                L4Proto::Udp => State::Udp { replied: false },
                L4Proto::Icmp => State::Icmp { replied: false },
            },
            false,
        );
        self.unlink(idx, first_list);
        let Some(slot) = slot_in_mut(&mut self.chunks, idx) else {
            return Ok(id);
        };
        slot.kind = kind;
        slot.created = created;
        slot.refreshed_at = refreshed_at;
        if let SavedState::Tcp { state, track } = saved.state {
            let packed = TcpTrack::from(track).pack(state);
            slot.tcp = packed.words;
            slot.tcp_flags = packed.flags;
        }
        let split = |v: u64| ((v >> 32) as u32, v as u32);
        let (p0, p1, b0, b1) = (
            split(saved.packets[0]),
            split(saved.packets[1]),
            split(saved.bytes[0]),
            split(saved.bytes[1]),
        );
        slot.packets = [p0.1, p1.1];
        slot.bytes = [b0.1, b1.1];
        if p0.0 | p1.0 | b0.0 | b1.0 != 0 {
            slot.spill |= WIDE;
            self.wide.insert(idx, [p0.0, p1.0, b0.0, b1.0]);
        }
        set_last_seen(slot, &mut self.late, idx, last_seen);
        self.link_sorted(idx, list, refreshed_at);
        Ok(id)
    }

    /// Links `idx` into `list` after the last entry refreshed no later than `refreshed_at`
    /// (the lists stay sorted; O(1) when entries come in refresh order).
    fn link_sorted(&mut self, idx: u32, list: usize, refreshed_at: u64) {
        let Some(l) = self.lists.get(list).copied() else {
            return;
        };
        let mut after = l.tail;
        while let Some(s) = self.slot(after) {
            if s.refreshed_at <= refreshed_at {
                break;
            }
            after = s.prev;
        }
        let Some(prev_slot) = self.slot(after) else {
            // Before every entry: the new head.
            let head = l.head;
            if let Some(slot) = slot_in_mut(&mut self.chunks, idx) {
                slot.prev = NIL;
                slot.next = head;
            }
            match slot_in_mut(&mut self.chunks, head) {
                Some(h) => h.prev = idx,
                None => self.lists[list].tail = idx,
            }
            self.lists[list].head = idx;
            return;
        };
        let next = prev_slot.next;
        if let Some(slot) = slot_in_mut(&mut self.chunks, idx) {
            slot.prev = after;
            slot.next = next;
        }
        if let Some(p) = slot_in_mut(&mut self.chunks, after) {
            p.next = idx;
        }
        match slot_in_mut(&mut self.chunks, next) {
            Some(n) => n.prev = idx,
            None => self.lists[list].tail = idx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::tcp::TcpSegment;

    const SEC: u64 = 1_000_000_000;

    fn seg(syn: bool, ack: bool, seq: u32, ack_no: u32, len: u32) -> TcpSegment {
        TcpSegment {
            syn,
            ack,
            fin: false,
            rst: false,
            seq,
            ack_no,
            payload_len: len,
        }
    }

    /// A NATed TCP connection taken to ESTABLISHED, a UDP flow and an ICMP echo, at 10 s.
    fn populated() -> (Conntrack, Tuple, Tuple) {
        let mut ct = Conntrack::new(Config::default());
        let c = Ipv4Addr::new(10, 0, 0, 2);
        let r = Ipv4Addr::new(203, 0, 113, 1);
        let up = Ipv4Addr::new(203, 0, 113, 2);
        let orig = Tuple::new(L4Proto::Tcp, c, 40000, r, 5201);
        let reply = Tuple::new(L4Proto::Tcp, r, 5201, up, 61000);
        let id = ct.insert(orig, reply, 3, SEC).expect("insert");
        let d = Direction::Original;
        assert_eq!(
            ct.track(id, d, Some(&seg(true, false, 100, 0, 0)), 60, SEC),
            Verdict::Accept
        );
        let r1 = Direction::Reply;
        let synack = seg(true, true, 900, 101, 0);
        assert_eq!(
            ct.track(id, r1, Some(&synack), 60, 2 * SEC),
            Verdict::Accept
        );
        let ack = seg(false, true, 101, 901, 1000);
        assert_eq!(ct.track(id, d, Some(&ack), 1060, 3 * SEC), Verdict::Accept);
        let u = Tuple::new(L4Proto::Udp, c, 5353, r, 53);
        let uid = ct.insert(u, u.reversed(), u32::MAX, 4 * SEC).expect("udp");
        ct.track(uid, d, None, 80, 4 * SEC);
        let i = Tuple::new(L4Proto::Icmp, c, 7, r, 7);
        let iid = ct.insert(i, i.reversed(), 1, 9 * SEC).expect("icmp");
        ct.track(iid, d, None, 84, 9 * SEC);
        ct.expire(10 * SEC, 100);
        (ct, orig, reply)
    }

    #[test]
    fn export_import_rebases_the_clock_and_keeps_every_field() {
        let (ct, orig, reply) = populated();
        let t1 = 10 * SEC;
        let saved = ct.export(t1);
        assert_eq!(saved.len(), 3);
        let t2 = 500 * SEC;
        let mut fresh = Conntrack::new(Config::default());
        for s in &saved {
            fresh.import(s, t2).expect("import");
        }
        fresh.check_invariants();
        assert_eq!(fresh.len(), 3);
        let before: Vec<Entry> = ct.iter().map(|(_, e)| e).collect();
        let after: Vec<Entry> = fresh.iter().map(|(_, e)| e).collect();
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(
                (a.original, a.reply, a.state, a.assured),
                (b.original, b.reply, b.state, b.assured)
            );
            assert_eq!((a.packets, a.bytes, a.mark), (b.packets, b.bytes, b.mark));
            assert_eq!(
                a.expires_at - t2,
                b.expires_at - t1,
                "remaining lifetime kept"
            );
            assert_eq!(t2 - a.created, t1 - b.created, "age kept");
            assert_eq!(t2 - a.last_seen, t1 - b.last_seen, "idle time kept");
        }
        // Both tuples find the restored entry, and its exports agree.
        assert!(fresh.contains(&orig) && fresh.contains(&reply));
        assert_eq!(fresh.export(t2), saved);
        // No packet and no new entry counted by the import.
        assert_eq!(fresh.counters().new, 0);
    }

    #[test]
    fn restored_tcp_keeps_its_sequence_bookkeeping() {
        let (ct, orig, _) = populated();
        let mut fresh = Conntrack::new(Config::default());
        for s in ct.export(10 * SEC) {
            fresh.import(&s, 20 * SEC).expect("import");
        }
        let (id, dir) = fresh.lookup(&orig, 21 * SEC).expect("restored");
        // An RST with a sequence out of line is refused, as it would have been before.
        let mut bad = seg(false, false, 5, 0, 0);
        bad.rst = true;
        assert_eq!(
            fresh.track(id, dir, Some(&bad), 40, 21 * SEC),
            Verdict::Invalid
        );
        // Data keeps flowing in ESTABLISHED.
        let data = seg(false, true, 1101, 901, 1000);
        assert_eq!(
            fresh.track(id, dir, Some(&data), 1060, 21 * SEC),
            Verdict::Accept
        );
        let e = fresh.entry(id).expect("entry");
        assert_eq!(e.state, State::Tcp(TcpState::Established));
        assert!(e.assured);
        // The exact RST (next expected sequence) still closes it.
        let mut rst = seg(false, false, 2101, 0, 0);
        rst.rst = true;
        assert_eq!(
            fresh.track(id, dir, Some(&rst), 40, 22 * SEC),
            Verdict::Accept
        );
        assert_eq!(
            fresh.entry(id).map(|e| e.state),
            Some(State::Tcp(TcpState::Close))
        );
    }

    #[test]
    fn restored_entries_expire_in_order_whatever_the_import_order() {
        let mut ct = Conntrack::new(Config::default());
        let mut saved = Vec::new();
        for i in 0..20u16 {
            let t = Tuple::new(
                L4Proto::Udp,
                Ipv4Addr::new(10, 0, 0, 2),
                1000 + i,
                Ipv4Addr::new(10, 0, 1, 2),
                53,
            );
            let id = ct
                .insert(t, t.reversed(), 0, u64::from(i) * SEC)
                .expect("insert");
            ct.track(id, Direction::Original, None, 10, u64::from(i) * SEC);
        }
        saved.extend(ct.export(20 * SEC));
        saved.reverse();
        let mut fresh = Conntrack::new(Config::default());
        for s in &saved {
            fresh.import(s, 1000 * SEC).expect("import");
        }
        fresh.check_invariants();
        // udp_unreplied is 30 s: entry i (refreshed at i s, exported at 20 s) had 10 + i s left,
        // so at 1000 s + 19.5 s the ten oldest are gone and the ten others left.
        let removed = fresh.expire(1000 * SEC + 19 * SEC + SEC / 2, 100);
        assert_eq!(removed, 10);
        assert_eq!(fresh.len(), 10);
        fresh.check_invariants();
    }

    #[test]
    fn the_reply_tuple_stays_taken_so_nat_cannot_hand_it_out_again() {
        let (ct, _, reply) = populated();
        let mut fresh = Conntrack::new(Config::default());
        for s in ct.export(10 * SEC) {
            fresh.import(&s, 10 * SEC).expect("import");
        }
        // What a NAT port allocator asks: is the reply tuple (remote -> uplink:port) in use?
        assert!(fresh.contains(&reply));
        let other = Tuple::new(L4Proto::Tcp, reply.dst, 9, reply.src, reply.src_port);
        assert_eq!(
            fresh.insert(other, reply, 0, 11 * SEC),
            Err(InsertError::Exists)
        );
    }

    #[test]
    fn inconsistent_or_expired_entries_are_refused() {
        let (ct, _, _) = populated();
        let saved = ct.export(10 * SEC);
        let mut fresh = Conntrack::new(Config::default());
        let mut wrong = saved[0];
        wrong.state = SavedState::Udp { replied: true };
        assert!(matches!(
            fresh.import(&wrong, 0),
            Err(ImportError::ProtocolMismatch(_))
        ));
        let mut dead = saved[1];
        dead.remaining_ns = 0;
        assert!(matches!(
            fresh.import(&dead, 0),
            Err(ImportError::Expired(_))
        ));
        fresh.import(&saved[2], 0).expect("import");
        assert!(matches!(
            fresh.import(&saved[2], 0),
            Err(ImportError::Insert(_, InsertError::Exists))
        ));
        assert_eq!(fresh.len(), 1);
        fresh.check_invariants();
        // A remaining lifetime beyond this table's timeout is cut to the timeout.
        let mut long = saved[1];
        long.remaining_ns = u64::MAX;
        let id = fresh.import(&long, 5 * SEC).expect("import");
        fresh.check_invariants();
        let e = fresh.entry(id).expect("entry");
        assert!(
            e.expires_at
                <= 5 * SEC
                    + fresh
                        .config()
                        .timeouts
                        .udp_assured
                        .max(fresh.config().timeouts.udp_unreplied)
        );
    }

    #[test]
    fn ipv6_tables_round_trip_too() {
        let mut ct = Conntrack::new_v6(Config::default());
        let a: Ipv6Addr = "fd00::2".parse().expect("addr");
        let b: Ipv6Addr = "2001:db8::1".parse().expect("addr");
        let t = Tuple::new_v6(L4Proto::Udp, a, 4000, b, 53);
        let id = ct.insert(t, t.reversed(), 2, SEC).expect("insert");
        ct.track(id, Direction::Original, None, 100, SEC);
        ct.track(id, Direction::Reply, None, 100, 2 * SEC);
        let saved = ct.export(3 * SEC);
        let text = serde_json::to_string(&saved).expect("json");
        let back: Vec<SavedEntry<Ipv6Addr>> = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, saved);
        let mut fresh = Conntrack::new_v6(Config::default());
        fresh.import(&back[0], 100 * SEC).expect("import");
        let (_, e) = fresh.iter().next().expect("entry");
        assert_eq!(e.state, State::Udp { replied: true });
        assert_eq!(
            e.expires_at - 100 * SEC,
            ct.entry(id).map_or(0, |e| e.expires_at) - 3 * SEC
        );
        // An IPv4 snapshot is not an IPv6 one.
        let v4 = serde_json::to_string(&populated().0.export(10 * SEC)).expect("json");
        assert!(serde_json::from_str::<Vec<SavedEntry<Ipv6Addr>>>(&v4).is_err());
    }

    fn tcp_state(i: u8) -> TcpState {
        [
            TcpState::None,
            TcpState::SynSent,
            TcpState::SynRecv,
            TcpState::Established,
            TcpState::FinWait,
            TcpState::CloseWait,
            TcpState::LastAck,
            TcpState::TimeWait,
            TcpState::Close,
        ][usize::from(i % 9)]
    }

    proptest::proptest! {
        /// Whatever a snapshot holds (any times, states, counters, duplicates) and whatever the
        /// new table's timeouts and size: import never panics and the table stays sound.
        #[test]
        fn any_saved_entries_import_into_a_sound_table(
            entries in proptest::collection::vec(
                (0u8..3, 0u8..9, proptest::bool::ANY, proptest::bool::ANY, 0u16..6,
                 0u64..u64::MAX, 0u64..u64::MAX, 0u64..u64::MAX, 0u64..u64::MAX, 0u32..u32::MAX),
                0..40,
            ),
            timeout_s in 1u64..400_000,
            max_entries in 1usize..30,
            now in 0u64..u64::MAX / 2,
        ) {
            let defaults = Config::default();
            let config = Config {
                max_entries,
                timeouts: crate::config::Timeouts {
                    tcp_established: timeout_s * SEC,
                    udp_unreplied: (timeout_s % 90 + 1) * SEC,
                    ..defaults.timeouts
                },
                ..defaults
            };
            let mut ct = Conntrack::new(config);
            for (p, st, flag, assured, port, age, idle, remaining, pk, mark) in entries {
                let proto = [L4Proto::Tcp, L4Proto::Udp, L4Proto::Icmp][usize::from(p)];
                let t = Tuple::new(
                    proto,
                    Ipv4Addr::new(10, 0, 0, 2),
                    1000 + port,
                    Ipv4Addr::new(198, 51, 100, 1),
                    80,
                );
                let state = match (st % 4, flag) {
                    (0, _) => SavedState::Tcp { state: tcp_state(st), track: SavedTcp::default() },
                    (1, r) => SavedState::Udp { replied: r },
                    (2, r) => SavedState::Icmp { replied: r },
                    _ => SavedState::Tcp { state: tcp_state(st), track: SavedTcp {
                        seen: [true, flag], ack_seen: [flag, true], ..SavedTcp::default() } },
                };
                let saved = SavedEntry {
                    original: t,
                    reply: t.reversed(),
                    state,
                    assured,
                    age_ns: age,
                    idle_ns: idle,
                    remaining_ns: remaining,
                    packets: [pk, pk >> 7],
                    bytes: [u64::from(mark) << 20, pk],
                    mark,
                };
                let _ = ct.import(&saved, now);
                ct.check_invariants();
            }
            let _ = ct.export(now);
            ct.expire(now.saturating_add(400_000 * SEC), usize::MAX);
            ct.check_invariants();
        }
    }
}
