//! Reading and writing capture files with pcap-file: classic pcap (µs or ns) and pcapng input,
//! classic pcap output. Only Ethernet captures are accepted, since each record is fed to a
//! port as one frame.

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, Endianness, TsResolution};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Capture timestamp since the epoch.
    pub timestamp: Duration,
    /// The captured bytes (may be shorter than the frame was on the wire).
    pub data: Vec<u8>,
    /// Length on the wire.
    pub orig_len: u32,
}

/// Why a capture could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// The file could not be opened or created.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid capture.
    #[error("{path}: not a readable pcap/pcapng capture: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: pcap_file::PcapError,
    },
    /// The capture's link type is not Ethernet.
    #[error(
        "{path}: link type {linktype:?} is not Ethernet (DLT_EN10MB); vswitch replays Ethernet captures only"
    )]
    LinkType {
        /// The file.
        path: PathBuf,
        /// Its link type.
        linktype: DataLink,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PcapError + '_ {
    move |source| PcapError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn fmt_err(path: &Path) -> impl FnOnce(pcap_file::PcapError) -> PcapError + '_ {
    move |source| PcapError::Format {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads every record of a pcap or pcapng file, in file order.
pub fn read_file(path: &Path) -> Result<Vec<Record>, PcapError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(io_err(path))?;
    let file = File::open(path).map_err(io_err(path))?;
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        read_pcapng(path, BufReader::new(file))
    } else {
        read_pcap(path, BufReader::new(file))
    }
}

fn read_pcap(path: &Path, input: impl Read) -> Result<Vec<Record>, PcapError> {
    let mut reader = PcapReader::new(input).map_err(fmt_err(path))?;
    let header = reader.header();
    // libpcap masks the FCS bits out of the link-type field; so do we.
    let linktype = DataLink::from(u32::from(header.datalink) & 0x03FF_FFFF);
    if linktype != DataLink::ETHERNET {
        return Err(PcapError::LinkType {
            path: path.to_path_buf(),
            linktype,
        });
    }
    let frac_nanos = match header.ts_resolution {
        TsResolution::MicroSecond => 1_000,
        TsResolution::NanoSecond => 1,
    };
    let mut out = Vec::new();
    // Raw records: pcap-file's checked records refuse lengths beyond the snaplen, which is just
    // what a snaplen-truncated capture holds and what libpcap reads without complaint.
    while let Some(pkt) = reader.next_raw_packet() {
        let pkt = pkt.map_err(fmt_err(path))?;
        let nanos = u64::from(pkt.ts_frac).saturating_mul(frac_nanos);
        let timestamp = Duration::from_secs(u64::from(pkt.ts_sec)) + Duration::from_nanos(nanos);
        let orig_len = pkt.orig_len.max(pkt.incl_len);
        out.push(Record {
            timestamp,
            orig_len,
            data: pkt.data.into_owned(),
        });
    }
    Ok(out)
}

fn read_pcapng(path: &Path, input: impl Read) -> Result<Vec<Record>, PcapError> {
    let mut reader = PcapNgReader::new(input).map_err(fmt_err(path))?;
    let mut out = Vec::new();
    while let Some(block) = reader.next_block() {
        let block = block.map_err(fmt_err(path))?;
        let (timestamp, orig_len, data, iface) = match block {
            Block::EnhancedPacket(p) => (
                p.timestamp,
                p.original_len,
                p.data.into_owned(),
                Some(p.interface_id),
            ),
            Block::SimplePacket(p) => {
                (Duration::ZERO, p.original_len, p.data.into_owned(), Some(0))
            }
            _ => continue,
        };
        let linktype = iface
            .and_then(|i| reader.interfaces().get(i as usize))
            .map(|i| i.linktype)
            .unwrap_or(DataLink::ETHERNET);
        if linktype != DataLink::ETHERNET {
            return Err(PcapError::LinkType {
                path: path.to_path_buf(),
                linktype,
            });
        }
        out.push(Record {
            timestamp,
            orig_len,
            data,
        });
    }
    Ok(out)
}

/// Writes records to a classic little-endian, microsecond pcap file (Ethernet).
pub fn write_file(path: &Path, records: &[Record]) -> Result<(), PcapError> {
    let file = File::create(path).map_err(io_err(path))?;
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        endianness: Endianness::Little,
        ts_resolution: TsResolution::MicroSecond,
        snaplen: 262_144,
        ..PcapHeader::default()
    };
    let mut writer =
        PcapWriter::with_header(BufWriter::new(file), header).map_err(fmt_err(path))?;
    for r in records {
        let pkt = PcapPacket::new(r.timestamp, r.orig_len.max(r.data.len() as u32), &r.data);
        writer.write_packet(&pkt).map_err(fmt_err(path))?;
    }
    let mut inner = writer.into_writer();
    std::io::Write::flush(&mut inner).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pcap");
        let recs = vec![
            Record {
                timestamp: Duration::from_micros(1_500_000),
                data: vec![1; 60],
                orig_len: 60,
            },
            Record {
                timestamp: Duration::from_micros(1_500_007),
                data: vec![2; 14],
                orig_len: 100,
            },
        ];
        write_file(&path, &recs).unwrap();
        assert_eq!(read_file(&path).unwrap(), recs);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pcap");
        std::fs::write(&path, b"definitely not a capture file").unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.contains("not a readable pcap"), "{err}");
        assert!(read_file(&dir.path().join("missing.pcap")).is_err());
    }
}
