use super::*;
use http::HeaderMap;

fn target<'a>(host: &'a str, port: Option<u16>, path: &'a str, query: Option<&'a str>) -> RequestTarget<'a> {
    RequestTarget {
        scheme: "http",
        host,
        port,
        path,
        query,
    }
}

fn redirect() -> Redirect {
    Redirect {
        scheme: None,
        hostname: None,
        port: None,
        path: None,
        status: StatusCode::FOUND,
    }
}

#[test]
fn replace_prefix_match() {
    let cases = [
        ("/foo/bar", "/foo", "/v2", "/v2/bar"),
        ("/foo", "/foo", "/v2", "/v2"),
        ("/foo/", "/foo", "/v2", "/v2/"),
        ("/foo/bar", "/foo", "/", "/bar"),
        ("/foo", "/foo", "/", "/"),
        ("/foo/", "/foo", "/", "/"),
        ("/foo/bar", "/foo/", "/v2/", "/v2/bar"),
        ("/prefix/one/two", "/prefix/one", "/one", "/one/two"),
        ("/anything", "/", "/api", "/api/anything"),
        ("/", "/", "/api", "/api"),
    ];
    for (path, prefix, replacement, want) in cases {
        assert_eq!(
            replace_prefix(path, prefix, replacement),
            want,
            "{path} {prefix} -> {replacement}"
        );
    }
}

#[test]
fn path_modifiers() {
    let full = PathModifier::ReplaceFullPath("/new".into());
    assert_eq!(full.apply("/old/x", Some("/old")), "/new");
    let prefix = PathModifier::ReplacePrefixMatch("/new".into());
    assert_eq!(prefix.apply("/old/x", Some("/old")), "/new/x");
}

#[test]
fn redirect_location_keeps_what_it_does_not_replace() {
    let r = redirect();
    assert_eq!(
        r.location(&target("example.com", None, "/a", Some("x=1")), None),
        "http://example.com/a?x=1"
    );
    assert_eq!(
        r.location(&target("example.com", Some(8080), "/a", None), None),
        "http://example.com:8080/a"
    );
    assert_eq!(
        r.location(&target("example.com", Some(80), "/a", None), None),
        "http://example.com/a"
    );
}

#[test]
fn redirect_location_replaces_parts() {
    let r = Redirect {
        scheme: Some("https".into()),
        ..redirect()
    };
    assert_eq!(
        r.location(&target("example.com", Some(8080), "/a", None), None),
        "https://example.com/a"
    );
    let r = Redirect {
        scheme: Some("https".into()),
        port: Some(443),
        ..redirect()
    };
    assert_eq!(
        r.location(&target("example.com", None, "/a", None), None),
        "https://example.com/a"
    );
    let r = Redirect {
        scheme: Some("https".into()),
        port: Some(8443),
        ..redirect()
    };
    assert_eq!(
        r.location(&target("example.com", None, "/a", None), None),
        "https://example.com:8443/a"
    );
    let r = Redirect {
        hostname: Some("other.example".into()),
        port: Some(9000),
        ..redirect()
    };
    assert_eq!(
        r.location(&target("example.com", Some(8080), "/a", Some("q")), None),
        "http://other.example:9000/a?q"
    );
    let r = Redirect {
        path: Some(PathModifier::ReplaceFullPath("/login".into())),
        ..redirect()
    };
    assert_eq!(
        r.location(&target("h", None, "/a/b", Some("next=1")), None),
        "http://h/login?next=1"
    );
    let r = Redirect {
        path: Some(PathModifier::ReplacePrefixMatch("/v2".into())),
        ..redirect()
    };
    assert_eq!(
        r.location(&target("h", None, "/v1/users", None), Some("/v1")),
        "http://h/v2/users"
    );
}

#[test]
fn header_modifier_sets_adds_and_removes() {
    let m = HeaderModifier {
        set: vec![(HeaderName::from_static("x-a"), HeaderValue::from_static("1"))],
        add: vec![(HeaderName::from_static("x-b"), HeaderValue::from_static("2"))],
        remove: vec![HeaderName::from_static("x-c")],
    };
    let mut h = HeaderMap::new();
    h.append("x-a", HeaderValue::from_static("old"));
    h.append("x-a", HeaderValue::from_static("old2"));
    h.append("x-b", HeaderValue::from_static("1"));
    h.append("x-c", HeaderValue::from_static("gone"));
    m.apply(&mut h);
    assert_eq!(h.get_all("x-a").iter().collect::<Vec<_>>(), ["1"]);
    assert_eq!(h.get_all("x-b").iter().collect::<Vec<_>>(), ["1", "2"]);
    assert!(!h.contains_key("x-c"));
}
