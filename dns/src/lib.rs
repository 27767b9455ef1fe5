//! Embedded DNS responder for user-defined networks: query bytes in, a [`Decision`] out.
//!
//! Pure and synchronous: no socket, no clock, no allocation beyond the response. The caller
//! (the gateway's UDP/53 handler) owns I/O, forwarding to upstream resolvers, and the
//! per-network name table it exposes through [`Zone::lookup`].
//!
//! What it answers, like Docker's embedded DNS on user-defined networks:
//!
//! | query                                                  | decision                          |
//! |--------------------------------------------------------|-----------------------------------|
//! | single label (`web`) or `NAME.DOMAIN`, name known, A   | its IPv4 addresses, A records     |
//! | same, type AAAA                                        | its IPv6 addresses, AAAA records  |
//! | same, type ANY                                         | both, in `lookup`'s order         |
//! | same, none of the asked family, or another type        | NOERROR, no answers (NODATA)      |
//! | `NAME.DOMAIN`, name unknown                            | NXDOMAIN, AA set                  |
//! | `DOMAIN` itself                                        | NOERROR, no answers               |
//! | single label, name unknown                             | [`Decision::Forward`]             |
//! | any other name, or a class other than IN/ANY           | [`Decision::Forward`]             |
//! | shorter than a header (12 bytes), or a response (QR=1) | [`Decision::Drop`]                |
//! | opcode other than QUERY                                | NOTIMP (header only)              |
//! | QDCOUNT ≠ 1, or a body that does not parse             | FORMERR (header only)             |
//!
//! Records carry TTL 600; answers built from the zone have AA and RA set.
//!
//! Drop vs FORMERR follows miekg/dns's default acceptor (which Docker's resolver runs on): a
//! readable query header gets an error reply so the client fails fast; bytes that are not a
//! query at all get nothing (never answer a response: that is how reflection loops start).
//!
//! Names are matched case-insensitively: labels are lowercased, the trailing dot and the domain
//! are stripped, and labels are joined with `.` before [`Zone::lookup`] is called. A label with a
//! byte outside `[A-Za-z0-9_-]` cannot be a container name and is treated as unknown. The
//! question is echoed as received (case kept, for 0x20-randomizing resolvers).
//!
//! Responses echo the id, opcode, question, RD and CD bits. A query with EDNS gets an OPT
//! record back (version 0, payload 1232, no DNSSEC); the response fits the client's limit
//! (512 bytes without EDNS, else its advertised size capped at 1232): when the addresses do not
//! all fit, as many as fit are sent and TC is set (RFC 2181 §9). An A record takes 16 bytes, an
//! AAAA record 28 (name compressed to a pointer), so fewer AAAA records fit. No SOA is added to negative
//! answers, so resolvers do not cache NXDOMAIN (Docker does the same). Addresses are answered in
//! the order `lookup` returns them, duplicates removed: rotate them in the caller for round robin.
//!
//! Invariant: [`respond`] never panics on any input, and every [`Decision::Answer`] starts with
//! the query's id and has QR set (property-tested in `tests.rs`).

#![forbid(unsafe_code)]

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::net::IpAddr;

/// TTL of the A and AAAA records we answer (Docker's value).
pub const TTL: u32 = 600;
/// UDP payload we advertise and never exceed (the DNS flag day 2020 value).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Size limit for a client without EDNS (RFC 1035 §4.2.1).
const CLASSIC_UDP_PAYLOAD: u16 = 512;
/// Wire size of one compressed A record: pointer 2, type 2, class 2, ttl 4, rdlength 2, rdata 4.
const A_RECORD_LEN: usize = 16;
/// Wire size of one compressed AAAA record: as an A record, with 16 bytes of rdata.
const AAAA_RECORD_LEN: usize = 28;
const HEADER_LEN: usize = 12;

/// What to do with one UDP datagram received on the gateway's port 53.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send these bytes back to the client: a complete DNS response message.
    Answer(Vec<u8>),
    /// Not ours: send the query, unchanged, to the upstream resolvers and relay their reply.
    Forward,
    /// Not a DNS query we can read: count it and send nothing.
    Drop,
}

