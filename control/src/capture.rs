//! The capture stream: after its `ok` response line, a `capture` request's connection carries
//! binary records until either side closes. The client ends a capture by shutting down its
//! writing half; the daemon then sends the final counts and closes.
//!
//! A record is a tag byte, a big-endian `u32` payload length and the payload:
//! - `I` an interface: port id (`u16`) and its name (UTF-8), before its first frame;
//! - `F` a frame: time (`u64` ns since the Unix epoch), port id (`u16`), direction (`u8`, 0 in,
//!   1 out), length on the wire (`u32`) and the captured bytes;
//! - `S` counts: frames captured and frames dropped because the capture queue was full
//!   (`u64` each), sent once a second and last.

use std::io::{self, Read};

/// Longest payload a record may have (a 64 KB super-frame and its header fit).
pub const MAX_RECORD: usize = 256 * 1024;

/// One record of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A port frames are seen on, named before its first frame.
    Interface {
        /// Its id in the frames.
        port: u16,
        /// Its name (`vsw3`, `up0`, ...).
        name: String,
    },
    /// A captured frame.
    Frame {
        /// Nanoseconds since the Unix epoch.
        time_ns: u64,
        /// Its port.
        port: u16,
        /// Written by the switch (after NAT), not read.
        outbound: bool,
        /// Its length on the wire.
        wire_len: u32,
        /// Its first bytes.
        data: Vec<u8>,
    },
    /// Counts so far.
    Stats {
        /// Frames captured.
        captured: u64,
        /// Frames lost because the capture queue was full.
        dropped: u64,
    },
}

/// A stream that is not a capture stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Reading failed.
    #[error("reading the capture stream: {0}")]
    Io(#[from] io::Error),
    /// A record does not decode.
    #[error(
        "the daemon sent a bad capture record: {0} (are the CLI and the daemon the same version?)"
    )]
    Bad(&'static str),
}

impl Record {
    /// Appends the record's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 5]);
        let tag = match self {
            Record::Interface { port, name } => {
                out.extend_from_slice(&port.to_be_bytes());
                out.extend_from_slice(name.as_bytes());
                b'I'
            }
            Record::Frame {
                time_ns,
                port,
                outbound,
                wire_len,
                data,
            } => {
                out.extend_from_slice(&time_ns.to_be_bytes());
                out.extend_from_slice(&port.to_be_bytes());
                out.push(u8::from(*outbound));
                out.extend_from_slice(&wire_len.to_be_bytes());
                out.extend_from_slice(data);
                b'F'
            }
            Record::Stats { captured, dropped } => {
                out.extend_from_slice(&captured.to_be_bytes());
                out.extend_from_slice(&dropped.to_be_bytes());
                b'S'
            }
        };
        let len = u32::try_from(out.len() - start - 5).unwrap_or(u32::MAX);
        out[start] = tag;
        out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    }

    /// Reads the next record; `None` at a clean end of the stream.
    ///
    /// # Errors
    /// On a read error, a record cut short, or one that does not decode.
    pub fn read_from(r: &mut impl Read) -> Result<Option<Record>, StreamError> {
        let mut head = [0u8; 5];
        match r.read(&mut head[..1])? {
            0 => return Ok(None),
            _ => r.read_exact(&mut head[1..])?,
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_RECORD {
            return Err(StreamError::Bad("a record longer than the limit"));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        Self::decode(head[0], &body).map(Some)
    }

    fn decode(tag: u8, body: &[u8]) -> Result<Record, StreamError> {
        let u16_at = |i: usize| body.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let u32_at = |i: usize| {
            body.get(i..i + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let u64_at = |i: usize| {
            body.get(i..i + 8).map(|b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                u64::from_be_bytes(a)
            })
        };
        match tag {
            b'I' => {
                let port = u16_at(0).ok_or(StreamError::Bad("a short interface record"))?;
                let name = std::str::from_utf8(&body[2..])
                    .map_err(|_| StreamError::Bad("an interface name that is not UTF-8"))?;
                Ok(Record::Interface {
                    port,
                    name: name.to_string(),
                })
            }
            b'F' => {
                let short = StreamError::Bad("a short frame record");
                let (Some(time_ns), Some(port), Some(&dir), Some(wire_len)) =
                    (u64_at(0), u16_at(8), body.get(10), u32_at(11))
                else {
                    return Err(short);
                };
                if dir > 1 {
                    return Err(StreamError::Bad("a frame direction other than in or out"));
                }
                Ok(Record::Frame {
                    time_ns,
                    port,
                    outbound: dir == 1,
                    wire_len,
                    data: body[15..].to_vec(),
                })
            }
            b'S' => match (u64_at(0), u64_at(8)) {
                (Some(captured), Some(dropped)) if body.len() == 16 => {
                    Ok(Record::Stats { captured, dropped })
                }
                _ => Err(StreamError::Bad("a counts record of the wrong length")),
            },
            _ => Err(StreamError::Bad("an unknown record tag")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Record> {
        vec![
            Record::Interface {
                port: 3,
                name: "vsw3".into(),
            },
            Record::Frame {
                time_ns: 1_764_000_000_123_456_789,
                port: 3,
                outbound: true,
                wire_len: 1514,
                data: (0..=255).collect(),
            },
            Record::Frame {
                time_ns: 0,
                port: 0,
                outbound: false,
                wire_len: 0,
                data: Vec::new(),
            },
            Record::Stats {
                captured: 9,
                dropped: u64::MAX,
            },
        ]
    }

    #[test]
    fn records_round_trip_and_the_stream_ends_cleanly() {
        let mut bytes = Vec::new();
        for r in all() {
            r.encode(&mut bytes);
        }
        let mut reader = bytes.as_slice();
        let mut back = Vec::new();
        while let Some(r) = Record::read_from(&mut reader).unwrap() {
            back.push(r);
        }
        assert_eq!(back, all());
    }

    #[test]
    fn garbage_and_cut_streams_are_errors_not_panics() {
        let mut bytes = Vec::new();
        all()[1].encode(&mut bytes);
        for cut in 1..bytes.len() {
            assert!(
                Record::read_from(&mut &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        for bad in [
            &b"X\0\0\0\0"[..],
            b"S\0\0\0\x01z",
            b"F\0\0\0\x03abc",
            b"I\0\0\0\x01a",
            b"I\0\0\0\x03\0\x01\xff",
            b"F\xff\xff\xff\xff",
        ] {
            assert!(matches!(
                Record::read_from(&mut &bad[..]),
                Err(StreamError::Bad(_) | StreamError::Io(_))
            ));
        }
        let mut wrong_dir = Vec::new();
        all()[1].encode(&mut wrong_dir);
        wrong_dir[5 + 10] = 2;
        assert!(Record::read_from(&mut wrong_dir.as_slice()).is_err());
    }
}
