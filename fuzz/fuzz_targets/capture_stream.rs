//! `control::capture::Record::read_from` (what `vswitch capture` reads from the daemon) on
//! arbitrary bytes: no panic, and every record that decodes encodes back to the same bytes.
#![no_main]

use control::capture::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        let before = rest;
        let Ok(Some(record)) = Record::read_from(&mut rest) else {
            return;
        };
        let mut bytes = Vec::new();
        record.encode(&mut bytes);
        assert_eq!(bytes, before[..before.len() - rest.len()], "{record:?}");
    }
});
