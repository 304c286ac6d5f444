//! Session persistence of a route rule (Gateway API `sessionPersistence`, Istio `consistentHash`):
//! which of the rule's weighted backendRefs a request goes to when the same user must stay on one.
//!
//! - Cookie: a request whose cookie names a backendRef that still has weight > 0 goes there; any
//!   other request takes the plain weighted choice and its answer sets the cookie. The cookie's
//!   value is a token derived from the backend's name (the stable identity a reload keeps), not
//!   the name itself and not an index a reload could shift.
//! - Header: a hash of the header's value is a point in `[0, total weight)`, laid over the
//!   cumulative weights in rule order (stable first): as a later backendRef's share grows, its
//!   users stay and only users of the earlier ones move to it. No header: the weighted choice.

use http::header::COOKIE;
use http::{HeaderMap, HeaderName, HeaderValue};

/// A route rule's persistence, compiled (see `config::SessionConfig`).
#[derive(Debug)]
pub enum Session {
    Cookie {
        name: Box<str>,
        /// Per target: its token (`None` for an invalid backendRef, which is never pinned).
        tokens: Box<[Option<Box<str>>]>,
        /// Per target: the whole `Set-Cookie` value naming it.
        set_cookie: Box<[Option<HeaderValue>]>,
    },
    Header {
        name: HeaderName,
    },
}

impl Session {
    /// `backends`: each target's backend name (`None`: invalid backendRef).
    pub fn cookie(name: &str, max_age_s: Option<u64>, backends: &[Option<&str>]) -> Self {
        let tokens: Box<[Option<Box<str>>]> = backends.iter().map(|b| b.map(|b| token(b).into_boxed_str())).collect();
        let attrs = match max_age_s {
            Some(s) => format!("; Path=/; HttpOnly; Max-Age={s}"),
            None => "; Path=/; HttpOnly".to_owned(),
        };
        let set_cookie = tokens
            .iter()
            .map(|t| {
                t.as_ref().map(|t| {
                    HeaderValue::try_from(format!("{name}={t}{attrs}")).expect("validated cookie name, hex token")
                })
            })
            .collect();
        Session::Cookie {
            name: name.into(),
            tokens,
            set_cookie,
        }
    }

    /// The target the request's session names among targets of `weights`; `None` (no cookie or
    /// header, a stale or unknown cookie, all weights 0): the weighted choice.
    pub fn choose(&self, headers: &HeaderMap, weights: &[u32], total: u64) -> Option<usize> {
        match self {
            Session::Cookie { name, tokens, .. } => {
                let value = cookie_value(headers, name)?;
                tokens
                    .iter()
                    .zip(weights)
                    .position(|(t, &w)| w > 0 && t.as_deref() == Some(value))
            }
            Session::Header { name } => match headers.get(name) {
                Some(v) if total > 0 => Some(by_point(weights, total, hash(v.as_bytes()))),
                _ => None,
            },
        }
    }

    /// The `Set-Cookie` for an answer that came from `target` after a weighted choice.
    pub fn set_cookie(&self, target: usize) -> Option<&HeaderValue> {
        match self {
            Session::Cookie { set_cookie, .. } => set_cookie[target].as_ref(),
            Session::Header { .. } => None,
        }
    }
}

/// The cookie token of a backend: 16 hex digits of a fixed 64-bit hash of its name, the same in
/// every process and across reloads.
pub fn token(backend: &str) -> String {
    format!("{:016x}", hash(backend.as_bytes()))
}

/// FNV-1a 64 with a final avalanche (splitmix64's), so nearby inputs spread over the whole range.
/// Fixed, not randomly seeded: every proxy must hash a user the same way.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The target whose cumulative-weight range holds the point `h / 2^64 * total` (`total` > 0).
pub fn by_point(weights: &[u32], total: u64, h: u64) -> usize {
    let point = u64::try_from((u128::from(h) * u128::from(total)) >> 64).expect("below total");
    let mut end = 0u64;
    for (i, &w) in weights.iter().enumerate() {
        end += u64::from(w);
        if point < end {
            return i;
        }
    }
    unreachable!("point {point} below total {total}")
}

/// The value of cookie `name` in the request's `Cookie` headers (HTTP/2 may split them).
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n == name).then(|| v.trim_matches('"'))
        })
}

#[cfg(test)]
mod tests;
