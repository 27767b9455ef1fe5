//! What the running kernel offers the datapath, checked once at start-up so a missing feature
//! is one clear message instead of a failure deep inside a port's set-up.
//!
//! vswitch relies on: TPACKET_V3 RX rings with PACKET_VNET_HDR (GSO super-frames and partial
//! checksums through packet sockets; Linux ≥ 4.19, as Open vSwitch's userspace TSO requires),
//! symmetric PACKET_FANOUT_HASH, and for TAP ports IFF_VNET_HDR with TUNSETOFFLOAD. UDP
//! segmentation offload (USO) in virtio-net headers came with Linux 6.2: older kernels drop
//! UDP super-frames before the ring (counted as ring drops), which only applications that ask
//! for UDP_SEGMENT send.

use std::fmt;

/// Oldest kernel the datapath runs on.
pub const MIN_KERNEL: (u32, u32) = (4, 19);
/// First kernel whose virtio-net headers carry UDP segmentation (USO).
pub const USO_KERNEL: (u32, u32) = (6, 2);

/// The running kernel's release and what follows from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// As `uname -r` prints it.
    pub release: String,
    /// Major and minor version.
    pub version: (u32, u32),
}

impl Kernel {
    /// Reads `/proc/sys/kernel/osrelease`.
    pub fn running() -> std::io::Result<Kernel> {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
        Kernel::parse(release.trim()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("cannot read a version from kernel release {release:?}"),
            )
        })
    }

    /// Parses a release such as `6.18.44-fc-v1045`.
    pub fn parse(release: &str) -> Option<Kernel> {
        let mut parts = release.split(['.', '-', '+']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Kernel {
            release: release.to_string(),
            version: (major, minor),
        })
    }

    /// Refuses a kernel too old for the datapath, saying what is missing.
    pub fn check(&self) -> Result<(), String> {
        if self.version < MIN_KERNEL {
            return Err(format!(
                "Linux {} is too old for vswitch's datapath: it needs {}.{} or later \
                 (TPACKET_V3 rings with PACKET_VNET_HDR for GSO super-frames and partial \
                 checksums); upgrade the kernel",
                self.release, MIN_KERNEL.0, MIN_KERNEL.1
            ));
        }
        Ok(())
    }

    /// Whether virtio-net headers carry UDP segmentation on this kernel.
    pub fn has_uso(&self) -> bool {
        self.version >= USO_KERNEL
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Linux {}: PACKET_VNET_HDR rings, TSO4/6, {}",
            self.release,
            if self.has_uso() {
                "USO"
            } else {
                "no USO (UDP super-frames are dropped before the ring)"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_and_old_kernels_are_refused() {
        let k = Kernel::parse("6.18.44-fc-v1045").unwrap_or_else(|| panic!("parses"));
        assert_eq!(k.version, (6, 18));
        assert!(k.check().is_ok() && k.has_uso());
        let old = Kernel::parse("4.14.0").unwrap_or_else(|| panic!("parses"));
        let err = old.check().unwrap_err();
        assert!(err.contains("4.19") && err.contains("upgrade"), "{err}");
        let mid = Kernel::parse("5.10.0-28-amd64").unwrap_or_else(|| panic!("parses"));
        assert!(mid.check().is_ok() && !mid.has_uso());
        assert!(mid.to_string().contains("no USO"));
        assert_eq!(Kernel::parse("garbage"), None);
        assert!(Kernel::running().is_ok());
    }
}
