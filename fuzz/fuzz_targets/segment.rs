//! Opening, scanning and verifying an arbitrary segment file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gemba::fuzzing::segment(data);
});
