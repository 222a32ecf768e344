//! Every codec decoder on arbitrary chunks and counts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gemba::fuzzing::codec(data);
});
