use super::*;
use http::HeaderValue;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

fn path(m: PathMatch) -> RouteMatch {
    RouteMatch {
        path: Some(m),
        ..Default::default()
    }
}

fn get(m: &RouteMatch, p: &str) -> bool {
    m.matches(&Method::GET, p, None, &HeaderMap::new())
}

#[test]
fn path_prefix_matches_whole_elements() {
    let m = path(PathMatch::prefix("/foo"));
    for p in ["/foo", "/foo/", "/foo/bar"] {
        assert!(get(&m, p), "{p}");
    }
    for p in ["/foobar", "/fo", "/", "/bar/foo"] {
        assert!(!get(&m, p), "{p}");
    }
    // A trailing slash in the prefix is ignored.
    let m = path(PathMatch::prefix("/foo/"));
    assert!(get(&m, "/foo") && get(&m, "/foo/x") && !get(&m, "/foox"));
    let all = path(PathMatch::prefix("/"));
    assert!(get(&all, "/") && get(&all, "/anything/at/all"));
}

#[test]
fn exact_and_regex_paths() {
    let exact = path(PathMatch::Exact("/foo".into()));
    assert!(get(&exact, "/foo") && !get(&exact, "/foo/") && !get(&exact, "/foo/bar"));
    let re = path(PathMatch::Regex(anchored("/items/[0-9]+").unwrap()));
    assert!(get(&re, "/items/42"));
    assert!(!get(&re, "/items/42/x") && !get(&re, "/x/items/42") && !get(&re, "/items/"));
}

#[test]
fn method_must_be_equal() {
    let m = RouteMatch {
        method: Some(Method::POST),
        ..Default::default()
    };
    assert!(m.matches(&Method::POST, "/", None, &HeaderMap::new()));
    assert!(!m.matches(&Method::GET, "/", None, &HeaderMap::new()));
}

#[test]
fn headers_match_by_lower_case_name_and_exact_or_regex_value() {
    let m = RouteMatch {
        headers: vec![
            HeaderMatch {
                name: HeaderName::from_static("x-version"),
                value: ValueMatch::Exact("v2".into()),
            },
            HeaderMatch {
                name: HeaderName::from_static("x-user"),
                value: ValueMatch::Regex(anchored("a.*").unwrap()),
            },
        ],
        ..Default::default()
    };
    let ok = |h: &HeaderMap| m.matches(&Method::GET, "/", None, h);
    // HeaderMap names are case-insensitive: the client's X-Version is x-version.
    let mut mixed = HeaderMap::new();
    mixed.insert(
        HeaderName::from_bytes(b"X-Version").unwrap(),
        HeaderValue::from_static("v2"),
    );
    mixed.insert(
        HeaderName::from_bytes(b"X-User").unwrap(),
        HeaderValue::from_static("alice"),
    );
    assert!(ok(&mixed));
    assert!(
        !ok(&headers(&[("x-version", "V2"), ("x-user", "alice")])),
        "values are case-sensitive"
    );
    assert!(!ok(&headers(&[("x-version", "v2"), ("x-user", "bob")])));
    assert!(
        !ok(&headers(&[("x-version", "v2"), ("x-user", "xalice")])),
        "regex is anchored"
    );
    assert!(!ok(&headers(&[("x-user", "alice")])), "missing header");
}

#[test]
fn query_params_match_by_exact_name() {
    let m = RouteMatch {
        query: vec![QueryMatch {
            name: "debug".into(),
            value: ValueMatch::Exact("1".into()),
        }],
        ..Default::default()
    };
    let q = |s: Option<&str>| m.matches(&Method::GET, "/", s, &HeaderMap::new());
    assert!(q(Some("debug=1")));
    assert!(q(Some("a=b&debug=1&c")));
    assert!(q(Some("%64ebug=%31")), "percent-encoded name and value");
    assert!(!q(Some("debug=2")));
    assert!(!q(Some("Debug=1")), "names are case-sensitive");
    assert!(!q(Some("debug=1x")));
    assert!(!q(None));
    assert!(!q(Some("debug=2&debug=1")), "first occurrence counts");
    let re = RouteMatch {
        query: vec![QueryMatch {
            name: "v".into(),
            value: ValueMatch::Regex(anchored("[0-9]+").unwrap()),
        }],
        ..Default::default()
    };
    assert!(re.matches(&Method::GET, "/", Some("v=123"), &HeaderMap::new()));
    assert!(!re.matches(&Method::GET, "/", Some("v=12a"), &HeaderMap::new()));
}

#[test]
fn all_conditions_must_hold() {
    let m = RouteMatch {
        path: Some(PathMatch::prefix("/api")),
        method: Some(Method::GET),
        headers: vec![HeaderMatch {
            name: HeaderName::from_static("x-a"),
            value: ValueMatch::Exact("1".into()),
        }],
        query: vec![],
    };
    let h = headers(&[("x-a", "1")]);
    assert!(m.matches(&Method::GET, "/api/x", None, &h));
    assert!(!m.matches(&Method::GET, "/other", None, &h));
    assert!(!m.matches(&Method::PUT, "/api/x", None, &h));
    assert!(!m.matches(&Method::GET, "/api/x", None, &HeaderMap::new()));
    assert!(RouteMatch::default().matches(&Method::DELETE, "/whatever", Some("x=1"), &HeaderMap::new()));
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("a%20b+c"), "a b c");
    assert!(matches!(percent_decode("plain"), Cow::Borrowed("plain")));
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(percent_decode("%zz"), "%zz");
}
