//! Header hygiene on the forwarding path: hop-by-hop removal, `x-forwarded-*` and
//! `x-request-id`.

use bytes::{BufMut, BytesMut};
use http::header::Entry;
use http::header::{CONNECTION, EXPECT, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

pub mod raw;

use raw::{HeaderEdit, Known, RawHeaders};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers: `Connection` and every name it lists, `Keep-Alive`,
/// `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, `Proxy-Authorization`,
/// `Proxy-Authenticate`, and `TE` unless it asks for `trailers` (then `TE: trailers` stays).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, false);
}

/// `strip_hop_by_hop` for a request about to go upstream: also removes `Expect`, whose
/// expectation was met on the downstream side (hyper answers 100 when the body is first
/// polled, which the upstream client does as it forwards it). Found in the same pass.
pub fn strip_request_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, true);
}

fn strip(headers: &mut HeaderMap, expect: bool) {
    // One pass over the names (standard names compare as enum tags) notes which hop-by-hop
    // headers are present; only those are then looked up and removed. Most requests have none;
    // most responses only `Connection: keep-alive`.
    let mut present = 0u8;
    let mut has_expect = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name) {
            present |= 1 << i;
        } else if expect && name == EXPECT {
            has_expect = true;
        }
    }
    if has_expect {
        headers.remove(EXPECT);
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // Byte-level token scan (no `str` splitting): most `Connection` values are a lone
        // `keep-alive` or `close`, and then nothing is collected.
        let mut listed: Vec<HeaderName> = Vec::new();
        for v in &headers.get_all(&CONNECTION) {
            // As before: a value that is not visible ASCII lists nothing.
            if v.to_str().is_err() {
                continue;
            }
            for token in v.as_bytes().split(|b| *b == b',') {
                let name = token.trim_ascii();
                // `keep-alive` is removed below anyway.
                if name.is_empty() || name.eq_ignore_ascii_case(b"keep-alive") {
                    continue;
                }
                // `from_bytes` lower-cases.
                if let Ok(name) = HeaderName::from_bytes(name) {
                    listed.push(name);
                }
            }
        }
        for name in listed {
            headers.remove(name);
        }
    }
    // All but `TE` (the last).
    for (i, name) in HOP_BY_HOP[..HOP_BY_HOP.len() - 1].iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
    if present & (1 << (HOP_BY_HOP.len() - 1)) != 0 {
        let trailers = headers
            .get_all(&TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("trailers")
            });
        headers.remove(&TE);
        if trailers {
            headers.insert(TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// The hop-by-hop headers, `Connection` first and `TE` last.
static HOP_BY_HOP: [&HeaderName; 8] = [
    &CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &TRANSFER_ENCODING,
    &UPGRADE,
    &PROXY_AUTHORIZATION,
    &PROXY_AUTHENTICATE,
    &TE,
];

/// Appends the client address to `x-forwarded-for`, sets `x-forwarded-proto: http`, and sets
/// `x-request-id` to a random UUID v4 unless the request has one.
pub fn set_forwarded(headers: &mut HeaderMap, client_ip: &HeaderValue) {
    // One hash lookup per name (`entry`) instead of a lookup then an insert.
    match headers.entry(X_FORWARDED_FOR.clone()) {
        Entry::Vacant(e) => {
            e.insert(client_ip.clone());
        }
        Entry::Occupied(mut e) => {
            let mut buf = BytesMut::with_capacity(64);
            for v in e.iter() {
                buf.put_slice(v.as_bytes());
                buf.put_slice(b", ");
            }
            buf.put_slice(client_ip.as_bytes());
            let joined = HeaderValue::from_maybe_shared(buf.freeze()).unwrap_or_else(|_| client_ip.clone());
            // Replaces every previous value.
            e.insert(joined);
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    if let Entry::Vacant(e) = headers.entry(X_REQUEST_ID.clone()) {
        e.insert(request_id());
    }
}

/// `set_forwarded` on a header block kept as bytes: the same fields, the same values.
pub fn set_forwarded_raw(headers: &mut RawHeaders, client_ip: &HeaderValue) {
    if headers.contains(Known::X_FORWARDED_FOR) {
        let mut buf = BytesMut::with_capacity(64);
        for v in headers.get_all(Known::X_FORWARDED_FOR) {
            buf.put_slice(v);
            buf.put_slice(b", ");
        }
        buf.put_slice(client_ip.as_bytes());
        let joined = HeaderValue::from_maybe_shared(buf.freeze()).unwrap_or_else(|_| client_ip.clone());
        headers.insert_known(&X_FORWARDED_FOR, Known::X_FORWARDED_FOR, joined);
    } else {
        headers.append_known(&X_FORWARDED_FOR, Known::X_FORWARDED_FOR, client_ip.clone());
    }
    headers.insert_known(
        &X_FORWARDED_PROTO,
        Known::X_FORWARDED_PROTO,
        HeaderValue::from_static("http"),
    );
    if !headers.contains(Known::X_REQUEST_ID) {
        headers.append_known(&X_REQUEST_ID, Known::X_REQUEST_ID, request_id());
    }
}

/// `x-forwarded-client-cert` is the engine's to set: whatever the client sent is removed, and
/// a verified mTLS connection's value (`tls::Peer::xfcc`) is set.
pub fn set_client_cert<H: HeaderEdit>(headers: &mut H, xfcc: Option<&HeaderValue>) {
    match xfcc {
        Some(v) => headers.insert_known(&X_FORWARDED_CLIENT_CERT, Known::X_FORWARDED_CLIENT_CERT, v.clone()),
        None => headers.remove_known(&X_FORWARDED_CLIENT_CERT, Known::X_FORWARDED_CLIENT_CERT),
    }
}

/// A random UUID v4, lower-case hex with dashes.
pub fn request_id() -> HeaderValue {
    // One thread-local for the generator and the block the ids are cut from (each access to
    // one is a `__tls_get_addr` call in this shared library).
    let id = IDS.with(|ids| {
        let out = uuid_v4(ids.next());
        // Cut from a per-thread block: no allocation per id, and the value is a shared
        // `Bytes` from the start, so cloning it (the replay copy of a bodiless request) does
        // not allocate either. A block is freed once every id cut from it is dropped.
        let mut block = ids.block.borrow_mut();
        if block.capacity() < out.len() {
            *block = BytesMut::with_capacity(ID_BLOCK_SIZE);
        }
        block.put_slice(&out);
        block.split().freeze()
    });
    // Checked byte by byte once more (hex and dashes always pass); the unchecked constructor
    // is `unsafe`, which only `alloc` may use.
    HeaderValue::from_maybe_shared(id).expect("hex is a valid header value")
}

/// `r` as a UUID v4: version nibble 4, variant bits 10, the rest from `r` (big-endian), in
/// lower-case hex with dashes.
fn uuid_v4(r: u128) -> [u8; 36] {
    let r = r & !(0xf0 << 72) | (0x40 << 72);
    let r = r & !(0xc0 << 56) | (0x80 << 56);
    #[allow(clippy::cast_possible_truncation)]
    let [hi, lo] = [hex((r >> 64) as u64), hex(r as u64)];
    let mut out = [b'-'; 36];
    out[..8].copy_from_slice(&hi[..8]);
    out[9..13].copy_from_slice(&hi[8..12]);
    out[14..18].copy_from_slice(&hi[12..]);
    out[19..23].copy_from_slice(&lo[..4]);
    out[24..].copy_from_slice(&lo[4..]);
    out
}

/// The 16 lower-case hex digits of `x`, most significant first, computed for all at once
/// (no table, no loop).
fn hex(x: u64) -> [u8; 16] {
    const EVEN: u128 = 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    const ONES: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
    // Byte i of `x` (most significant first) to byte 2i of `v`.
    let v = u128::from(x.swap_bytes());
    let v = (v & 0xffff_ffff) | (v & 0xffff_ffff_0000_0000) << 32;
    let v = (v & 0x0000_0000_0000_ffff_0000_0000_0000_ffff) | (v & 0x0000_0000_ffff_0000_0000_0000_ffff_0000) << 16;
    let v = (v & 0x0000_00ff_0000_00ff_0000_00ff_0000_00ff) | (v & 0x0000_ff00_0000_ff00_0000_ff00_0000_ff00) << 8;
    // Its high nibble stays in byte 2i, its low one goes to byte 2i + 1.
    let n = (v >> 4) & (EVEN & (0x0f * ONES)) | (v & (EVEN & (0x0f * ONES))) << 8;
    // 0-9 to '0'-'9', 10-15 to 'a'-'f'.
    let letters = ((n + 0x06 * ONES) >> 4) & ONES;
    (n + 0x30 * ONES + letters * 0x27).to_le_bytes()
}

/// Bytes per block of request ids (113 ids).
const ID_BLOCK_SIZE: usize = 4096;

/// The per-thread state of `request_id`: a wyrand generator (fastrand's, seeded from it) and
/// the block ids are cut from.
struct Ids {
    state: std::cell::Cell<u64>,
    block: std::cell::RefCell<BytesMut>,
}

impl Ids {
    fn next64(&self) -> u64 {
        let s = self.state.get().wrapping_add(0xa076_1d64_78bd_642f);
        self.state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        #[allow(clippy::cast_possible_truncation)]
        let folded = (t as u64) ^ (t >> 64) as u64;
        folded
    }

    fn next(&self) -> u128 {
        u128::from(self.next64()) << 64 | u128::from(self.next64())
    }
}

thread_local! {
    static IDS: Ids = Ids {
        state: std::cell::Cell::new(fastrand::u64(..)),
        block: std::cell::RefCell::new(BytesMut::new()),
    };
}

#[cfg(test)]
mod tests;
