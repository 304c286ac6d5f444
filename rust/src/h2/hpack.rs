//! HPACK (RFC 7541) for the server: a decoder with the static table, the dynamic table and
//! Huffman strings, producing header names the `http` crate's way (or the request pseudo-header
//! they are); an encoder that never indexes (static names where there is one, literal values,
//! no Huffman), so the peer's table size never matters and encoding is a copy.
//!
//! Literal values that are not Huffman-coded stay slices of the header block (no copy).

mod table;

use std::collections::VecDeque;
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, StatusCode};

use self::table::{ENCODE_CODES, ENCODE_CODE_LENGTHS};

/// A decoding failure: a connection error of type `COMPRESSION_ERROR` (RFC 9113 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A field ends past the header block.
    Truncated,
    /// An integer longer than this decoder takes (2^28).
    Integer,
    /// Index 0, or past the static and dynamic tables.
    Index,
    /// An invalid Huffman code, EOS inside a string, or padding that is not an EOS prefix.
    Huffman,
    /// A table size update above the limit, or after a field.
    SizeUpdate,
}

/// What a field is named: a request pseudo-header, a regular name, or a name a request must not
/// carry (upper case, not a token, an unknown or response pseudo-header): the request is
/// malformed, but the block still decodes (the table stays in step with the peer's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    Method,
    Scheme,
    Authority,
    Path,
    Header(HeaderName),
    Invalid(Bytes),
}

impl Name {
    pub fn from_bytes(b: &[u8]) -> Name {
        match b {
            b":method" => Name::Method,
            b":scheme" => Name::Scheme,
            b":authority" => Name::Authority,
            b":path" => Name::Path,
            _ if b.first() == Some(&b':') || b.iter().any(u8::is_ascii_uppercase) => {
                Name::Invalid(Bytes::copy_from_slice(b))
            }
            _ => HeaderName::from_bytes(b).map_or_else(|_| Name::Invalid(Bytes::copy_from_slice(b)), Name::Header),
        }
    }

    /// The name's length in bytes (for the table's and the header list's sizes).
    pub fn size(&self) -> usize {
        match self {
            Name::Method | Name::Scheme => 7,
            Name::Authority => 10,
            Name::Path => 5,
            Name::Header(n) => n.as_str().len(),
            Name::Invalid(b) => b.len(),
        }
    }
}

/// RFC 7541 Appendix A.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The static table as decoded fields (names resolved once per process).
fn static_table() -> &'static [(Name, Bytes)] {
    static T: OnceLock<Vec<(Name, Bytes)>> = OnceLock::new();
    T.get_or_init(|| {
        STATIC
            .iter()
            .map(|(n, v)| {
                let name = if *n == ":status" {
                    Name::Invalid(Bytes::from_static(n.as_bytes()))
                } else {
                    Name::from_bytes(n.as_bytes())
                };
                (name, Bytes::from_static(v.as_bytes()))
            })
            .collect()
    })
}

/// The decoder of one connection's request header blocks.
pub struct Decoder {
    table: VecDeque<(Name, Bytes)>,
    size: usize,
    /// The size the peer last set with an update (at most `limit`).
    max: usize,
    /// SETTINGS_HEADER_TABLE_SIZE this side announced.
    limit: usize,
}

impl Decoder {
    pub fn new(limit: usize) -> Self {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max: limit,
            limit,
        }
    }

    /// Decodes a whole header block into `out` (appended).
    pub fn decode(&mut self, block: &Bytes, out: &mut Vec<(Name, Bytes)>) -> Result<(), Error> {
        let mut at = 0;
        let mut fields = false;
        while at < block.len() {
            let b = block[at];
            if b & 0x80 != 0 {
                let i = int(block, &mut at, 7)?;
                // Cloned straight into `out` (no `Result` of a field moved in between).
                let entry = self.entry(i)?;
                out.push(entry.clone());
            } else if b & 0xe0 == 0x20 {
                // Dynamic table size update: only before the first field.
                let size = int(block, &mut at, 5)?;
                if fields || size > self.limit {
                    return Err(Error::SizeUpdate);
                }
                self.max = size;
                self.evict(0);
                continue;
            } else {
                // Literal: with incremental indexing (01), without (0000) or never indexed (0001).
                let (prefix, index) = if b & 0xc0 == 0x40 { (6, true) } else { (4, false) };
                let i = int(block, &mut at, prefix)?;
                let name = if i == 0 {
                    Name::from_bytes(&string(block, &mut at)?)
                } else {
                    self.entry(i)?.0.clone()
                };
                let value = string(block, &mut at)?;
                if index {
                    self.insert(name.clone(), value.clone());
                }
                out.push((name, value));
            }
            fields = true;
        }
        Ok(())
    }

    /// The table entry at index `i` (1-based: the static table, then the dynamic one).
    fn entry(&self, i: usize) -> Result<&(Name, Bytes), Error> {
        let s = static_table();
        match i {
            0 => Err(Error::Index),
            i if i <= s.len() => Ok(&s[i - 1]),
            i => self.table.get(i - s.len() - 1).ok_or(Error::Index),
        }
    }

    fn insert(&mut self, name: Name, value: Bytes) {
        let size = name.size() + value.len() + 32;
        self.evict(size);
        if size <= self.max {
            self.size += size;
            self.table.push_front((name, value));
        }
    }

    /// Evicts the oldest entries until `room` more bytes fit (all of them when it can't).
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            let Some((n, v)) = self.table.pop_back() else {
                break;
            };
            self.size -= n.size() + v.len() + 32;
        }
    }

    #[cfg(test)]
    pub fn table_size(&self) -> usize {
        self.size
    }
}

