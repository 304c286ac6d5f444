use super::*;

fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

#[test]
fn removes_hop_by_hop_and_what_connection_lists() {
    let mut h = map(&[
        ("connection", "keep-alive, X-Custom-Hop"),
        ("connection", "x-other"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("proxy-authorization", "Basic x"),
        ("proxy-authenticate", "Basic"),
        ("x-custom-hop", "1"),
        ("x-other", "2"),
        ("x-kept", "3"),
        ("content-length", "10"),
        ("trailer", "x-checksum"),
    ]);
    strip_hop_by_hop(&mut h);
    let mut left: Vec<_> = h.keys().map(http::HeaderName::as_str).collect();
    left.sort_unstable();
    assert_eq!(left, ["content-length", "trailer", "x-kept"]);
}

#[test]
fn te_keeps_only_trailers() {
    let mut h = map(&[("te", "gzip, Trailers;q=1")]);
    strip_hop_by_hop(&mut h);
    assert_eq!(h.get_all("te").iter().collect::<Vec<_>>(), ["trailers"]);
    let mut h = map(&[("te", "gzip, deflate")]);
    strip_hop_by_hop(&mut h);
    assert!(!h.contains_key("te"));
}

#[test]
fn forwarded_headers() {
    let ip = HeaderValue::from_static("10.0.0.7");
    let mut h = HeaderMap::new();
    set_forwarded(&mut h, &ip);
    assert_eq!(h["x-forwarded-for"], "10.0.0.7");
    assert_eq!(h["x-forwarded-proto"], "http");
    let id = h["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);

    let mut h = map(&[
        ("x-forwarded-for", "1.1.1.1"),
        ("x-forwarded-for", "2.2.2.2"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "abc"),
    ]);
    set_forwarded(&mut h, &ip);
    assert_eq!(
        h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
        ["1.1.1.1, 2.2.2.2, 10.0.0.7"]
    );
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-request-id"], "abc", "an existing request id is kept");
}

#[test]
fn request_ids_are_uuid_v4() {
    let a = request_id();
    let b = request_id();
    assert_ne!(a, b);
    let s = a.to_str().unwrap();
    let parts: Vec<_> = s.split('-').collect();
    assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
    assert!(parts[2].starts_with('4'), "{s}");
    assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'), "{s}");
    assert!(s
        .bytes()
        .all(|c| c == b'-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
}

#[test]
fn expect_is_removed_from_requests_only() {
    let mut h = map(&[("expect", "100-continue"), ("x-kept", "1")]);
    strip_hop_by_hop(&mut h);
    assert!(h.contains_key("expect"), "responses keep it (not hop-by-hop)");
    strip_request_hop_by_hop(&mut h);
    assert!(!h.contains_key("expect"));
    assert!(h.contains_key("x-kept"));
    // With hop-by-hop names present too.
    let mut h = map(&[("connection", "close"), ("expect", "100-continue"), ("te", "trailers")]);
    strip_request_hop_by_hop(&mut h);
    let left: Vec<_> = h.iter().map(|(k, v)| (k.as_str(), v.to_str().unwrap())).collect();
    assert_eq!(left, [("te", "trailers")]);
}
