//! A header block forwarded as the bytes it came in (what Envoy's and Pingora's HTTP/1.1 codecs
//! do): the fields stay slices of the parsed head, in wire order, names in the case they came
//! in, duplicates as they were; edits (hop-by-hop removal, a route's header filters,
//! `set-cookie`) remove fields and append new ones. Written out as it is, or turned into a
//! `HeaderMap` (`into_map`) only when something needs one (an HTTP/2 downstream, hyper's server).
//!
//! No field is checked again here: `httparse` refuses what `http` refuses (a name must be a
//! token, a value visible ASCII, space, tab or obs-text; obs-fold is refused), so every field
//! converts; `scan` reads only heads `httparse` reads, the same way (`scan/tests.rs`).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

pub mod scan;

/// One field: where its name and value are in the block, and which of the names the engine
/// looks at it has (`tag`).
#[derive(Clone, Copy, Debug)]
struct Field {
    name: [u32; 2],
    value: [u32; 2],
    tag: u8,
    /// The field is the whole line `name: value\r\n` in the block (written as that slice).
    line: bool,
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

/// Tags of the `KNOWN` names (their index there).
pub mod tag {
    pub const CONNECTION: u8 = 0;
    pub const TRANSFER_ENCODING: u8 = 3;
    pub const UPGRADE: u8 = 4;
    pub const TE: u8 = 7;
    pub const EXPECT: u8 = 8;
    pub const CONTENT_LENGTH: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TRAILER: u8 = 11;
    pub const HOST: u8 = 12;
    pub const X_FORWARDED_CLIENT_CERT: u8 = 13;
    pub const X_FORWARDED_FOR: u8 = 14;
    pub const X_FORWARDED_PROTO: u8 = 15;
    pub const X_REQUEST_ID: u8 = 16;
}

/// A `KNOWN` name, looked up by its tag: no `tag_of` and no name compare per lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known(u8);

impl Known {
    pub const CONNECTION: Known = Known(tag::CONNECTION);
    pub const TRANSFER_ENCODING: Known = Known(tag::TRANSFER_ENCODING);
    pub const TE: Known = Known(tag::TE);
    pub const CONTENT_LENGTH: Known = Known(tag::CONTENT_LENGTH);
    pub const DATE: Known = Known(tag::DATE);
    pub const TRAILER: Known = Known(tag::TRAILER);
    pub const HOST: Known = Known(tag::HOST);
    pub const X_FORWARDED_CLIENT_CERT: Known = Known(tag::X_FORWARDED_CLIENT_CERT);
    pub const X_FORWARDED_FOR: Known = Known(tag::X_FORWARDED_FOR);
    pub const X_FORWARDED_PROTO: Known = Known(tag::X_FORWARDED_PROTO);
    pub const X_REQUEST_ID: Known = Known(tag::X_REQUEST_ID);
}

/// A name to look up: any name (`&str`, lower-case; tagged per lookup) or a `Known` one.
pub trait Name<'a>: Copy + 'a {
    fn tag(self) -> u8;
    fn as_str(self) -> &'a str;
}

impl<'a> Name<'a> for &'a str {
    fn tag(self) -> u8 {
        tag_of(self.as_bytes())
    }
    fn as_str(self) -> &'a str {
        self
    }
}

impl<'a> Name<'a> for Known {
    #[inline]
    fn tag(self) -> u8 {
        self.0
    }
    #[inline]
    fn as_str(self) -> &'a str {
        KNOWN[usize::from(self.0)]
    }
}

/// Tags 0..8: the hop-by-hop names.
const HOP_BY_HOP: u32 = 0xff;
const EXPECT: u8 = tag::EXPECT;

