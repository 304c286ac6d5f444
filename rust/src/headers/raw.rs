//! A header block forwarded as the bytes it came in (what Envoy's and Pingora's HTTP/1.1 codecs
//! do): the fields stay slices of the parsed head, in wire order, names in the case they came
//! in, duplicates as they were; edits (hop-by-hop removal, a route's header filters,
//! `set-cookie`) remove fields and append new ones. Written out as it is, or turned into a
//! `HeaderMap` (`into_map`) only when something needs one (an HTTP/2 downstream, hyper's server).
//!
//! No field is checked again here: `httparse` refuses what `http` refuses (a name must be a
//! token, a value visible ASCII, space, tab or obs-text; obs-fold is refused), so every field
//! converts.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// One field: where its name and value are in the block, and which of the names the engine
/// looks at it has (`tag`).
#[derive(Clone, Copy, Debug)]
struct Field {
    name: [u32; 2],
    value: [u32; 2],
    tag: u8,
}

#[derive(Clone, Debug, Default)]
pub struct RawHeaders {
    block: Bytes,
    fields: Vec<Field>,
    /// Fields added by edits, after the block's, with their tags.
    added: Vec<(HeaderName, HeaderValue, u8)>,
    /// A bit per tag present (`1 << tag`; `OTHER` not counted): most lookups end here.
    present: u32,
}

/// The names the engine itself looks up or removes, tagged once per field (by length, then
/// one case-insensitive compare) so that a lookup compares tags, not names. The hop-by-hop
/// ones first (`headers::HOP_BY_HOP`'s order).
const KNOWN: [&str; 17] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "expect",
    "content-length",
    "date",
    "trailer",
    "host",
    "x-forwarded-client-cert",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-request-id",
];
/// The tag of every other name.
const OTHER: u8 = u8::MAX;
/// Tags 0..8: the hop-by-hop names.
const HOP_BY_HOP: u32 = 0xff;
const EXPECT: u8 = 8;

fn tag_of(name: &[u8]) -> u8 {
    let candidates: &[u8] = match name.len() {
        2 => &[7],
        4 => &[10, 12],
        6 => &[8],
        7 => &[4, 11],
        10 => &[0, 1],
        12 => &[16],
        14 => &[9],
        15 => &[14],
        16 => &[2],
        17 => &[3, 15],
        18 => &[6],
        19 => &[5],
        23 => &[13],
        _ => return OTHER,
    };
    let print = print_of(name);
    for &t in candidates {
        if print == PRINTS[t as usize] {
            return t;
        }
    }
    OTHER
}

/// Three overlapping little-endian words covering a name of up to 24 bytes (at 0, 8 and the
/// last 8; shorter names by 4-byte halves or bytes): names of the same length are equal when
/// their prints are. With bit 0x20 set in every byte, which lower-cases letters and keeps `-`
/// and digits, a token in any case prints as the lower-case `KNOWN` name it is (no other
/// token byte turns into a letter or `-`). Word loads, not byte loops (callgrind: a byte loop
/// cost ~100 instructions a name).
fn print_of(b: &[u8]) -> [u64; 3] {
    const LOWER: u64 = 0x2020_2020_2020_2020;
    let n = b.len();
    let w8 = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes")) | LOWER;
    let w4 = |at: usize| u64::from(u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) | 0x2020_2020);
    if n >= 16 {
        [w8(0), w8(8), w8(n - 8)]
    } else if n >= 8 {
        [w8(0), w8(n - 8), 0]
    } else if n >= 4 {
        [w4(0), w4(n - 4), 0]
    } else {
        fingerprint(b, true)
    }
}

/// `print_of` at compile time (the `KNOWN` names) and for names under 4 bytes.
const fn fingerprint(b: &[u8], lower: bool) -> [u64; 3] {
    let n = b.len();
    if n >= 16 {
        [word(b, 0, 8, lower), word(b, 8, 8, lower), word(b, n - 8, 8, lower)]
    } else if n >= 8 {
        [word(b, 0, 8, lower), word(b, n - 8, 8, lower), 0]
    } else if n >= 4 {
        [word(b, 0, 4, lower), word(b, n - 4, 4, lower), 0]
    } else {
        [word(b, 0, n, lower), 0, 0]
    }
}

const fn word(b: &[u8], at: usize, len: usize, lower: bool) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < len {
        let c = if lower { b[at + i] | 0x20 } else { b[at + i] };
        v |= (c as u64) << (8 * i);
        i += 1;
    }
    v
}

const PRINTS: [[u64; 3]; KNOWN.len()] = {
    let mut p = [[0u64; 3]; KNOWN.len()];
    let mut i = 0;
    while i < KNOWN.len() {
        p[i] = fingerprint(KNOWN[i].as_bytes(), false);
        i += 1;
    }
    p
};

fn bit(tag: u8) -> u32 {
    if tag == OTHER {
        0
    } else {
        1 << tag
    }
}

fn line(dst: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    dst.reserve(name.len() + value.len() + 4);
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
    dst.extend_from_slice(b"\r\n");
}

