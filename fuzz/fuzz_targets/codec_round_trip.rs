//! Every encoder on arbitrary values: decoding gives them back bit for bit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gemba::fuzzing::codec_round_trip(data);
});
