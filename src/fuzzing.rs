//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test. Not part of the
//! supported API: names and signatures change freely.

use crate::wal::format;

/// Parses `data` as a log file (header, then records) and decodes every record body that
/// passes its checksum. Must never panic.
pub fn wal_records(data: &[u8]) {
    let _ = format::check_header(data, 1);
    let mut pos = format::HEADER_LEN.min(data.len());
    let mut prev = 0;
    while pos < data.len() {
        match format::read_record(data, pos, prev) {
            Ok(r) => {
                if r.kind == format::KIND_BATCH {
                    let _ = format::decode_batch(r.body);
                }
                prev = r.seq;
                pos += r.framed_len;
            }
            Err(_) => match format::find_valid_record(data, pos + 1, prev) {
                Some(next) => pos = next,
                None => break,
            },
        }
    }
    // Record bodies are also decoded directly, as if their checksum had passed.
    let _ = format::decode_batch(data);
}