/// What `HeaderValue::to_str` accepts: visible ASCII, space and tab.
fn visible(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (b' '..0x7f).contains(&b))
}

impl RawHeaders {
    /// `spans`: `[name start, name end, value start, value end]` of each field, offsets in `block`.
    pub fn new(block: Bytes, spans: &[[usize; 4]]) -> Self {
        let off = |i: usize| u32::try_from(i).expect("a head is shorter than 4 GiB");
        let mut present = 0;
        let fields = spans
            .iter()
            .map(|&[n0, n1, v0, v1]| {
                let tag = tag_of(&block[n0..n1]);
                present |= bit(tag);
                Field {
                    name: [off(n0), off(n1)],
                    value: [off(v0), off(v1)],
                    tag,
                }
            })
            .collect();
        RawHeaders {
            block,
            fields,
            added: Vec::new(),
            present,
        }
    }

    fn slice(&self, [a, b]: [u32; 2]) -> &[u8] {
        &self.block[a as usize..b as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.added.is_empty()
    }

    /// Every field in order, the block's first: (name as it came, value).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let own = self.fields.iter().map(|f| (self.slice(f.name), self.slice(f.value)));
        let added = self.added.iter().map(|(n, v, _)| (n.as_str().as_bytes(), v.as_bytes()));
        own.chain(added)
    }

