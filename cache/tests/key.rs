//! Keys: determinism, sensitivity to every field, an unambiguous encoding, hex round trip.

use metajit_cache::{Key, KeyBuilder};
use proptest::prelude::*;

#[derive(Clone, Debug, PartialEq)]
enum Field {
    Bytes(Vec<u8>),
    Str(String),
    U32(u32),
    U64(u64),
}

fn key_of(domain: &str, fields: &[Field]) -> Key {
    fields
        .iter()
        .fold(KeyBuilder::new(domain), |b, f| match f {
            Field::Bytes(v) => b.bytes(v),
            Field::Str(s) => b.str(s),
            Field::U32(n) => b.u32(*n),
            Field::U64(n) => b.u64(*n),
        })
        .finish()
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        proptest::collection::vec(0u8..4, 0..4).prop_map(Field::Bytes),
        "[ab]{0,3}".prop_map(Field::Str),
        (0u32..3).prop_map(Field::U32),
        (0u64..3).prop_map(Field::U64),
    ]
}

/// Pins the encoding, byte by byte and as a value: keys must not change between releases, or
/// every warm cache silently goes cold. Change the encoding only together with a
/// `FORMAT_VERSION` bump (which moves entries to a new tree), then update this test.
#[test]
fn encoding_is_pinned() {
    let key = KeyBuilder::new("kernel")
        .str("%0 = add a b")
        .bytes(b"\x00\x01")
        .u32(7)
        .u64(9)
        .finish();
    let mut expected = blake3::Hasher::new_derive_key("metajit-cache key v1");
    expected.update(&[3, 1, 0, 0, 0]); // u32 FORMAT_VERSION
    expected
        .update(&[2, 6, 0, 0, 0, 0, 0, 0, 0])
        .update(b"kernel"); // str domain
    expected
        .update(&[2, 12, 0, 0, 0, 0, 0, 0, 0])
        .update(b"%0 = add a b");
    expected.update(&[1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1]); // bytes
    expected.update(&[3, 7, 0, 0, 0]); // u32
    expected.update(&[4, 9, 0, 0, 0, 0, 0, 0, 0]); // u64
    assert_eq!(key.0, *expected.finalize().as_bytes());
    assert_eq!(
        key.to_string(),
        "dfd860b3797a9b10eb0c88ba861ccfd36d284b1c34655569cdbf5e00827f7773"
    );
}

#[test]
fn same_fields_same_key() {
    let a = KeyBuilder::new("kernel")
        .str("ir")
        .str("cpu")
        .u32(3)
        .finish();
    let b = KeyBuilder::new("kernel")
        .str("ir")
        .str("cpu")
        .u32(3)
        .finish();
    assert_eq!(a, b);
}

#[test]
fn field_boundaries_and_types_matter() {
    let distinct = [
        KeyBuilder::new("k").str("ab").str("c").finish(),
        KeyBuilder::new("k").str("a").str("bc").finish(),
        KeyBuilder::new("k").str("abc").finish(),
        KeyBuilder::new("k").str("").str("abc").finish(),
        KeyBuilder::new("k").str("abc").str("").finish(),
        KeyBuilder::new("k").bytes(b"abc").finish(),
        KeyBuilder::new("k").u32(1).finish(),
        KeyBuilder::new("k").u64(1).finish(),
        KeyBuilder::new("k").bytes(&1u32.to_le_bytes()).finish(),
        KeyBuilder::new("k").finish(),
        KeyBuilder::new("kab").str("c").finish(),
        KeyBuilder::new("other").str("ab").str("c").finish(),
    ];
    for (i, a) in distinct.iter().enumerate() {
        for b in &distinct[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn hex_round_trip() {
    let key = KeyBuilder::new("kernel").str("x").finish();
    let hex = key.to_string();
    assert_eq!(hex.len(), 64);
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(Key::from_hex(&hex), Some(key));
    assert_eq!(Key::from_hex(&hex.to_uppercase()), Some(key));
    assert_eq!(format!("{key:?}"), format!("Key({hex})"));
    assert_eq!(Key::from_hex(&hex[..63]), None);
    assert_eq!(Key::from_hex(&format!("{hex}0")), None);
    assert_eq!(Key::from_hex(&format!("g{}", &hex[1..])), None);
    assert_eq!(Key::from_hex(&format!("é{}", &hex[2..])), None);
    assert_eq!(Key::from_hex(""), None);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Equal field sequences, and only those, give equal keys.
    #[test]
    fn keys_equal_iff_fields_equal(
        a in proptest::collection::vec(field(), 0..4),
        b in proptest::collection::vec(field(), 0..4),
    ) {
        prop_assert_eq!(a == b, key_of("k", &a) == key_of("k", &b));
    }

    /// Two different splits of one string into two fields give different keys.
    #[test]
    fn splits_are_distinguished(s in "[a-c]{0,8}", i in 0usize..9, j in 0usize..9) {
        let (i, j) = (i.min(s.len()), j.min(s.len()));
        let split = |at: usize| KeyBuilder::new("k").str(&s[..at]).str(&s[at..]).finish();
        prop_assert_eq!(i == j, split(i) == split(j));
    }

    #[test]
    fn hex_parses_back(bytes in proptest::array::uniform32(any::<u8>())) {
        let key = Key(bytes);
        prop_assert_eq!(Key::from_hex(&key.to_string()), Some(key));
    }
}