/// The tag of `name` (any case). Most names are told apart from every `KNOWN` one by their
/// length and first letter alone (`FIRSTS`, inline); the rest by their print.
#[inline]
fn tag_of(name: &[u8]) -> u8 {
    match (FIRSTS.get(name.len()), name.first()) {
        (Some(firsts), Some(&first)) if firsts & (1 << (first & 0x1f)) != 0 => tag_by_print(name),
        _ => OTHER,
    }
}

/// Per length, a bit per first letter (its low five bits, so either case) of the `KNOWN`
/// names of that length.
const FIRSTS: [u32; 24] = {
    let mut f = [0u32; 24];
    let mut i = 0;
    while i < KNOWN.len() {
        let name = KNOWN[i].as_bytes();
        f[name.len()] |= 1 << (name[0] & 0x1f);
        i += 1;
    }
    f
};

#[inline(never)]
fn tag_by_print(name: &[u8]) -> u8 {
    // The one candidate of this length and first letter (`KNOWN`'s indices).
    let t = match (name.len(), name.first().map_or(0, |b| b | 0x20)) {
        (2, _) => 7,
        (4, b'd') => 10,
        (4, _) => 12,
        (6, _) => 8,
        (7, b'u') => 4,
        (7, _) => 11,
        (10, b'c') => 0,
        (10, _) => 1,
        (12, _) => 16,
        (14, _) => 9,
        (15, _) => 14,
        (16, _) => 2,
        (17, b't') => 3,
        (17, _) => 15,
        (18, _) => 6,
        (19, _) => 5,
        (23, _) => 13,
        _ => return OTHER,
    };
    if print_of(name) == PRINTS[usize::from(t)] {
        t
    } else {
        OTHER
    }
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

/// Whether `token` is one of the comma-separated elements of `value` (case-insensitive, spaces
/// around it ignored).
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    // The lone `keep-alive` of most responses.
    if eq_lower(value, b"keep-alive") {
        return token.eq_ignore_ascii_case(b"keep-alive");
    }
    // No longer than the token: only the whole value can be it (an element of a list, spaces
    // trimmed, is shorter than the value).
    if value.len() <= token.len() {
        return value.eq_ignore_ascii_case(token);
    }
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Whether `v` is `lower` (lower-case letters and `-`, 4 to 16 bytes) in any case, by two
/// overlapping word loads: with bit 0x20 set, a byte of a field value (no CR) equals a
/// lower-case letter or `-` only if it is that letter in either case or that `-`.
/// (`eq_ignore_ascii_case` goes byte by byte: ~45 Ir for `keep-alive`.)
fn eq_lower(v: &[u8], lower: &[u8]) -> bool {
    debug_assert!((4..=16).contains(&lower.len()));
    debug_assert!(lower.iter().all(|b| b.is_ascii_lowercase() || *b == b'-'));
    let n = lower.len();
    if v.len() != n {
        return false;
    }
    let w8 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let w4 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    if n >= 8 {
        w8(v, 0) | 0x2020_2020_2020_2020 == w8(lower, 0) && w8(v, n - 8) | 0x2020_2020_2020_2020 == w8(lower, n - 8)
    } else {
        w4(v, 0) | 0x2020_2020 == w4(lower, 0) && w4(v, n - 4) | 0x2020_2020 == w4(lower, n - 4)
    }
}

/// The names `Connection` values list (`keep-alive` left out: it goes anyway); `close`, the
/// usual one, as a flag (no allocation).
#[derive(Default)]
struct Listed {
    close: bool,
    names: Vec<Vec<u8>>,
}

impl Listed {
    /// A value that is not visible ASCII lists nothing (as `HeaderValue::to_str` refuses it).
    fn note(&mut self, v: &[u8]) {
        // Most values: a lone `keep-alive`, or `close`.
        if eq_lower(v, b"keep-alive") {
            return;
        }
        if eq_lower(v, b"close") {
            self.close = true;
            return;
        }
        if !visible(v) {
            return;
        }
        for token in v.split(|b| *b == b',') {
            let name = token.trim_ascii();
            if name.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if !name.is_empty() && !name.eq_ignore_ascii_case(b"keep-alive") {
                self.names.push(name.to_vec());
            }
        }
    }
}

/// Whether a visible-ASCII `TE` value lists `trailers` (parameters ignored).
fn asks_for_trailers(v: &[u8]) -> bool {
    visible(v)
        && v.split(|b| *b == b',').any(|t| {
            t.split(|b| *b == b';')
                .next()
                .unwrap_or(b"")
                .trim_ascii()
                .eq_ignore_ascii_case(b"trailers")
        })
}

/// What `HeaderValue::to_str` accepts: visible ASCII, space and tab.
fn visible(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (b' '..0x7f).contains(&b))
}

