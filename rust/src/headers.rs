//! Header hygiene on the forwarding path: hop-by-hop removal, `x-forwarded-*` and
//! `x-request-id`.

use bytes::{BufMut, BytesMut};
use http::header::{CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers: `Connection` and every name it lists, `Keep-Alive`,
/// `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, `Proxy-Authorization`,
/// `Proxy-Authenticate`, and `TE` unless it asks for `trailers` (then `TE: trailers` stays).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names (standard names compare as enum tags) notes which hop-by-hop
    // headers are present; only those are then looked up and removed. Most requests have none;
    // most responses only `Connection: keep-alive`.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        let listed: Vec<HeaderName> = headers
            .get_all(&CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // `keep-alive` is removed below anyway.
            .filter(|name| !name.eq_ignore_ascii_case("keep-alive"))
            // `from_bytes` lower-cases.
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
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
    let mut previous = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
    let forwarded_for = if previous.peek().is_none() {
        client_ip.clone()
    } else {
        let mut buf = BytesMut::with_capacity(64);
        for v in previous {
            buf.put_slice(v.as_bytes());
            buf.put_slice(b", ");
        }
        buf.put_slice(client_ip.as_bytes());
        HeaderValue::from_maybe_shared(buf.freeze()).unwrap_or_else(|_| client_ip.clone())
    };
    headers.insert(X_FORWARDED_FOR.clone(), forwarded_for);
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    if !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID.clone(), request_id());
    }
}

/// A random UUID v4, lower-case hex with dashes.
pub fn request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = fastrand::u128(..).to_be_bytes();
    bytes[6] = bytes[6] & 0x0f | 0x40;
    bytes[8] = bytes[8] & 0x3f | 0x80;
    let mut out = [0u8; 36];
    let mut j = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[j] = b'-';
            j += 1;
        }
        out[j] = HEX[usize::from(b >> 4)];
        out[j + 1] = HEX[usize::from(b & 0x0f)];
        j += 2;
    }
    HeaderValue::from_bytes(&out).expect("hex is a valid header value")
}

#[cfg(test)]
mod tests;