/// An integer with an `n`-bit prefix (RFC 7541 §5.1) at `block[*at]`.
fn int(block: &[u8], at: &mut usize, n: u8) -> Result<usize, Error> {
    let mask = (1u8 << n) - 1;
    let first = *block.get(*at).ok_or(Error::Truncated)?;
    *at += 1;
    let mut v = usize::from(first & mask);
    if v < usize::from(mask) {
        return Ok(v);
    }
    let mut shift = 0;
    loop {
        let b = *block.get(*at).ok_or(Error::Truncated)?;
        *at += 1;
        if shift > 21 {
            return Err(Error::Integer);
        }
        v += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
}

/// A string literal (RFC 7541 §5.2): a slice of the block, or decoded from Huffman.
fn string(block: &Bytes, at: &mut usize) -> Result<Bytes, Error> {
    let huffman = block.get(*at).ok_or(Error::Truncated)? & 0x80 != 0;
    let len = int(block, at, 7)?;
    let end = at
        .checked_add(len)
        .filter(|&e| e <= block.len())
        .ok_or(Error::Truncated)?;
    let raw = &block[*at..end];
    let s = if huffman {
        huffman_decode(raw)?
    } else {
        block.slice(*at..end)
    };
    *at = end;
    Ok(s)
}

/// The canonical form of the Huffman code: per length, the first code, how many codes, and
/// where their symbols start in `symbols` (sorted by length, then value).
struct Canonical {
    first: [u32; 31],
    count: [u32; 31],
    offset: [u32; 31],
    symbols: [u8; 256],
}

fn canonical() -> &'static Canonical {
    static C: OnceLock<Canonical> = OnceLock::new();
    C.get_or_init(|| {
        let mut c = Canonical {
            first: [0; 31],
            count: [0; 31],
            offset: [0; 31],
            symbols: [0; 256],
        };
        let mut order: Vec<u8> = (0..=255).collect();
        order.sort_by_key(|&s| (ENCODE_CODE_LENGTHS[usize::from(s)], s));
        for (i, &s) in order.iter().enumerate() {
            c.symbols[i] = s;
            let len = usize::from(ENCODE_CODE_LENGTHS[usize::from(s)]);
            if c.count[len] == 0 {
                c.first[len] = ENCODE_CODES[usize::from(s)];
                c.offset[len] = u32::try_from(i).expect("256 symbols");
            }
            c.count[len] += 1;
        }
        c
    })
}

/// Decodes a Huffman-coded string, bit by bit over the canonical code (header blocks after the
/// first of a connection are mostly indexed, so this is off the hot path).
pub fn huffman_decode(src: &[u8]) -> Result<Bytes, Error> {
    let c = canonical();
    let mut out = BytesMut::with_capacity(src.len() * 8 / 5 + 1);
    let (mut code, mut len) = (0u32, 0usize);
    for &byte in src {
        for bit in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> bit) & 1);
            len += 1;
            if len > 30 {
                // EOS (30 ones) or no code at all.
                return Err(Error::Huffman);
            }
            let n = c.count[len];
            if n != 0 && code >= c.first[len] && code - c.first[len] < n {
                out.put_u8(c.symbols[(c.offset[len] + code - c.first[len]) as usize]);
                code = 0;
                len = 0;
            }
        }
    }
    // At most 7 bits of padding, all ones (the start of EOS).
    if len > 7 || code != (1 << len) - 1 {
        return Err(Error::Huffman);
    }
    Ok(out.freeze())
}