impl RawHeaders {
    /// The fields `scan` found (or took from `httparse`'s spans) in `block`.
    pub fn scanned(block: Bytes, fields: &scan::Scanned) -> Self {
        RawHeaders {
            block,
            fields: fields.fields.clone(),
            added: Vec::new(),
            present: fields.present,
        }
    }

    /// Fields at `spans` ([name start, name end, value start, value end]) of a block its maker
    /// wrote as `name: value\r\n` lines (the h2 server's decoded fields), tagged as
    /// `scan::Scanned::from_spans` tags `httparse`'s.
    pub fn new(block: Bytes, spans: &[[usize; 4]]) -> Self {
        let mut fields = scan::Scanned::default();
        fields.from_spans(&block, spans.iter().copied());
        RawHeaders {
            block,
            fields: fields.fields,
            added: Vec::new(),
            present: fields.present,
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
    pub fn get_all<'a, N: Name<'a>>(&'a self, name: N) -> impl Iterator<Item = &'a [u8]> + 'a {
        let tag = name.tag();
        // A known name that is absent: nothing to walk.
        let (fields, added) = if tag != OTHER && self.present & bit(tag) == 0 {
            (&[][..], &[][..])
        } else {
            (&self.fields[..], &self.added[..])
        };
        let matches =
            move |t: u8, n: &[u8]| t == tag && (tag != OTHER || n.eq_ignore_ascii_case(name.as_str().as_bytes()));
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

    /// Whether a value of the `Known` name `name` has `token` in its comma-separated list
    /// (case-insensitive, spaces around it ignored).
    pub fn has_token(&self, name: Known, token: &[u8]) -> bool {
        if self.present & bit(name.0) == 0 {
            return false;
        }
        let own = self
            .fields
            .iter()
            .filter(|f| f.tag == name.0)
            .map(|f| self.slice(f.value));
        let added = self.added.iter().filter(|a| a.2 == name.0).map(|a| a.1.as_bytes());
        own.chain(added).any(|v| has_token(v, token))
    }

    /// The first value of `name` (lower-case).
    pub fn get<'a, N: Name<'a>>(&'a self, name: N) -> Option<&'a [u8]> {
        let tag = name.tag();
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

    pub fn contains<'a, N: Name<'a>>(&'a self, name: N) -> bool {
        let tag = name.tag();
        if tag != OTHER {
            return self.present & bit(tag) != 0;
        }
        self.get(name).is_some()
    }

    /// Removes every field called `name` (lower-case).
    pub fn remove<'a, N: Name<'a>>(&mut self, name: N) {
        let tag = name.tag();
        if tag != OTHER && self.present & bit(tag) == 0 {
            return;
        }
        let name = name.as_str();
        let block = &self.block;
        self.fields.retain(|f| {
            f.tag != tag
                || tag == OTHER && !block[f.name[0] as usize..f.name[1] as usize].eq_ignore_ascii_case(name.as_bytes())
        });
        self.added.retain(|(n, _, _)| n.as_str() != name);
        self.present &= !bit(tag);
    }

    /// `append` of a `Known` name (`name` is its `HeaderName`).
    pub fn append_known(&mut self, name: &HeaderName, known: Known, value: HeaderValue) {
        debug_assert_eq!(name.as_str(), known.as_str());
        self.present |= bit(known.0);
        self.added.push((name.clone(), value, known.0));
    }

    /// `insert` of a `Known` name (`name` is its `HeaderName`).
    pub fn insert_known(&mut self, name: &HeaderName, known: Known, value: HeaderValue) {
        self.remove(known);
        self.append_known(name, known, value);
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
            if skipped(f.tag, self.slice(f.name)) {
                continue;
            }
            if f.line {
                let [start, end] = [f.name[0] as usize, f.value[1] as usize + 2];
                match &mut run {
                    Some([_, e]) if *e == start => *e = end,
                    _ => {
                        if let Some([s, e]) = run.replace([start, end]) {
                            dst.extend_from_slice(&self.block[s..e]);
                        }
                    }
                }
                continue;
            }
            if let Some([s, e]) = run.take() {
                dst.extend_from_slice(&self.block[s..e]);
            }
            line(dst, self.slice(f.name), self.slice(f.value));
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
        // One pass drops the hop-by-hop fields by their tags and notes, as they go by, the
        // names a `Connection` value lists and whether `TE` asks for trailers. Only when names
        // were listed (not the lone `keep-alive` of most heads) is there a second pass.
        let mut listed = Listed::default();
        let mut trailers = false;
        let mut note = |t: u8, v: &[u8]| {
            if t == tag::CONNECTION {
                listed.note(v);
            } else if t == tag::TE && !trailers {
                trailers = asks_for_trailers(v);
            }
        };
        // Compacted in place (a `retain` closure per field cost ~50 Ir each).
        let mut kept = 0;
        for i in 0..self.fields.len() {
            let f = self.fields[i];
            if (bit(tag::CONNECTION) | bit(tag::TE)) & bit(f.tag) != 0 {
                note(f.tag, self.slice(f.value));
            }
            if mask & bit(f.tag) == 0 {
                self.fields[kept] = f;
                kept += 1;
            }
        }
        self.fields.truncate(kept);
        self.added.retain(|a| {
            note(a.2, a.1.as_bytes());
            mask & bit(a.2) == 0
        });
        self.present &= !mask;
        if listed.close || !listed.names.is_empty() {
            let gone = |name: &[u8]| {
                listed.close && name.eq_ignore_ascii_case(b"close")
                    || listed.names.iter().any(|l| name.eq_ignore_ascii_case(l))
            };
            let block = &self.block;
            self.fields
                .retain(|f| !gone(&block[f.name[0] as usize..f.name[1] as usize]));
            self.added.retain(|(n, _, _)| !gone(n.as_str().as_bytes()));
            self.present = self
                .fields
                .iter()
                .map(|f| f.tag)
                .chain(self.added.iter().map(|a| a.2))
                .fold(0, |p, t| p | bit(t));
        }
        if trailers {
            self.append_known(&http::header::TE, Known::TE, HeaderValue::from_static("trailers"));
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
    /// `remove_header` of a `Known` name (`name` is its `HeaderName`).
    fn remove_known(&mut self, name: &HeaderName, _known: Known) {
        self.remove_header(name);
    }
    /// `insert_header` of a `Known` name (`name` is its `HeaderName`).
    fn insert_known(&mut self, name: &HeaderName, _known: Known, value: HeaderValue) {
        self.insert_header(name.clone(), value);
    }
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
        // `Host` (asked on every request) by its tag; a standard name compares as an enum.
        if name == http::header::HOST {
            return self.contains(Known::HOST);
        }
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
    fn remove_known(&mut self, _name: &HeaderName, known: Known) {
        self.remove(known);
    }
    fn insert_known(&mut self, name: &HeaderName, known: Known, value: HeaderValue) {
        RawHeaders::insert_known(self, name, known, value);
    }
}

#[cfg(test)]
mod tests;
