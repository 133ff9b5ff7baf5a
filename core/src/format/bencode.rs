//! Strict bencode (BEP 3): a borrowing decoder that rejects anything non-canonical, and an encoder.
//!
//! The decoder keeps the raw byte span of every dictionary so callers can hash the exact bytes they
//! received (the info-hash must be the hash of the original `info` bytes, never of a re-encoding).
//! Depth and input size are bounded so hostile input cannot exhaust the stack or memory.

use std::collections::BTreeMap;

/// Deepest nesting accepted. Real torrents nest a file tree a few dozen levels at most.
pub const MAX_DEPTH: usize = 256;
/// Largest input accepted by [`decode`] (a 100 GiB torrent with 16 KiB pieces has ~130 MiB of hashes;
/// nobody makes those, and anything larger is an attack).
pub const MAX_INPUT: usize = 128 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BencodeError {
    #[error("bencode truncated at byte {0}: the file is incomplete")]
    Truncated(usize),
    #[error("bencode invalid at byte {pos}: {what}")]
    Invalid { pos: usize, what: &'static str },
    #[error("bencode not canonical at byte {pos}: {what}")]
    NonCanonical { pos: usize, what: &'static str },
    #[error("bencode nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("bencode input of {0} bytes exceeds the {MAX_INPUT}-byte limit")]
    TooLarge(usize),
    #[error("{0} bytes of trailing data after the bencoded value")]
    Trailing(usize),
}

/// A decoded value borrowing from the input buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    Dict(Dict<'a>),
}

/// A dictionary: entries in (canonical, strictly ascending) key order plus its raw encoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dict<'a> {
    pub entries: Vec<(&'a [u8], Value<'a>)>,
    pub raw: &'a [u8],
}

impl<'a> Dict<'a> {
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        // Keys are sorted (checked while decoding) so binary search is valid.
        self.entries
            .binary_search_by(|(k, _)| (*k).cmp(key))
            .ok()
            .map(|i| &self.entries[i].1)
    }
}

impl<'a> Value<'a> {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }
    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
    pub fn as_dict(&self) -> Option<&Dict<'a>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }
    /// Converts to an owned value (for re-encoding or keeping past the input's lifetime).
    pub fn to_owned_value(&self) -> OwnedValue {
        match self {
            Value::Int(i) => OwnedValue::Int(*i),
            Value::Bytes(b) => OwnedValue::Bytes(b.to_vec()),
            Value::List(l) => OwnedValue::List(l.iter().map(Value::to_owned_value).collect()),
            Value::Dict(d) => OwnedValue::Dict(
                d.entries
                    .iter()
                    .map(|(k, v)| (k.to_vec(), v.to_owned_value()))
                    .collect(),
            ),
        }
    }
}

/// Decodes exactly one value spanning the whole input.
pub fn decode(input: &[u8]) -> Result<Value<'_>, BencodeError> {
    let (v, end) = decode_prefix(input)?;
    if end != input.len() {
        return Err(BencodeError::Trailing(input.len() - end));
    }
    Ok(v)
}

/// Decodes one value at the start of `input`, returning it and the number of bytes it used.
/// Wire messages (ut_metadata, ccbt_xet) put raw data after a bencoded header.
pub fn decode_prefix(input: &[u8]) -> Result<(Value<'_>, usize), BencodeError> {
    if input.len() > MAX_INPUT {
        return Err(BencodeError::TooLarge(input.len()));
    }
    let mut d = Decoder { buf: input, pos: 0 };
    let v = d.value(0)?;
    Ok((v, d.pos))
}

/// Counts the items of the list found by following dictionary keys `path` from the top, without
/// building anything (O(1) memory): a cheap check before a full decode, so an input with far too
/// many entries is refused before it costs memory. `None` if the path is absent or the input
/// malformed there (the full decode then says why).
pub fn count_list_at(input: &[u8], path: &[&[u8]]) -> Option<usize> {
    let mut pos = 0;
    for key in path {
        if input.get(pos) != Some(&b'd') {
            return None;
        }
        pos += 1;
        loop {
            if input.get(pos)? == &b'e' {
                return None; // key not found
            }
            let (k, after) = scan_bytes(input, pos)?;
            if k == *key {
                pos = after;
                break;
            }
            pos = skip(input, after, 0)?;
        }
    }
    if input.get(pos) != Some(&b'l') {
        return None;
    }
    pos += 1;
    let mut n = 0;
    while input.get(pos)? != &b'e' {
        pos = skip(input, pos, 0)?;
        n += 1;
    }
    Some(n)
}