/// Huffman-encodes `src` (tests, and a peer's view of what a client sends).
#[allow(clippy::cast_possible_truncation)] // the low 8 bits of the bit buffer, by design
pub fn huffman_encode(src: &[u8], dst: &mut BytesMut) {
    let (mut bits, mut n) = (0u64, 0u32);
    for &b in src {
        let len = u32::from(ENCODE_CODE_LENGTHS[usize::from(b)]);
        bits = (bits << len) | u64::from(ENCODE_CODES[usize::from(b)]);
        n += len;
        while n >= 8 {
            n -= 8;
            dst.put_u8((bits >> n) as u8);
        }
        bits &= (1 << n) - 1;
    }
    if n > 0 {
        let pad = 8 - n;
        dst.put_u8(((bits << pad) | ((1 << pad) - 1)) as u8);
    }
}

/// An integer with an `n`-bit prefix, `flags` in the bits above it.
#[allow(clippy::cast_possible_truncation)] // each byte written is masked to its 7 or `n` bits
pub fn put_int(dst: &mut BytesMut, flags: u8, n: u8, v: usize) {
    let mask = (1usize << n) - 1;
    if v < mask {
        dst.put_u8(flags | v as u8);
        return;
    }
    dst.put_u8(flags | mask as u8);
    let mut v = v - mask;
    while v >= 128 {
        dst.put_u8((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    dst.put_u8(v as u8);
}

fn put_str(dst: &mut BytesMut, s: &[u8]) {
    put_int(dst, 0, 7, s.len());
    dst.extend_from_slice(s);
}

/// `:status`: indexed when the static table has it, else a literal with its name indexed.
pub fn encode_status(status: StatusCode, dst: &mut BytesMut) {
    let index = match status.as_u16() {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => {
            dst.put_u8(0x08);
            put_str(dst, status.as_str().as_bytes());
            return;
        }
    };
    dst.put_u8(0x80 | index);
}

/// A field as a literal without indexing; the name by its static index when it has one.
pub fn encode_field(name: &HeaderName, value: &HeaderValue, dst: &mut BytesMut) {
    encode(name.as_str().as_bytes(), value.as_bytes(), dst, false);
}

/// A field whose name is a token in any case (an HTTP/1.1 peer's, kept as bytes:
/// `headers::raw`): written lower-case (RFC 9113 §8.2.1), as `encode_field` writes it.
pub fn encode_raw_field(name: &[u8], value: &[u8], dst: &mut BytesMut) {
    encode(name, value, dst, true);
}

/// Lengths under 127 (nearly all fields) and static indexes take one or two bytes, written
/// without `put_int`. The name is lower-cased on a copy when `lower` and it has upper case.
#[allow(clippy::cast_possible_truncation)] // lengths checked below 127, indexes below 62
fn encode(name: &[u8], value: &[u8], dst: &mut BytesMut, lower: bool) {
    let mut low = [0u8; 32];
    let name = match lower {
        false => name,
        true if name.len() <= low.len() => lower_case(name, &mut low),
        true => return encode(&name.to_ascii_lowercase(), value, dst, false),
    };
    dst.reserve(name.len() + value.len() + 4);
    match static_name(name) {
        0 if name.len() < 127 => {
            dst.extend_from_slice(&[0, name.len() as u8]);
            dst.extend_from_slice(name);
        }
        0 => {
            dst.put_u8(0);
            put_str(dst, name);
        }
        i if i < 15 => dst.put_u8(i),
        i => dst.extend_from_slice(&[0x0f, i - 15]),
    }
    if value.len() < 127 {
        dst.put_u8(value.len() as u8);
        dst.extend_from_slice(value);
    } else {
        put_str(dst, value);
    }
}

/// `name` (at most 32 bytes) lower-cased into `buf`, eight bytes at a time (a byte loop cost
/// ~11 instructions a byte, callgrind): in each word, the ASCII bytes from `A` to `Z` get bit
/// 0x20 (the bytes of `buf` after the name are changed too, and not returned).
fn lower_case<'a>(name: &[u8], buf: &'a mut [u8; 32]) -> &'a [u8] {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let n = name.len();
    buf[..n].copy_from_slice(name);
    for chunk in buf[..n.div_ceil(8) * 8].chunks_exact_mut(8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let low7 = w & (0x7f * ONES);
        // Bit 7 of each byte: its low seven bits are at least `A`, above `Z`; no carry
        // crosses a byte (at most 0x7f + 0x3f).
        let from_a = low7 + u64::from(0x80 - b'A') * ONES;
        let past_z = low7 + u64::from(0x7f - b'Z') * ONES;
        let upper = from_a & !past_z & !w & (0x80 * ONES);
        chunk.copy_from_slice(&(w | (upper >> 2)).to_le_bytes());
    }
    &buf[..n]
}

/// The static table index of a response header name (lower-case), 0 when it has none
/// (request-only names are left out: a response does not carry them, and a literal name is as
/// valid).
fn static_name(name: &[u8]) -> u8 {
    match name {
        b"accept-ranges" => 18,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"date" => 33,
        b"etag" => 34,
        b"expires" => 36,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"proxy-authenticate" => 48,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
