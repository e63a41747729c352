//! The IDX file format (MNIST's): a big-endian header — two zero bytes, an element-type byte, a
//! rank byte, then one `u32` extent per axis — followed by the elements, row-major.
//!
//! [`read_idx`] reads a file, gunzipping it first when it starts with gzip's magic bytes, and
//! checks that the payload is exactly as long as the header promises. It reads `u8` files (the
//! type of every MNIST-like data set); another element type is an error.

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// The element-type byte of a `u8` IDX file.
pub const IDX_U8: u8 = 0x08;

/// The contents of an IDX file of `u8` elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    /// The header's first four bytes as a big-endian number: `0x0000_08_NN` for `u8` elements
    /// and rank `NN` (MNIST's images are 2051, its labels 2049).
    pub magic: u32,
    /// The extents, outermost first.
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

/// Reads an IDX file of `u8` elements, gzipped or not (told apart by gzip's magic bytes).
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Format`] when a gzip stream is damaged,
/// the header is short or not an IDX header, the element type is not `u8`, or the payload is
/// shorter or longer than the header's extents say. Each names the file.
pub fn read_idx(path: impl AsRef<Path>) -> Result<Idx> {
    let path = path.as_ref();
    let raw = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        gunzip(path, &raw)?
    } else {
        raw
    };
    parse_idx(path, &bytes)
}

/// Decompresses a whole gzip stream (every member), reporting a damaged one as a format error.
pub(crate) fn gunzip(path: &Path, raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(raw)
        .read_to_end(&mut out)
        .map_err(|e| Error::format("gzip", path, format!("damaged gzip stream: {e}")))?;
    Ok(out)
}

/// Parses an uncompressed IDX file.
fn parse_idx(path: &Path, bytes: &[u8]) -> Result<Idx> {
    let bad = |reason: String| Error::format("idx", path, reason);
    let Some(head) = bytes.first_chunk::<4>() else {
        return Err(bad(format!(
            "{} byte(s): too short for the 4-byte idx header",
            bytes.len()
        )));
    };
    let magic = u32::from_be_bytes(*head);
    if head[0] != 0 || head[1] != 0 {
        return Err(bad(format!(
            "wrong magic {magic:#010x}: an idx file starts with two zero bytes"
        )));
    }
    if head[2] != IDX_U8 {
        return Err(bad(format!(
            "element type {:#04x} is not supported (magic {magic:#010x}); only u8 ({IDX_U8:#04x}) is",
            head[2]
        )));
    }
    let rank = head[3] as usize;
    let header_len = 4 + 4 * rank;
    if bytes.len() < header_len {
        return Err(bad(format!(
            "truncated header: rank {rank} needs {header_len} bytes, the file has {}",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad(format!("extents {dims:?} overflow")))?;
    let found = bytes.len() - header_len;
    if found < expected {
        return Err(bad(format!(
            "truncated payload: extents {dims:?} need {expected} bytes after the header, found {found}"
        )));
    }
    if found > expected {
        return Err(bad(format!(
            "{} byte(s) past the end of the payload (extents {dims:?}, {expected} bytes)",
            found - expected
        )));
    }
    Ok(Idx {
        magic,
        dims,
        data: bytes[header_len..].to_vec(),
    })
}