/// A byte string at `pos`: its bytes and the position after it.
fn scan_bytes(input: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let colon = pos + input.get(pos..)?.iter().take(21).position(|&b| b == b':')?;
    let len: usize = std::str::from_utf8(&input[pos..colon]).ok()?.parse().ok()?;
    let end = colon.checked_add(1)?.checked_add(len)?;
    Some((input.get(colon + 1..end)?, end))
}

/// The position after the value at `pos`.
fn skip(input: &[u8], mut pos: usize, depth: usize) -> Option<usize> {
    if depth >= MAX_DEPTH {
        return None;
    }
    match *input.get(pos)? {
        b'i' => Some(pos + input.get(pos..)?.iter().position(|&b| b == b'e')? + 1),
        b'l' | b'd' => {
            pos += 1;
            while *input.get(pos)? != b'e' {
                pos = skip(input, pos, depth + 1)?;
            }
            Some(pos + 1)
        }
        b'0'..=b'9' => scan_bytes(input, pos).map(|(_, e)| e),
        _ => None,
    }
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    fn peek(&self) -> Result<u8, BencodeError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(BencodeError::Truncated(self.pos))
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, BencodeError> {
        if depth >= MAX_DEPTH {
            return Err(BencodeError::TooDeep);
        }
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let i = self.int(b'e')?;
                Ok(Value::Int(i))
            }
            b'0'..=b'9' => Ok(Value::Bytes(self.bytes()?)),
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                // Exact-size containers: a torrent may hold a million small dictionaries.
                items.shrink_to_fit();
                Ok(Value::List(items))
            }
            b'd' => {
                let start = self.pos;
                self.pos += 1;
                let mut entries: Vec<(&'a [u8], Value<'a>)> = Vec::new();
                while self.peek()? != b'e' {
                    let kpos = self.pos;
                    if !self.peek()?.is_ascii_digit() {
                        return Err(BencodeError::Invalid {
                            pos: kpos,
                            what: "dictionary key is not a byte string",
                        });
                    }
                    let k = self.bytes()?;
                    if let Some((prev, _)) = entries.last() {
                        if *prev >= k {
                            return Err(BencodeError::NonCanonical {
                                pos: kpos,
                                what: if *prev == k {
                                    "duplicate dictionary key"
                                } else {
                                    "dictionary keys not sorted"
                                },
                            });
                        }
                    }
                    let v = self.value(depth + 1)?;
                    entries.push((k, v));
                }
                self.pos += 1;
                entries.shrink_to_fit();
                Ok(Value::Dict(Dict {
                    entries,
                    raw: &self.buf[start..self.pos],
                }))
            }
            _ => Err(BencodeError::Invalid {
                pos: self.pos,
                what: "expected 'i', 'l', 'd' or a digit",
            }),
        }
    }

    /// Parses a canonical decimal integer terminated by `term`.
    fn int(&mut self, term: u8) -> Result<i64, BencodeError> {
        let start = self.pos;
        let neg = self.peek()? == b'-';
        if neg {
            self.pos += 1;
        }
        let digits_start = self.pos;
        while self.peek()?.is_ascii_digit() {
            self.pos += 1;
        }
        let digits = &self.buf[digits_start..self.pos];
        if self.peek()? != term {
            return Err(BencodeError::Invalid {
                pos: self.pos,
                what: "bad character in integer",
            });
        }
        if digits.is_empty() {
            return Err(BencodeError::Invalid {
                pos: start,
                what: "integer has no digits",
            });
        }
        if digits.len() > 1 && digits[0] == b'0' {
            return Err(BencodeError::NonCanonical {
                pos: start,
                what: "integer has leading zeros",
            });
        }
        if neg && digits == b"0" {
            return Err(BencodeError::NonCanonical {
                pos: start,
                what: "negative zero",
            });
        }
        let mut v: i64 = 0;
        for &d in digits {
            v = v
                .checked_mul(10)
                .and_then(|v| {
                    if neg {
                        v.checked_sub((d - b'0') as i64)
                    } else {
                        v.checked_add((d - b'0') as i64)
                    }
                })
                .ok_or(BencodeError::Invalid {
                    pos: start,
                    what: "integer out of 64-bit range",
                })?;
        }
        self.pos += 1; // terminator
        Ok(v)
    }

    fn bytes(&mut self) -> Result<&'a [u8], BencodeError> {
        let start = self.pos;
        let len = self.int(b':')?;
        if len < 0 {
            return Err(BencodeError::Invalid {
                pos: start,
                what: "negative string length",
            });
        }
        let len = len as usize;
        let end = self
            .pos
            .checked_add(len)
            .ok_or(BencodeError::Truncated(self.buf.len()))?;
        if end > self.buf.len() {
            return Err(BencodeError::Truncated(self.buf.len()));
        }
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