/// The names one network can resolve.
pub struct Zone<'a> {
    /// Search domain the network is authoritative for (e.g. `"vswitch.internal"`), if any.
    /// Case and a trailing dot do not matter.
    pub domain: Option<&'a str>,
    /// Container name or alias (lowercase, no trailing dot, domain stripped) → its addresses on
    /// **this** network, IPv4 and IPv6 in any mix (A queries get the IPv4 ones, AAAA queries
    /// the IPv6 ones). `None`: unknown name. A name with no address of the asked family
    /// (`Some(vec![])`, or only the other family) is answered NOERROR with no records.
    pub lookup: &'a dyn Fn(&str) -> Option<Vec<IpAddr>>,
}

/// The header fields we need, read without trusting the rest of the message.
struct RawHeader {
    id: u16,
    qr: bool,
    opcode: u8,
    rd: bool,
    cd: bool,
    qdcount: u16,
}

fn raw_header(b: &[u8]) -> Option<RawHeader> {
    let h: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
    Some(RawHeader {
        id: u16::from_be_bytes([h[0], h[1]]),
        qr: h[2] & 0x80 != 0,
        opcode: (h[2] >> 3) & 0x0f,
        rd: h[2] & 0x01 != 0,
        cd: h[3] & 0x10 != 0,
        qdcount: u16::from_be_bytes([h[4], h[5]]),
    })
}

/// A header-only error response (no question: the query's may be unreadable).
fn error_reply(h: &RawHeader, rcode: u8) -> Decision {
    let flags_hi = 0x80 | (h.opcode << 3) | u8::from(h.rd);
    let flags_lo = 0x80 /* RA */ | if h.cd { 0x10 } else { 0 } | (rcode & 0x0f);
    let mut out = vec![0u8; HEADER_LEN];
    out[..2].copy_from_slice(&h.id.to_be_bytes());
    out[2] = flags_hi;
    out[3] = flags_lo;
    Decision::Answer(out)
}

/// How the question's name relates to the zone.
enum Target {
    /// A name to look up (lowercase labels joined with `.`), and whether it lies in the domain.
    Lookup { name: String, in_domain: bool },
    /// The domain apex.
    Apex,
    /// In the domain but cannot be a container name.
    InDomainInvalid,
    /// Not ours.
    Other,
}

fn lower_label(l: &[u8]) -> Option<String> {
    l.iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
        .then(|| String::from_utf8_lossy(l).to_ascii_lowercase())
}

