//! HTTPRoute match conditions: path, method, headers and query parameters.
//!
//! A `RouteMatch` succeeds when every condition it holds succeeds; the engine
//! takes the first route of a virtual host whose match succeeds.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

/// Compiles a Gateway API regular expression: it must match the whole value.
pub fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

#[derive(Debug)]
pub enum PathMatch {
    Exact(String),
    /// The prefix without its trailing `/` (empty for `/`), matched element by element.
    Prefix(String),
    Regex(Regex),
}

impl PathMatch {
    pub fn prefix(value: &str) -> Self {
        PathMatch::Prefix(value.trim_end_matches('/').to_owned())
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(v) => path == v,
            PathMatch::Prefix(p) => prefix_matches(p, path),
            PathMatch::Regex(re) => re.is_match(path),
        }
    }
}

/// `/foo` matches `/foo`, `/foo/` and `/foo/bar`, not `/foobar`; `""` (from `/`) matches all.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[derive(Debug)]
pub enum ValueMatch {
    Exact(String),
    Regex(Regex),
}

impl ValueMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(v) => value == v,
            ValueMatch::Regex(re) => re.is_match(value),
        }
    }
}

#[derive(Debug)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: ValueMatch,
}

#[derive(Debug)]
pub struct QueryMatch {
    pub name: String,
    pub value: ValueMatch,
}

/// All conditions of one `HTTPRouteMatch`.
#[derive(Debug, Default)]
pub struct RouteMatch {
    pub path: Option<PathMatch>,
    pub method: Option<Method>,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
}

impl RouteMatch {
    pub fn matches(&self, method: &Method, path: &str, query: Option<&str>, headers: &HeaderMap) -> bool {
        if let Some(m) = &self.method {
            if m != method {
                return false;
            }
        }
        if let Some(p) = &self.path {
            if !p.matches(path) {
                return false;
            }
        }
        // A header present several times is matched on its first value, as the spec says.
        let headers_ok = self.headers.iter().all(|h| {
            headers
                .get(&h.name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| h.value.matches(v))
        });
        headers_ok
            && self
                .query
                .iter()
                .all(|q| query_param(query, &q.name).is_some_and(|v| q.value.matches(&v)))
    }

    /// The prefix a `ReplacePrefixMatch` rewrite replaces, when the path match is a `PathPrefix`.
    pub fn matched_prefix(&self) -> Option<&str> {
        match &self.path {
            Some(PathMatch::Prefix(p)) => Some(p),
            _ => None,
        }
    }
}

/// The first value of query parameter `name` (names compared after percent-decoding).
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<Cow<'q, str>> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` escapes and `+`; allocates only when there is something to decode.
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
