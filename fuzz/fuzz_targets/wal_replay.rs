//! Recovery of a database whose log files hold arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gemba::fuzzing::wal_replay(data);
});
