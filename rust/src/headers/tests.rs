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

/// The formatting before `hex` (a byte loop over a table), kept as the reference.
fn uuid_v4_by_bytes(r: u128) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut bytes = r.to_be_bytes();
    bytes[6] = bytes[6] & 0x0f | 0x40;
    bytes[8] = bytes[8] & 0x3f | 0x80;
    let mut out = [b'-'; 36];
    for (b, at) in bytes.iter().zip(AT) {
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 0x0f)];
    }
    out
}

#[test]
fn request_ids_are_formatted_as_by_the_byte_loop() {
    let mut rng = fastrand::Rng::with_seed(7);
    let fixed = [
        0,
        u128::MAX,
        0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        1 << 127,
        0x0f0f_f0f0 << 64,
    ];
    for r in fixed.into_iter().chain((0..10_000).map(|_| rng.u128(..))) {
        assert_eq!(
            String::from_utf8_lossy(&uuid_v4(r)),
            String::from_utf8_lossy(&uuid_v4_by_bytes(r)),
            "{r:#x}"
        );
    }
}

#[test]
fn request_ids_do_not_repeat() {
    let ids: std::collections::HashSet<_> = (0..100_000).map(|_| request_id()).collect();
    assert_eq!(ids.len(), 100_000);
    // Another thread has its own generator, seeded apart.
    let other: Vec<_> = std::thread::spawn(|| (0..1_000).map(|_| request_id()).collect())
        .join()
        .unwrap();
    assert!(other.iter().all(|id| !ids.contains(id)));
}
