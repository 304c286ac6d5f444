//! HTTPRoute filters: header modifiers, URL rewrite and request redirect.

use http::uri::Authority;
use http::{HeaderName, HeaderValue, StatusCode};

use crate::headers::raw::HeaderEdit;

/// `RequestHeaderModifier` / `ResponseHeaderModifier`: set, then add, then remove.
#[derive(Debug, Default)]
pub struct HeaderModifier {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderModifier {
    /// On a `HeaderMap` or a header block kept raw (`headers::raw`).
    pub fn apply<H: HeaderEdit>(&self, headers: &mut H) {
        for (name, value) in &self.set {
            headers.insert_header(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append_header(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove_header(name);
        }
    }
}

/// `HTTPPathModifier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathModifier {
    ReplaceFullPath(String),
    /// Replaces the part of the path the route's `PathPrefix` matched.
    ReplacePrefixMatch(String),
}

impl PathModifier {
    /// `matched_prefix` is the route's `PathPrefix` without its trailing `/` (validated present
    /// for `ReplacePrefixMatch` when the snapshot was compiled).
    pub fn apply(&self, path: &str, matched_prefix: Option<&str>) -> String {
        match self {
            PathModifier::ReplaceFullPath(p) => p.clone(),
            PathModifier::ReplacePrefixMatch(r) => replace_prefix(path, matched_prefix.unwrap_or(""), r),
        }
    }
}

/// Replaces `prefix` (element-wise, already known to match) at the start of `path` by
/// `replacement`, never producing `//` nor an empty path:
/// `/foo/bar` with `/foo` -> `/v2` gives `/v2/bar`; with `/foo` -> `/` gives `/bar`.
pub fn replace_prefix(path: &str, prefix: &str, replacement: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    // Prefix `/` matched all of `/`: nothing is left to append.
    let rest = if prefix.is_empty() && rest == "/" { "" } else { rest };
    if rest.is_empty() || rest == "/" && replacement.ends_with('/') {
        return if replacement.is_empty() {
            "/".to_owned()
        } else {
            replacement.to_owned()
        };
    }
    let head = replacement.trim_end_matches('/');
    let mut out = String::with_capacity(head.len() + rest.len());
    out.push_str(head);
    out.push_str(rest);
    out
}

/// `URLRewrite`.
#[derive(Debug, Default)]
pub struct UrlRewrite {
    /// The new host: parsed once at compile time, as the upstream authority and as the `Host` value.
    pub hostname: Option<(Authority, HeaderValue)>,
    pub path: Option<PathModifier>,
}

/// `RequestRedirect`: the engine answers with `Location` built from the request.
#[derive(Debug)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathModifier>,
    pub status: StatusCode,
}

/// The parts of a request a redirect is built from.
pub struct RequestTarget<'a> {
    pub scheme: &'a str,
    pub host: &'a str,
    pub port: Option<u16>,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

impl Redirect {
    /// The `Location`: each part the filter does not replace comes from the request. A port left
    /// unset keeps the request's port, except when the scheme changes (the new scheme's
    /// well-known port is meant); a port that is the scheme's default is left out.
    pub fn location(&self, req: &RequestTarget<'_>, matched_prefix: Option<&str>) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(req.scheme);
        let host = self.hostname.as_deref().unwrap_or(req.host);
        let port = match (self.port, &self.scheme) {
            (Some(p), _) => Some(p),
            (None, Some(_)) => None,
            (None, None) => req.port,
        };
        let port = port.filter(|&p| !matches!((scheme, p), ("http", 80) | ("https", 443)));
        let path = match &self.path {
            Some(m) => m.apply(req.path, matched_prefix),
            None => req.path.to_owned(),
        };
        let mut out = String::with_capacity(scheme.len() + host.len() + path.len() + 16);
        out.push_str(scheme);
        out.push_str("://");
        out.push_str(host);
        if let Some(p) = port {
            out.push(':');
            out.push_str(&p.to_string());
        }
        out.push_str(&path);
        if let Some(q) = req.query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

/// Every filter of one rule, in the form the request path applies them.
#[derive(Debug, Default)]
pub struct Filters {
    pub request_headers: Vec<HeaderModifier>,
    pub response_headers: Vec<HeaderModifier>,
    pub rewrite: Option<UrlRewrite>,
    pub redirect: Option<Redirect>,
    pub fault: Option<Fault>,
    /// `RequestMirror`: the backend (an index into the snapshot's backends) and the percent.
    pub mirror: Option<(usize, f64)>,
}

/// Fault injection: a share of requests is delayed, a share answered by the engine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    /// (percent, delay)
    pub delay: Option<(f64, std::time::Duration)>,
    /// (percent, status)
    pub abort: Option<(f64, StatusCode)>,
}

/// Whether a request falls in `percent` % (drawn at random).
pub fn hit(percent: f64) -> bool {
    percent >= 100.0 || percent > 0.0 && fastrand::f64() * 100.0 < percent
}

#[cfg(test)]
mod tests;