/// An owned bencode value; dictionaries are `BTreeMap`s so encoding is canonical by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedValue {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<OwnedValue>),
    Dict(BTreeMap<Vec<u8>, OwnedValue>),
}

impl OwnedValue {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            OwnedValue::Int(i) => {
                out.push(b'i');
                out.extend_from_slice(i.to_string().as_bytes());
                out.push(b'e');
            }
            OwnedValue::Bytes(b) => put_bytes(out, b),
            OwnedValue::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            OwnedValue::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    put_bytes(out, k);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }

    pub fn bytes(b: impl Into<Vec<u8>>) -> Self {
        OwnedValue::Bytes(b.into())
    }

    /// Builds a dictionary from `(key, value)` pairs in any order.
    pub fn dict<K: Into<Vec<u8>>>(pairs: impl IntoIterator<Item = (K, OwnedValue)>) -> Self {
        OwnedValue::Dict(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_vectors() {
        let cases: &[&[u8]] = &[
            b"i0e",
            b"i-42e",
            b"4:spam",
            b"0:",
            b"le",
            b"de",
            b"l4:spami42ee",
            b"d3:bar4:spam3:fooi42ee",
            b"d1:ad1:bi1eee",
        ];
        for c in cases {
            let v = decode(c).unwrap();
            assert_eq!(
                v.to_owned_value().encode(),
                *c,
                "{}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn raw_span_is_original_bytes() {
        let input = b"d4:infod1:xi1ee1:zi2ee";
        let v = decode(input).unwrap();
        let info = v
            .as_dict()
            .unwrap()
            .get(b"info")
            .unwrap()
            .as_dict()
            .unwrap();
        assert_eq!(info.raw, b"d1:xi1ee");
    }

    #[test]
    fn rejects_bad_input() {
        let bad: &[(&[u8], &str)] = &[
            (b"", "truncated"),
            (b"i12", "truncated"),
            (b"4:spa", "truncated"),
            (b"i01e", "leading zeros"),
            (b"i-0e", "negative zero"),
            (b"ie", "no digits"),
            (b"i1x2e", "bad character"),
            (b"04:spam", "leading zeros"),
            (b"-1:a", "expected"),
            (b"d3:foo1:a3:bar1:be", "not sorted"),
            (b"d3:foo1:a3:foo1:be", "duplicate"),
            (b"di1e1:ae", "key is not a byte string"),
            (b"i1ei2e", "trailing"),
            (b"i99999999999999999999e", "64-bit"),
            (b"x", "expected"),
            (b"18446744073709551615:", "out of 64-bit range"),
        ];
        for (input, want) in bad {
            let err = decode(input).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{:?}: got {err:?}, want {want:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn counts_a_list_without_decoding() {
        let t = b"d4:infod5:filesld1:ai1eed1:bl1:x1:yeee4:name1:ne1:zi3ee";
        assert_eq!(count_list_at(t, &[b"info", b"files"]), Some(2));
        assert_eq!(count_list_at(t, &[b"info", b"name"]), None);
        assert_eq!(count_list_at(t, &[b"nope"]), None);
        assert_eq!(
            count_list_at(b"d4:infod5:filesl", &[b"info", b"files"]),
            None
        );
        assert_eq!(count_list_at(b"li1ei2ee", &[]), Some(2));
    }

    #[test]
    fn depth_is_bounded() {
        let mut deep = vec![b'l'; MAX_DEPTH + 10];
        deep.extend(vec![b'e'; MAX_DEPTH + 10]);
        assert_eq!(decode(&deep).unwrap_err(), BencodeError::TooDeep);
        let mut ok = vec![b'l'; 100];
        ok.extend(vec![b'e'; 100]);
        assert!(decode(&ok).is_ok());
    }

    #[test]
    fn encoder_sorts_keys() {
        let v = OwnedValue::dict([
            ("zeta", OwnedValue::Int(1)),
            ("alpha", OwnedValue::bytes("x")),
        ]);
        assert_eq!(v.encode(), b"d5:alpha1:x4:zetai1ee");
    }
}
