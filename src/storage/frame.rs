//! Record framing shared by log segments and snapshots: `[length u32][crc32 u32][payload]`,
//! little-endian, the CRC covering the length bytes and the payload. A file starts with an
//! 8-byte magic, a u32 format version and a u64 sequence number.

use std::io::{self, Read, Write};

use super::codec::MAX_PAYLOAD;

pub const FRAME_HEADER: usize = 8;
pub const FILE_HEADER: usize = 20;
/// The format of log segments (and of snapshots written as facts, which are still read).
pub const FORMAT_VERSION: u32 = 1;

/// Appends one frame around `payload` (already encoded) to `out`.
#[cfg(test)]
fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&checksum(&len, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Encodes `value` and frames it, without an intermediate buffer.
pub fn push_encoded<T: serde::Serialize>(out: &mut Vec<u8>, value: &T) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    super::codec::encode_into(value, out);
    let len = ((out.len() - start - FRAME_HEADER) as u32).to_le_bytes();
    let crc = checksum(&len, &out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(len: &[u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(payload);
    h.finalize()
}

/// What lies at one offset of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole frame whose checksum matches; `next` is the offset after it.
    Valid { payload: &'a [u8], next: usize },
    /// The buffer ends inside the frame: a write that did not finish.
    Torn,
    /// A frame whose length is impossible or whose checksum does not match.
    Bad,
}

/// Reads the frame at `offset`. A length past the end of `buf` is `Torn` and is never allocated.
pub fn read_frame(buf: &[u8], offset: usize) -> Frame<'_> {
    let Some(header) = buf.get(offset..offset + FRAME_HEADER) else {
        return Frame::Torn;
    };
    let len: [u8; 4] = header[..4].try_into().expect("4 bytes");
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    let n = u32::from_le_bytes(len);
    if n > MAX_PAYLOAD {
        return Frame::Bad;
    }
    let start = offset + FRAME_HEADER;
    let Some(payload) = buf.get(start..start + n as usize) else {
        return Frame::Torn;
    };
    if checksum(&len, payload) != crc {
        return Frame::Bad;
    }
    Frame::Valid {
        payload,
        next: start + n as usize,
    }
}

pub fn write_file_header(
    w: &mut impl Write,
    magic: &[u8; 8],
    version: u32,
    seq: u64,
) -> io::Result<()> {
    let mut header = Vec::with_capacity(FILE_HEADER);
    header.extend_from_slice(magic);
    header.extend_from_slice(&version.to_le_bytes());
    header.extend_from_slice(&seq.to_le_bytes());
    w.write_all(&header)
}

/// Why a file header was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than a header: a file whose creation did not finish.
    Short,
    WrongMagic,
    UnsupportedVersion(u32),
}

/// Checks the header and returns the file's format version (one of `versions`) and sequence
/// number.
pub fn read_file_header(
    buf: &[u8],
    magic: &[u8; 8],
    versions: &[u32],
) -> Result<(u32, u64), HeaderError> {
    if buf.len() < FILE_HEADER {
        return Err(HeaderError::Short);
    }
    if &buf[..8] != magic {
        return Err(HeaderError::WrongMagic);
    }
    let version = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
    if !versions.contains(&version) {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    let seq = u64::from_le_bytes(buf[12..20].try_into().expect("8 bytes"));
    Ok((version, seq))
}

/// Reads a whole file into memory.
pub(crate) fn read_all(path: &std::path::Path) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_back_and_any_damage_is_noticed() {
        let mut buf = Vec::new();
        push_frame(&mut buf, b"hello");
        assert_eq!(
            read_frame(&buf, 0),
            Frame::Valid {
                payload: b"hello",
                next: buf.len()
            }
        );
        for cut in 0..buf.len() {
            assert_eq!(read_frame(&buf[..cut], 0), Frame::Torn, "cut at {cut}");
        }
        for i in 0..buf.len() {
            let mut damaged = buf.clone();
            damaged[i] ^= 0x10;
            assert_ne!(
                read_frame(&damaged, 0),
                Frame::Valid {
                    payload: b"hello",
                    next: buf.len()
                }
            );
        }
    }

    #[test]
    fn an_absurd_length_is_bad_not_allocated() {
        let buf = [0xFF, 0xFF, 0xFF, 0x7F, 0, 0, 0, 0];
        assert_eq!(read_frame(&buf, 0), Frame::Bad);
    }
}
