//! Capture filters in tcpdump's syntax, compiled and run by libpcap itself.
//!
//! libpcap is opened at run time (`dlopen`), not linked: the daemon runs where libpcap is
//! absent (only `--filter` then needs it), and building vswitch needs no `-dev` package.
//! Debian's `libpcap0.8` (which tcpdump depends on) provides it. Compiling goes through
//! `pcap_compile` on a "dead" Ethernet handle; matching is `pcap_offline_filter`, libpcap's
//! classic-BPF interpreter, which only reads the program and the frame.

use libloading::{Library, Symbol};
use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::sync::{Mutex, OnceLock};

/// `DLT_EN10MB`: frames with an Ethernet header.
const DLT_EN10MB: c_int = 1;
/// `PCAP_NETMASK_UNKNOWN`: `ip broadcast` then fails to compile, as in tcpdump without a device.
const PCAP_NETMASK_UNKNOWN: c_uint = 0xffff_ffff;
/// The sonames tried, Debian's first.
const SONAMES: [&str; 3] = ["libpcap.so.0.8", "libpcap.so.1", "libpcap.so"];

/// `struct bpf_program`.
#[repr(C)]
struct BpfProgram {
    bf_len: c_uint,
    bf_insns: *mut c_void,
}

/// `struct pcap_pkthdr` (`struct timeval` is two longs on Linux).
#[repr(C)]
struct PktHdr {
    tv_sec: libc::c_long,
    tv_usec: libc::c_long,
    caplen: u32,
    len: u32,
}

type OpenDead = unsafe extern "C" fn(c_int, c_int) -> *mut c_void;
type Compile =
    unsafe extern "C" fn(*mut c_void, *mut BpfProgram, *const c_char, c_int, c_uint) -> c_int;
type GetErr = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type Close = unsafe extern "C" fn(*mut c_void);
type FreeCode = unsafe extern "C" fn(*mut BpfProgram);
type OfflineFilter = unsafe extern "C" fn(*const BpfProgram, *const PktHdr, *const u8) -> c_int;

/// Why a filter could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// libpcap is not installed.
    #[error(
        "capture filters need libpcap: install it (`apt-get install libpcap0.8`), or capture without --filter ({0})"
    )]
    NoLibpcap(String),
    /// The expression does not compile.
    #[error(
        "bad capture filter {expr:?}: {reason} (tcpdump's syntax, e.g. \"icmp or tcp port 80\")"
    )]
    Syntax {
        /// The expression.
        expr: String,
        /// libpcap's words.
        reason: String,
    },
}

struct Libpcap {
    lib: Library,
    /// pcap_compile of libpcap before 1.8 kept its parser state in globals.
    compile_lock: Mutex<()>,
}

