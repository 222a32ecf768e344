//! Operation sequences (writes, deletes, flushes, compactions, crashes, reopens) on the
//! simulated file system, checked against a model.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gemba::fuzzing::ops(data);
});
