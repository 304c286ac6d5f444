//! A one-pass scanner for the common shape of an HTTP/1.1 head: `METHOD target HTTP/1.x` or
//! `HTTP/1.x NNN reason`, then `name: value` lines, every line ending in CRLF. Each field's
//! name is tagged (`tag_of`) as it is scanned, so the block needs no second pass.
//!
//! It decides nothing on its own: it answers only for a complete head in that shape, and then
//! exactly as `httparse` (default config) would — the same length, the same spans, the same
//! status code and version. Anything else (an incomplete head, bare LF, leading empty lines,
//! obs-fold, a control byte, a bad name byte, obs-text in the request line or reason, more
//! than `max` fields, another version) returns `None`, and the caller asks `httparse`, which
//! decides as before (Partial, an error, or a head in a shape not covered here). So every
//! refusal stays `httparse`'s (`tests.rs`: the same answers on a table of heads and on
//! mutations of them).

use super::{bit, tag_of, Field};

/// `httparse`'s `TOKEN_MAP`: the bytes of a header name (and of a method).
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0u8;
    loop {
        t[c as usize] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        if c == u8::MAX {
            break t;
        }
        c += 1;
    }
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// A high bit on each byte of `w` below `n` (`n` ≤ 0x80); exact for the lowest flagged byte.
#[inline]
fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH
}

/// A high bit on each byte of `w` equal to `b`; exact for the lowest flagged byte.
#[inline]
fn equal(w: u64, b: u8) -> u64 {
    below(w ^ (ONES * u64::from(b)), 1)
}

/// A high bit on each byte of `w` (bytes below 0x80) in `lo..=hi` (both below 0x80); exact.
#[inline]
fn within(w: u64, lo: u8, hi: u8) -> u64 {
    w.wrapping_add(ONES * u64::from(0x80 - lo)) & !w.wrapping_add(ONES * u64::from(0x7f - hi)) & HIGH
}

/// A high bit on each byte of `w` (bytes below 0x80) equal to `b` (below 0x80); exact.
#[inline]
fn exactly(w: u64, b: u8) -> u64 {
    let v = w ^ (ONES * u64::from(b));
    !(v.wrapping_add(ONES * 0x7f) | v) & HIGH
}

/// Where the token from `at` on ends: its first byte that is not a `TOKEN` byte. Letters,
/// digits and `-` (nearly every name) are checked a word at a time, any other byte by the
/// table. `None`: the buffer ends first.
#[inline]
fn token_end(buf: &[u8], mut at: usize) -> Option<usize> {
    let len = buf.len();
    if len < 8 {
        return None;
    }
    loop {
        let w = if at + 8 <= len {
            word(buf, at)
        } else if at < len {
            // The zero bytes shifted in are not token bytes.
            word(buf, len - 8) >> ((at + 8 - len) * 8)
        } else {
            return None;
        };
        let low = w & !HIGH;
        let simple = within(low | (ONES * 0x20), b'a', b'z') | within(low, b'0', b'9') | exactly(low, b'-');
        let other = !simple & HIGH | w & HIGH;
        if other == 0 {
            at += 8;
            continue;
        }
        let stop = at + (other.trailing_zeros() / 8) as usize;
        if stop >= len {
            return None;
        }
        if !TOKEN[usize::from(buf[stop])] {
            return Some(stop);
        }
        at = stop + 1;
    }
}

#[inline]
fn word(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// Where the first byte from `at` on is one of what `stop` flags in a word; `None`: the buffer
/// ends first. The last bytes are read as the buffer's last word shifted down (the zero
/// bytes shifted in are flagged: every `stop` flags bytes below 0x20).
#[inline]
fn find(buf: &[u8], mut at: usize, stop: impl Fn(u64) -> u64) -> Option<usize> {
    let len = buf.len();
    while at + 8 <= len {
        let m = stop(word(buf, at));
        if m != 0 {
            return Some(at + (m.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    if at >= len || len < 8 {
        return None;
    }
    let m = stop(word(buf, len - 8) >> ((at + 8 - len) * 8));
    let stop = at + (m.trailing_zeros() / 8) as usize;
    (stop < len).then_some(stop)
}

/// Where text from `at` on ends: the first byte that is neither HTAB, space, visible ASCII
/// nor (with `obs_text`) 0x80-0xFF. Words with a tab in them are looked at again past it.
#[inline]
fn text_end(buf: &[u8], mut at: usize, obs_text: bool) -> Option<usize> {
    let high = if obs_text { 0 } else { HIGH };
    loop {
        let stop = find(buf, at, |w| below(w, 0x20) | equal(w, 0x7f) | (w & high))?;
        if buf[stop] != b'\t' {
            return Some(stop);
        }
        at = stop + 1;
    }
}

/// A scanned request line; offsets in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLine {
    pub method: [usize; 2],
    pub target: [usize; 2],
    /// `httparse`'s: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
}

/// A scanned status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusLine {
    pub code: u16,
    pub version: u8,
}

/// The fields of the last head scanned, kept by the caller between heads (no allocation per
/// head); `RawHeaders::scanned` copies them into a block's.
#[derive(Debug, Default)]
pub struct Scanned {
    pub(super) fields: Vec<Field>,
    pub(super) present: u32,
}

impl Scanned {
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Each field's tag (`super::tag`) and value, in order.
    pub fn tagged<'a>(&'a self, buf: &'a [u8]) -> impl Iterator<Item = (u8, &'a [u8])> + 'a {
        self.fields
            .iter()
            .map(move |f| (f.tag, &buf[f.value[0] as usize..f.value[1] as usize]))
    }

    /// Whether a field has tag `tag` (`super::tag`, not `OTHER`).
    pub fn has(&self, tag: u8) -> bool {
        self.present & bit(tag) != 0
    }

    /// `[name start, name end, value start, value end]` of each field.
    #[cfg(test)]
    pub fn spans(&self) -> impl Iterator<Item = [usize; 4]> + '_ {
        self.fields
            .iter()
            .map(|f| [f.name[0], f.name[1], f.value[0], f.value[1]].map(|i| i as usize))
    }

    /// The same fields from `httparse`'s spans (`[name start, name end, value start, value
    /// end]`), tagged.
    pub fn from_spans(&mut self, buf: &[u8], spans: impl Iterator<Item = [usize; 4]>) {
        self.clear();
        assert!(u32::try_from(buf.len()).is_ok(), "a head is shorter than 4 GiB");
        for [n0, n1, v0, v1] in spans {
            self.push(buf, n0, n1, v0, v1);
        }
    }

    fn clear(&mut self) {
        self.fields.clear();
        self.present = 0;
    }

    /// Offsets below 4 GiB (`fields` and `from_spans` check the buffer's length).
    #[allow(clippy::inline_always)] // in `fields`' loop (callgrind: a call cost ~20 Ir a field)
    #[inline(always)]
    fn push(&mut self, buf: &[u8], n0: usize, n1: usize, v0: usize, v1: usize) {
        #[allow(clippy::cast_possible_truncation)]
        let off = |i: usize| i as u32;
        let tag = tag_of(&buf[n0..n1]);
        self.present |= bit(tag);
        let line = v0 == n1 + 2 && buf[n1 + 1] == b' ' && buf.get(v1..v1 + 2) == Some(b"\r\n");
        self.fields.push(Field {
            name: [off(n0), off(n1)],
            value: [off(v0), off(v1)],
            tag,
            line,
        });
    }
}

