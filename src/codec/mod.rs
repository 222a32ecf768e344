//! TEMPORARY raw stand-in with the agreed codec interface; replaced by the real codecs.
#![allow(missing_docs, dead_code)]

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub offset: usize,
    pub what: &'static str,
}

fn raw_encode(v: impl Iterator<Item = u64>, out: &mut Vec<u8>) {
    out.push(0);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}
fn raw_decode(chunk: &[u8], n: usize) -> Result<Vec<u64>, DecodeError> {
    if chunk.len() != 1 + n * 8 || chunk[0] != 0 {
        return Err(DecodeError { offset: 0, what: "bad raw chunk" });
    }
    Ok(chunk[1..].chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect())
}
pub fn encode_timestamps(ts: &[i64], out: &mut Vec<u8>) {
    raw_encode(ts.iter().map(|&t| t as u64), out)
}
pub fn decode_timestamps(chunk: &[u8], n: usize, out: &mut Vec<i64>) -> Result<(), DecodeError> {
    out.clear();
    out.extend(raw_decode(chunk, n)?.into_iter().map(|v| v as i64));
    Ok(())
}
pub fn encode_f64(values: &[f64], out: &mut Vec<u8>) {
    raw_encode(values.iter().map(|v| v.to_bits()), out)
}
pub fn decode_f64(chunk: &[u8], n: usize, out: &mut Vec<f64>) -> Result<(), DecodeError> {
    out.clear();
    out.extend(raw_decode(chunk, n)?.into_iter().map(f64::from_bits));
    Ok(())
}
pub fn encode_i64(values: &[i64], out: &mut Vec<u8>) {
    raw_encode(values.iter().map(|&v| v as u64), out)
}
pub fn decode_i64(chunk: &[u8], n: usize, out: &mut Vec<i64>) -> Result<(), DecodeError> {
    out.clear();
    out.extend(raw_decode(chunk, n)?.into_iter().map(|v| v as i64));
    Ok(())
}
pub fn encode_bool(values: &[bool], out: &mut Vec<u8>) {
    raw_encode(values.iter().map(|&v| v as u64), out)
}
pub fn decode_bool(chunk: &[u8], n: usize, out: &mut Vec<bool>) -> Result<(), DecodeError> {
    out.clear();
    let v = raw_decode(chunk, n)?;
    if v.iter().any(|&x| x > 1) {
        return Err(DecodeError { offset: 0, what: "bad bool" });
    }
    out.extend(v.into_iter().map(|x| x == 1));
    Ok(())
}
pub fn describe(_chunk: &[u8]) -> String {
    "raw".into()
}