    /// The values of `name` (lower-case), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        let tag = tag_of(name.as_bytes());
        // A known name that is absent: nothing to walk.
        let (fields, added) = if tag != OTHER && self.present & bit(tag) == 0 {
            (&[][..], &[][..])
        } else {
            (&self.fields[..], &self.added[..])
        };
        let matches = move |t: u8, n: &[u8]| t == tag && (tag != OTHER || n.eq_ignore_ascii_case(name.as_bytes()));
        let own = fields
            .iter()
            .filter(move |f| matches(f.tag, self.slice(f.name)))
            .map(|f| self.slice(f.value));
        let added = added
            .iter()
            .filter(move |(n, _, t)| matches(*t, n.as_str().as_bytes()))
            .map(|(_, v, _)| v.as_bytes());
        own.chain(added)
    }

    /// The first value of `name` (lower-case).
    pub fn get<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        let tag = tag_of(name.as_bytes());
        if tag != OTHER {
            if self.present & bit(tag) == 0 {
                return None;
            }
            if let Some(f) = self.fields.iter().find(|f| f.tag == tag) {
                return Some(self.slice(f.value));
            }
        }
        self.get_all(name).next()
    }

    /// `value` (a field value `get` gave) as `Bytes` sharing the head's block, not copied;
    /// `None` for a value an edit added.
    pub fn share(&self, value: &[u8]) -> Option<Bytes> {
        let start = self.block.as_ptr() as usize;
        let at = value.as_ptr() as usize;
        (at >= start && at + value.len() <= start + self.block.len()).then(|| self.block.slice_ref(value))
    }

    pub fn contains(&self, name: &str) -> bool {
        let tag = tag_of(name.as_bytes());
        if tag != OTHER {
            return self.present & bit(tag) != 0;
        }
        self.get(name).is_some()
    }

    /// Removes every field called `name` (lower-case).
    pub fn remove(&mut self, name: &str) {
        let tag = tag_of(name.as_bytes());
        if tag != OTHER && self.present & bit(tag) == 0 {
            return;
        }
        let block = &self.block;
        self.fields.retain(|f| {
            f.tag != tag
                || tag == OTHER && !block[f.name[0] as usize..f.name[1] as usize].eq_ignore_ascii_case(name.as_bytes())
        });
        self.added.retain(|(n, _, _)| n.as_str() != name);
        self.present &= !bit(tag);
    }

    pub fn append(&mut self, name: HeaderName, value: HeaderValue) {
        let tag = tag_of(name.as_str().as_bytes());
        self.present |= bit(tag);
        self.added.push((name, value, tag));
    }

    /// Replaces every field called `name` by one with `value`.
    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        self.remove(name.as_str());
        self.append(name, value);
    }

    /// Writes each field as `name: value\r\n` (as hyper writes a `HeaderMap`, but in wire order
    /// and the names' own case); `skip`: a name (lower-case) left out.
    pub fn write_to(&self, dst: &mut Vec<u8>, skip: Option<&str>) {
        let tag = skip.map(|s| (tag_of(s.as_bytes()), s.as_bytes()));
        let skipped =
            |t: u8, name: &[u8]| tag.is_some_and(|(st, s)| t == st && (st != OTHER || name.eq_ignore_ascii_case(s)));
        // Runs of fields that are whole `name: value\r\n` lines back to back in the block (most
        // heads) are copied as one slice.
        let mut run: Option<[usize; 2]> = None;
        for f in &self.fields {
            let name = self.slice(f.name);
            if skipped(f.tag, name) {
                continue;
            }
            let [start, end] = [f.name[0] as usize, f.value[1] as usize + 2];
            let canonical = f.value[0] == f.name[1] + 2
                && self.block.get(f.name[1] as usize..f.value[0] as usize) == Some(b": ")
                && self.block.get(end - 2..end) == Some(b"\r\n");
            if canonical {
                match &mut run {
                    Some([_, e]) if *e == start => *e = end,
                    _ => {
                        if let Some([s, e]) = run.take() {
                            dst.extend_from_slice(&self.block[s..e]);
                        }
                        run = Some([start, end]);
                    }
                }
                continue;
            }
            if let Some([s, e]) = run.take() {
                dst.extend_from_slice(&self.block[s..e]);
            }
            line(dst, name, self.slice(f.value));
        }
        if let Some([s, e]) = run {
            dst.extend_from_slice(&self.block[s..e]);
        }
        for (name, value, t) in &self.added {
            if !skipped(*t, name.as_str().as_bytes()) {
                line(dst, name.as_str().as_bytes(), value.as_bytes());
            }
        }
    }

    /// The same fields in a `HeaderMap` (names lower-cased, values still sharing the block).
    pub fn into_map(self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.fields.len() + self.added.len());
        for f in &self.fields {
            // Both always convert: httparse refused what `http` refuses (module docs).
            let Ok(name) = HeaderName::from_bytes(self.slice(f.name)) else {
                continue;
            };
            let value = self.block.slice(f.value[0] as usize..f.value[1] as usize);
            if let Ok(value) = HeaderValue::from_maybe_shared(value) {
                map.append(name, value);
            }
        }
        for (name, value, _) in self.added {
            map.append(name, value);
        }
        map
    }

    /// `headers::strip_hop_by_hop` on the block: the same names removed (`Connection` and what
    /// it lists, `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`,
    /// `Proxy-Authorization`, `Proxy-Authenticate`, `TE` unless it asks for `trailers`) and,
    /// with `expect`, `Expect`. One look at the tags when there is none.
    pub fn strip_hop_by_hop(&mut self, expect: bool) {
        let mask = HOP_BY_HOP | if expect { bit(EXPECT) } else { 0 };
        if self.present & mask == 0 {
            return;
        }
        // Names a visible-ASCII `Connection` value lists (`keep-alive` goes anyway).
        let listed: Vec<Vec<u8>> = self
            .get_all("connection")
            .filter(|v| visible(v))
            .flat_map(|v| v.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case(b"keep-alive"))
            .map(<[u8]>::to_vec)
            .collect();
        let trailers = self.get_all("te").any(|v| {
            visible(v)
                && v.split(|b| *b == b',').any(|t| {
                    t.split(|b| *b == b';')
                        .next()
                        .unwrap_or(b"")
                        .trim_ascii()
                        .eq_ignore_ascii_case(b"trailers")
                })
        });
        if listed.is_empty() {
            // Most heads: `Connection: keep-alive` or `close` alone; tags decide.
            self.fields.retain(|f| mask & bit(f.tag) == 0);
            self.added.retain(|a| mask & bit(a.2) == 0);
            self.present &= !mask;
            if trailers {
                self.append(http::header::TE, HeaderValue::from_static("trailers"));
            }
            return;
        }
        let gone = |tag: u8, name: &[u8]| mask & bit(tag) != 0 || listed.iter().any(|l| name.eq_ignore_ascii_case(l));
        let block = &self.block;
        self.fields
            .retain(|f| !gone(f.tag, &block[f.name[0] as usize..f.name[1] as usize]));
        self.added.retain(|(n, _, t)| !gone(*t, n.as_str().as_bytes()));
        self.present = self
            .fields
            .iter()
            .map(|f| f.tag)
            .chain(self.added.iter().map(|a| a.2))
            .fold(0, |p, t| p | bit(t));
        if trailers {
            self.append(http::header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// What a route's header filters and the forwarding code edit: a `HeaderMap`, or a block
/// kept raw.
pub trait HeaderEdit {
    fn contains_header(&self, name: &HeaderName) -> bool;
    fn insert_header(&mut self, name: HeaderName, value: HeaderValue);
    fn append_header(&mut self, name: HeaderName, value: HeaderValue);
    fn remove_header(&mut self, name: &HeaderName);
}

impl HeaderEdit for HeaderMap {
    fn contains_header(&self, name: &HeaderName) -> bool {
        self.contains_key(name)
    }
    fn insert_header(&mut self, name: HeaderName, value: HeaderValue) {
        self.insert(name, value);
    }
    fn append_header(&mut self, name: HeaderName, value: HeaderValue) {
        self.append(name, value);
    }
    fn remove_header(&mut self, name: &HeaderName) {
        self.remove(name);
    }
}

impl HeaderEdit for RawHeaders {
    fn contains_header(&self, name: &HeaderName) -> bool {
        self.contains(name.as_str())
    }
    fn insert_header(&mut self, name: HeaderName, value: HeaderValue) {
        self.insert(name, value);
    }
    fn append_header(&mut self, name: HeaderName, value: HeaderValue) {
        self.append(name, value);
    }
    fn remove_header(&mut self, name: &HeaderName) {
        self.remove(name.as_str());
    }
}

#[cfg(test)]
mod tests;