/// A request head at the start of `buf`: its line, its length (through the empty line), its
/// fields in `out`. `None`: not a complete head of the common shape (ask `httparse`).
pub fn request(buf: &[u8], max: usize, out: &mut Scanned) -> Option<(RequestLine, usize)> {
    let method_end = if buf.starts_with(b"GET ") {
        3
    } else {
        let n = buf.iter().position(|&b| !TOKEN[usize::from(b)])?;
        (n > 0 && buf[n] == b' ').then_some(n)?
    };
    let t0 = method_end + 1;
    // The target: visible ASCII up to a space (`httparse` also takes obs-text; left to it).
    let t1 = find(buf, t0, |w| below(w, 0x21) | equal(w, 0x7f) | (w & HIGH))?;
    if t1 == t0 || buf[t1] != b' ' {
        return None;
    }
    let rest = buf.get(t1 + 1..t1 + 11)?;
    let version = match rest {
        b"HTTP/1.1\r\n" => 1,
        b"HTTP/1.0\r\n" => 0,
        _ => return None,
    };
    let len = fields(buf, t1 + 11, max, out)?;
    Some((
        RequestLine {
            method: [0, method_end],
            target: [t0, t1],
            version,
        },
        len,
    ))
}

/// A response head at the start of `buf`, as `request`.
pub fn response(buf: &[u8], max: usize, out: &mut Scanned) -> Option<(StatusLine, usize)> {
    let line = buf.get(..12)?;
    let version = match &line[..9] {
        b"HTTP/1.1 " => 1,
        b"HTTP/1.0 " => 0,
        _ => return None,
    };
    let digits = &line[9..12];
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let at = match *buf.get(12)? {
        b'\r' => 12,
        // The reason: HTAB, space, visible ASCII (`httparse` also takes obs-text; left to it).
        b' ' => text_end(buf, 13, false)?,
        _ => return None,
    };
    if buf.get(at..at + 2)? != b"\r\n" {
        return None;
    }
    let len = fields(buf, at + 2, max, out)?;
    Some((StatusLine { code, version }, len))
}

/// The fields from `at` to the empty line; the head's length. Each line is found by its end
/// first (one word-wise pass: every byte before it is HTAB, space, visible ASCII or obs-text,
/// which a value may hold), then its name is checked byte by byte up to the colon.
fn fields(buf: &[u8], mut at: usize, max: usize, out: &mut Scanned) -> Option<usize> {
    out.clear();
    if u32::try_from(buf.len()).is_err() {
        return None;
    }
    loop {
        if *buf.get(at)? == b'\r' {
            return (*buf.get(at + 1)? == b'\n').then_some(at + 2);
        }
        if out.fields.len() == max {
            return None;
        }
        let cr = text_end(buf, at, true)?;
        if buf[cr] != b'\r' || *buf.get(cr + 1)? != b'\n' {
            return None;
        }
        // Ends at the colon, or at `cr` at the latest (not a token byte).
        let n = token_end(buf, at)? - at;
        if n == 0 || buf[at + n] != b':' {
            return None;
        }
        let line = &buf[at..cr];
        let mut v0 = n + 1;
        while v0 < line.len() && matches!(line[v0], b' ' | b'\t') {
            v0 += 1;
        }
        let mut v1 = line.len();
        while v1 > v0 && matches!(line[v1 - 1], b' ' | b'\t') {
            v1 -= 1;
        }
        out.push(buf, at, at + n, at + v0, at + v1);
        at = cr + 2;
    }
}

#[cfg(test)]
mod tests;