fn libpcap() -> Result<&'static Libpcap, FilterError> {
    static LIB: OnceLock<Result<Libpcap, String>> = OnceLock::new();
    LIB.get_or_init(|| {
        let mut last = String::new();
        for name in SONAMES {
            // SAFETY: libpcap's initialisers only set up its own state; loading it runs no
            // code of ours and changes nothing the process relies on.
            match unsafe { Library::new(name) } {
                Ok(lib) => {
                    return Ok(Libpcap {
                        lib,
                        compile_lock: Mutex::new(()),
                    });
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    })
    .as_ref()
    .map_err(|e| FilterError::NoLibpcap(e.clone()))
}

impl Libpcap {
    /// The function `name` of libpcap, typed `T` (the caller states the C signature).
    ///
    /// # Safety
    /// `T` must be the symbol's true C signature.
    unsafe fn sym<T>(&self, name: &[u8]) -> Result<Symbol<'_, T>, FilterError> {
        // SAFETY: the caller guarantees T is the symbol's signature.
        unsafe { self.lib.get(name) }.map_err(|e| FilterError::NoLibpcap(e.to_string()))
    }
}

/// A compiled filter, for frames with an Ethernet header. Cheap to share between threads.
pub struct Filter {
    program: BpfProgram,
    offline_filter: OfflineFilter,
    free_code: FreeCode,
    expr: String,
}

// SAFETY: after compilation the program is never written again: pcap_offline_filter only reads
// it (and its instructions, owned by this value until Drop), so sharing it between threads is
// sharing immutable memory.
unsafe impl Send for Filter {}
// SAFETY: as for Send: every use after construction is a read.
unsafe impl Sync for Filter {}

impl Filter {
    /// Compiles `expr` (tcpdump's syntax) for Ethernet frames of up to `snaplen` bytes.
    ///
    /// # Errors
    /// When libpcap is absent, or the expression does not compile (with libpcap's reason).
    pub fn compile(expr: &str, snaplen: u32) -> Result<Filter, FilterError> {
        let lib = libpcap()?;
        let syntax = |reason: String| FilterError::Syntax {
            expr: expr.to_string(),
            reason,
        };
        let text = CString::new(expr).map_err(|_| syntax("it contains a NUL byte".into()))?;
        // SAFETY: each type below is the libpcap prototype of the symbol named with it
        // (pcap/pcap.h of libpcap 1.x).
        let (open_dead, compile, geterr, close, free_code, offline_filter) = unsafe {
            (
                *lib.sym::<OpenDead>(b"pcap_open_dead\0")?,
                *lib.sym::<Compile>(b"pcap_compile\0")?,
                *lib.sym::<GetErr>(b"pcap_geterr\0")?,
                *lib.sym::<Close>(b"pcap_close\0")?,
                *lib.sym::<FreeCode>(b"pcap_freecode\0")?,
                *lib.sym::<OfflineFilter>(b"pcap_offline_filter\0")?,
            )
        };
        let snaplen = c_int::try_from(snaplen).unwrap_or(c_int::MAX);
        let _guard = lib
            .compile_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: plain constructor; a null result is handled.
        let handle = unsafe { open_dead(DLT_EN10MB, snaplen) };
        if handle.is_null() {
            return Err(FilterError::NoLibpcap("pcap_open_dead failed".into()));
        }
        let mut program = BpfProgram {
            bf_len: 0,
            bf_insns: std::ptr::null_mut(),
        };
        // SAFETY: `handle` is live, `program` is a valid out-parameter, `text` a NUL-terminated
        // string that outlives the call.
        let rc = unsafe { compile(handle, &mut program, text.as_ptr(), 1, PCAP_NETMASK_UNKNOWN) };
        let result = if rc == 0 {
            Ok(())
        } else {
            // SAFETY: pcap_geterr returns the handle's NUL-terminated message buffer (or null),
            // valid until the handle is closed below; it is copied before that.
            let msg = unsafe {
                let p = geterr(handle);
                if p.is_null() {
                    "pcap_compile failed".to_string()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            Err(syntax(msg))
        };
        // SAFETY: `handle` came from pcap_open_dead and is not used again; the compiled program
        // does not refer to it.
        unsafe { close(handle) };
        result.map(|()| Filter {
            program,
            offline_filter,
            free_code,
            expr: expr.to_string(),
        })
    }

    /// Whether `frame` (first bytes of a frame `wire_len` long) passes the filter.
    pub fn matches(&self, frame: &[u8], wire_len: usize) -> bool {
        let hdr = PktHdr {
            tv_sec: 0,
            tv_usec: 0,
            caplen: u32::try_from(frame.len()).unwrap_or(u32::MAX),
            len: u32::try_from(wire_len).unwrap_or(u32::MAX),
        };
        // SAFETY: the program is a compiled, immutable one; `hdr.caplen` is the length of
        // `frame`, so the interpreter reads only inside it (classic BPF checks every load
        // against caplen).
        unsafe { (self.offline_filter)(&self.program, &hdr, frame.as_ptr()) != 0 }
    }

    /// The expression it was compiled from.
    pub fn expr(&self) -> &str {
        &self.expr
    }
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("expr", &self.expr)
            .field("instructions", &self.program.bf_len)
            .finish()
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        // SAFETY: the program came from pcap_compile and is freed once, here.
        unsafe { (self.free_code)(&mut self.program) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(proto: u8, dst_port: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&28u16.to_be_bytes());
        f[22] = 64;
        f[23] = proto;
        f[26..30].copy_from_slice(&[10, 0, 0, 2]);
        f[30..34].copy_from_slice(&[10, 0, 0, 3]);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&dst_port.to_be_bytes());
        f
    }

    #[test]
    fn compiles_and_matches_as_tcpdump_would() {
        let f = match Filter::compile("udp dst port 53 and host 10.0.0.3", 65535) {
            Ok(f) => f,
            Err(FilterError::NoLibpcap(e)) => return eprintln!("skipped: no libpcap ({e})"),
            Err(e) => panic!("{e}"),
        };
        assert!(f.matches(&frame(17, 53), 42));
        assert!(!f.matches(&frame(17, 54), 42), "other port");
        assert!(!f.matches(&frame(6, 53), 42), "tcp");
        // Short and empty frames are read within their length: no match, no crash.
        assert!(!f.matches(&frame(17, 53)[..20], 42));
        assert!(!f.matches(&[], 0));
        assert_eq!(f.expr(), "udp dst port 53 and host 10.0.0.3");
    }

    #[test]
    fn a_bad_expression_says_what_libpcap_said() {
        match Filter::compile("tcp port eighty", 65535) {
            Err(FilterError::Syntax { reason, .. }) => assert!(!reason.is_empty()),
            Err(FilterError::NoLibpcap(_)) => {}
            Ok(_) => panic!("compiled"),
        }
        assert!(matches!(
            Filter::compile("icmp\0", 65535),
            Err(FilterError::Syntax { .. } | FilterError::NoLibpcap(_))
        ));
    }
}