fn domain_labels(domain: Option<&str>) -> Vec<String> {
    domain
        .map(|d| {
            d.split('.')
                .filter(|l| !l.is_empty())
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default()
}

fn classify(name: &Name, domain: &[String]) -> Target {
    let labels: Vec<&[u8]> = name.iter().collect();
    let n = labels.len();
    let in_domain = !domain.is_empty()
        && n >= domain.len()
        && labels[n - domain.len()..]
            .iter()
            .zip(domain)
            .all(|(l, d)| l.eq_ignore_ascii_case(d.as_bytes()));
    let host = if in_domain {
        &labels[..n - domain.len()]
    } else if n == 1 {
        &labels[..]
    } else {
        return Target::Other;
    };
    if host.is_empty() {
        return Target::Apex;
    }
    let parts: Option<Vec<String>> = host.iter().map(|l| lower_label(l)).collect();
    match parts {
        Some(parts) => Target::Lookup {
            name: parts.join("."),
            in_domain,
        },
        None if in_domain => Target::InDomainInvalid,
        None => Target::Other,
    }
}

/// Decides what to do with one datagram. See the module docs for the table.
pub fn respond(query: &[u8], zone: &Zone) -> Decision {
    let Some(h) = raw_header(query) else {
        return Decision::Drop;
    };
    if h.qr {
        return Decision::Drop;
    }
    if h.opcode != u8::from(OpCode::Query) {
        return error_reply(&h, u16::from(ResponseCode::NotImp) as u8);
    }
    // Checked before parsing: a forged QDCOUNT would otherwise size a large allocation.
    if h.qdcount != 1 {
        return error_reply(&h, u16::from(ResponseCode::FormErr) as u8);
    }
    let Ok(msg) = Message::from_vec(query) else {
        return error_reply(&h, u16::from(ResponseCode::FormErr) as u8);
    };
    let Some(q) = msg.queries.first() else {
        return error_reply(&h, u16::from(ResponseCode::FormErr) as u8);
    };
    if !matches!(q.query_class(), DNSClass::IN | DNSClass::ANY) {
        return Decision::Forward;
    }
    let domain = domain_labels(zone.domain);
    let (rcode, addrs) = match classify(q.name(), &domain) {
        Target::Other => return Decision::Forward,
        Target::Apex => (ResponseCode::NoError, Vec::new()),
        Target::InDomainInvalid => (ResponseCode::NXDomain, Vec::new()),
        Target::Lookup { name, in_domain } => match (zone.lookup)(&name) {
            Some(addrs) => (ResponseCode::NoError, addrs),
            None if in_domain => (ResponseCode::NXDomain, Vec::new()),
            None => return Decision::Forward,
        },
    };
    let t = q.query_type();
    let addrs = dedup(addrs.into_iter().filter(|a| wanted(t, a)).collect());
    build(&msg, q, rcode, &addrs).unwrap_or_else(|| error_reply(&h, 2 /* SERVFAIL */))
}

/// Whether a query of type `t` is answered with `ip`: A with IPv4, AAAA with IPv6, ANY with both.
fn wanted(t: RecordType, ip: &IpAddr) -> bool {
    match t {
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        RecordType::ANY => true,
        _ => false,
    }
}

fn dedup(mut addrs: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut seen = std::collections::HashSet::with_capacity(addrs.len());
    addrs.retain(|a| seen.insert(*a));
    addrs
}

/// The A or AAAA record of `ip` for `name`.
fn record(name: &Name, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(a) => RData::A(A(a)),
        IpAddr::V6(a) => RData::AAAA(AAAA(a)),
    };
    Record::from_rdata(name.clone(), TTL, data)
}

/// How many of `addrs`, from the first, could fit in `limit` bytes counting the records alone.
fn upper_bound(addrs: &[IpAddr], limit: usize) -> usize {
    let mut used = 0;
    addrs
        .iter()
        .take_while(|a| {
            used += if a.is_ipv4() {
                A_RECORD_LEN
            } else {
                AAAA_RECORD_LEN
            };
            used <= limit
        })
        .count()
}

/// The response for `query` with `addrs` as A and AAAA records, cut to the client's size limit.
fn build(query: &Message, q: &Query, rcode: ResponseCode, addrs: &[IpAddr]) -> Option<Decision> {
    let mut resp = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = query.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.checking_disabled = query.metadata.checking_disabled;
    resp.metadata.response_code = rcode;
    resp.add_query(q.clone());
    let limit = match &query.edns {
        Some(e) => {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_UDP_PAYLOAD);
            edns.set_version(0);
            resp.set_edns(edns);
            e.max_payload().clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
        }
        None => CLASSIC_UDP_PAYLOAD,
    } as usize;
    // Never more records than could fit; then drop from the end until the bytes fit.
    let mut n = upper_bound(addrs, limit);
    loop {
        resp.answers = addrs[..n].iter().map(|ip| record(q.name(), *ip)).collect();
        resp.metadata.truncation = n < addrs.len();
        let bytes = resp.to_vec().ok()?;
        if bytes.len() <= limit || n == 0 {
            return Some(Decision::Answer(bytes));
        }
        n -= 1;
    }
}

/// The question's name, lowercase without the trailing dot (`"."` for the root), for logs.
/// `None` when the bytes are not a message with a question.
pub fn query_name(query: &[u8]) -> Option<String> {
    let h = raw_header(query)?;
    if h.qdcount == 0 || h.qdcount > 16 {
        return None;
    }
    let msg = Message::from_vec(query).ok()?;
    let name = msg.queries.first()?.name();
    if name.is_root() {
        return Some(".".to_string());
    }
    let mut s = name.to_ascii().to_ascii_lowercase();
    if s.ends_with('.') {
        s.pop();
    }
    Some(s)
}

#[cfg(test)]
mod tests;
