//! Cache keys: 32-byte blake3 digests of a canonical, unambiguous encoding of everything that
//! can change a compiled artifact.
//!
//! Guarantees:
//! - The same sequence of fields gives the same [`Key`] in every process, on every platform and
//!   with every Rust release (no `DefaultHasher`; integers are little-endian).
//! - Different sequences give different keys (up to blake3 collisions): every field is written
//!   as a type tag, then, for byte strings, a length, then its bytes. That encoding is
//!   prefix-free, so `("ab", "c")`, `("a", "bc")` and `("abc")` all differ, as do `u32(1)` and
//!   `u64(1)`.
//! - [`FORMAT_VERSION`] and the builder's domain are always the first fields, so a format change
//!   or a different use of the builder never produces an old key.

use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::FORMAT_VERSION;

/// A cache key: the blake3 digest of a kernel's canonical description (see [`KeyBuilder`]).
///
/// Displays as 64 lower-case hex digits, which is also the entry's file name on disk.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex digits (either case), the form [`Display`](fmt::Display) writes; `None` for
    /// anything else.
    pub fn from_hex(s: &str) -> Option<Key> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
            *byte = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
        }
        Some(Key(out))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

/// Hashes only the first 8 bytes: a key is already a uniform digest, and equality still compares
/// all 32 bytes, so this loses nothing and makes the memory tier's lookups cheap.
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// A [`Hasher`] for [`Key`]s that passes the key's (already uniform) first 8 bytes through.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached by a `Hash` impl other than `Key`'s; fold the bytes in FNV-1a style.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The `BuildHasher` the memory tier uses.
pub(crate) type KeyHashBuilder = BuildHasherDefault<KeyHasher>;

/// Type tags of the encoded fields; part of the encoding, so never renumber them.
const TAG_BYTES: u8 = 1;
const TAG_STR: u8 = 2;
const TAG_U32: u8 = 3;
const TAG_U64: u8 = 4;

/// Builds a [`Key`] from a sequence of typed fields.
///
/// ```
/// use metajit_cache::KeyBuilder;
/// let key = KeyBuilder::new("kernel")
///     .str("%0 = load a : f32[4]\n...") // canonical kernel IR text
///     .str("cpu-cranelift")             // backend
///     .str("x86_64+avx2+fma")           // target features
///     .u32(3)                           // codegen version
///     .str("opt=speed")                 // compile options
///     .finish();
/// assert_eq!(key.to_string().len(), 64);
/// ```
#[derive(Clone, Debug)]
pub struct KeyBuilder {
    hasher: blake3::Hasher,
}

impl KeyBuilder {
    /// Starts a key in `domain` (what is being keyed, e.g. `"kernel"`); [`FORMAT_VERSION`] is
    /// mixed in first.
    pub fn new(domain: &str) -> KeyBuilder {
        let hasher = blake3::Hasher::new_derive_key("metajit-cache key v1");
        KeyBuilder { hasher }.u32(FORMAT_VERSION).str(domain)
    }

    /// Feeds a byte string (tag, length, bytes).
    pub fn bytes(self, bytes: &[u8]) -> KeyBuilder {
        self.field(TAG_BYTES, bytes)
    }

    /// Feeds a string (tag, length, UTF-8 bytes); distinct from [`bytes`](Self::bytes) of the
    /// same content.
    pub fn str(self, s: &str) -> KeyBuilder {
        self.field(TAG_STR, s.as_bytes())
    }

    /// Feeds a `u32` (tag, 4 little-endian bytes).
    pub fn u32(mut self, n: u32) -> KeyBuilder {
        self.hasher.update(&[TAG_U32]);
        self.hasher.update(&n.to_le_bytes());
        self
    }

    /// Feeds a `u64` (tag, 8 little-endian bytes).
    pub fn u64(mut self, n: u64) -> KeyBuilder {
        self.hasher.update(&[TAG_U64]);
        self.hasher.update(&n.to_le_bytes());
        self
    }

    /// The key of everything fed so far.
    pub fn finish(self) -> Key {
        Key(*self.hasher.finalize().as_bytes())
    }

    fn field(mut self, tag: u8, bytes: &[u8]) -> KeyBuilder {
        self.hasher.update(&[tag]);
        self.hasher.update(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
        self
    }
}
