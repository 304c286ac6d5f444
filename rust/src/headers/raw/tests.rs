use super::*;
use crate::h1::codec::parse_response;
use bytes::BytesMut;
use http::header::{SET_COOKIE, TE};

/// The fields of a response head, parsed as the engine's HTTP/1.1 client parses them.
fn parsed(fields: &str) -> RawHeaders {
    let mut buf = BytesMut::from(format!("HTTP/1.1 200 OK\r\n{fields}\r\n").as_bytes());
    parse_response(&mut buf, false, &mut scan::Scanned::default())
        .expect("valid")
        .expect("complete")
        .headers
}

fn written(h: &RawHeaders) -> String {
    let mut out = Vec::new();
    h.write_to(&mut out, None);
    String::from_utf8(out).unwrap()
}

#[test]
fn fields_are_written_in_wire_order_with_their_case_and_duplicates() {
    let h = parsed("Server: nginx\r\nX-A: 1\r\nSet-Cookie: a=1\r\nx-a:2\r\nSet-Cookie: b=2 \r\n");
    assert_eq!(
        written(&h),
        "Server: nginx\r\nX-A: 1\r\nSet-Cookie: a=1\r\nx-a: 2\r\nSet-Cookie: b=2\r\n"
    );
    assert_eq!(h.get_all("x-a").collect::<Vec<_>>(), [&b"1"[..], b"2"]);
    assert_eq!(h.get("server"), Some(&b"nginx"[..]));
    assert!(!h.contains("date"));
}

#[test]
fn edits_are_applied_in_order() {
    let mut h = parsed("X-Keep: 1\r\nX-Gone: 1\r\nX-Set: old\r\nx-set: older\r\n");
    h.insert(HeaderName::from_static("x-set"), HeaderValue::from_static("new"));
    h.append(SET_COOKIE, HeaderValue::from_static("s=1"));
    h.append(HeaderName::from_static("x-keep"), HeaderValue::from_static("2"));
    h.remove("x-gone");
    assert_eq!(
        written(&h),
        "X-Keep: 1\r\nx-set: new\r\nset-cookie: s=1\r\nx-keep: 2\r\n"
    );
    // An added field is removed too.
    h.remove("set-cookie");
    assert_eq!(written(&h), "X-Keep: 1\r\nx-set: new\r\nx-keep: 2\r\n");
    let mut out = Vec::new();
    h.write_to(&mut out, Some("x-keep"));
    assert_eq!(out, b"x-set: new\r\n");
}

#[test]
fn a_route_filter_edits_a_raw_block_as_it_edits_a_map() {
    use crate::route::filters::HeaderModifier;
    let filter = HeaderModifier {
        set: vec![(HeaderName::from_static("x-s"), HeaderValue::from_static("1"))],
        add: vec![(HeaderName::from_static("x-a"), HeaderValue::from_static("2"))],
        remove: vec![HeaderName::from_static("x-r")],
    };
    let wire = "X-S: 0\r\nX-A: 1\r\nX-R: 1\r\nX-O: 1\r\n";
    let mut raw = parsed(wire);
    let mut map = parsed(wire).into_map();
    filter.apply(&mut raw);
    filter.apply(&mut map);
    assert_eq!(raw.into_map(), map);
}

#[test]
fn hop_by_hop_fields_are_dropped_as_from_a_map() {
    let wire = "Connection: keep-alive, X-Custom-Hop\r\nconnection: x-other\r\nKeep-Alive: timeout=5\r\n\
                Proxy-Connection: keep-alive\r\nTransfer-Encoding: chunked\r\nUpgrade: h2c\r\n\
                Proxy-Authorization: Basic x\r\nProxy-Authenticate: Basic\r\nX-Custom-Hop: 1\r\nX-Other: 2\r\n\
                X-Kept: 3\r\nContent-Length: 10\r\nTrailer: x-checksum\r\nTE: gzip, trailers;q=1\r\nExpect: 100-continue\r\n";
    for expect in [false, true] {
        let mut raw = parsed(wire);
        raw.strip_hop_by_hop(expect);
        let mut map = parsed(wire).into_map();
        if expect {
            crate::headers::strip_request_hop_by_hop(&mut map);
        } else {
            crate::headers::strip_hop_by_hop(&mut map);
        }
        assert_eq!(raw.clone().into_map(), map, "expect {expect}");
        let kept = "X-Kept: 3\r\nContent-Length: 10\r\nTrailer: x-checksum\r\n";
        let expected = if expect {
            format!("{kept}te: trailers\r\n")
        } else {
            format!("{kept}Expect: 100-continue\r\nte: trailers\r\n")
        };
        assert_eq!(written(&raw), expected);
    }
    // `TE` without `trailers` goes whole; nothing hop-by-hop: nothing changes.
    let mut raw = parsed("TE: gzip\r\nX-A: 1\r\n");
    raw.strip_hop_by_hop(false);
    assert_eq!(written(&raw), "X-A: 1\r\n");
    let mut raw = parsed("X-A: 1\r\nx-a: 2\r\n");
    raw.strip_hop_by_hop(true);
    assert_eq!(written(&raw), "X-A: 1\r\nx-a: 2\r\n");
    // A `Connection` value that is not visible ASCII lists nothing (as `HeaderValue::to_str`).
    let mut raw = parsed("Connection: x-a, \u{e9}\r\nX-A: 1\r\n");
    raw.strip_hop_by_hop(false);
    assert_eq!(raw.get("x-a"), Some(&b"1"[..]));
    assert!(!raw.contains(TE.as_str()));
    // The lone `keep-alive` and `close` (looked at first), with and without a field so named.
    for wire in [
        "Connection: Keep-Alive\r\nX-A: 1\r\n",
        "Connection: close\r\nX-A: 1\r\n",
        "Connection: CLOSE\r\nClose: 1\r\nX-A: 1\r\n",
        "Connection: keep-alive\r\nKeep-Alive: 1\r\nX-A: 1\r\n",
        "Connection: x-a\r\nX-A: 1\r\nx-b: 2\r\n",
        "X-A: 1\r\nClose: 0\r\nx-b: 2\r\nConnection: X-A, close,, keep-alive\r\nTE: trailers\r\nKeep-Alive: 1\r\n",
        "X-A: 1\r\nConnection: \u{e9}, x-a\r\nTE: gzip;q=1, Trailers ;q=0\r\n",
    ] {
        let mut raw = parsed(wire);
        raw.strip_hop_by_hop(false);
        let mut map = parsed(wire).into_map();
        crate::headers::strip_hop_by_hop(&mut map);
        assert_eq!(raw.clone().into_map(), map, "{wire}");
    }
}

#[test]
fn into_map_keeps_every_value_and_shares_the_block() {
    let h = parsed("A: 1\r\nB: 2\r\na: 3\r\nContent-Length: 0\r\n");
    let map = h.into_map();
    assert_eq!(map.len(), 4);
    assert_eq!(map.get_all("a").iter().collect::<Vec<_>>(), ["1", "3"]);
    assert_eq!(map["content-length"], "0");
}

#[test]
fn obs_fold_and_invalid_bytes_are_refused_before_a_block_is_kept() {
    let refused = |head: &[u8]| {
        let mut buf = BytesMut::from(head);
        parse_response(&mut buf, false, &mut scan::Scanned::default()).is_err()
    };
    assert!(refused(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n"), "obs-fold");
    assert!(refused(b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\n\r\n"), "control byte");
    assert!(refused(b"HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\n\r\n"), "DEL");
    assert!(refused(b"HTTP/1.1 200 OK\r\nX A: 1\r\n\r\n"), "space in a name");
    assert!(refused(b"HTTP/1.1 200 OK\r\nX(A): 1\r\n\r\n"), "separator in a name");
    // What `http` accepts (obs-text, tab) is kept as it came.
    let h = parsed("X-A: caf\u{e9}\tx\r\n");
    assert_eq!(h.get("x-a"), Some("caf\u{e9}\tx".as_bytes()));
    assert_eq!(h.into_map()["x-a"].as_bytes(), "caf\u{e9}\tx".as_bytes());
}

#[test]
fn forwarding_fields_are_set_as_on_a_map() {
    let ip = HeaderValue::from_static("127.0.0.1");
    let without_id = |m: HeaderMap| {
        let mut m = m;
        let id = m.remove("x-request-id");
        (m, id)
    };
    // None of them yet: added (a fresh request id); some already there: joined, replaced, kept.
    for wire in [
        "X-A: 1\r\n",
        "X-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\nX-Forwarded-Proto: https\r\nX-Request-Id: abc\r\n",
    ] {
        let mut raw = parsed(wire);
        crate::headers::set_forwarded_raw(&mut raw, &ip);
        let mut map = parsed(wire).into_map();
        crate::headers::set_forwarded(&mut map, &ip);
        let (raw, raw_id) = without_id(raw.into_map());
        let (map, map_id) = without_id(map);
        assert_eq!(raw, map, "{wire}");
        assert_eq!(raw_id.map(|v| v.len()), map_id.map(|v| v.len()), "{wire}");
    }
    let mut raw = parsed("X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: abc\r\n");
    crate::headers::set_forwarded_raw(&mut raw, &ip);
    assert_eq!(raw.get("x-forwarded-for"), Some(&b"10.0.0.1, 127.0.0.1"[..]));
    assert_eq!(raw.get("x-request-id"), Some(&b"abc"[..]));
}

#[test]
fn names_are_told_apart_by_their_prints_in_any_case() {
    for (t, known) in KNOWN.iter().enumerate() {
        assert_eq!(tag_of(known.as_bytes()), t as u8, "{known}");
        assert_eq!(tag_of(known.to_ascii_uppercase().as_bytes()), t as u8, "{known}");
        // One byte changed anywhere: another name.
        for i in 0..known.len() {
            let mut other = known.as_bytes().to_vec();
            other[i] = if other[i] == b'-' { b'_' } else { b'x' ^ (other[i] & 1) };
            if other != known.as_bytes() {
                assert_eq!(tag_of(&other), OTHER, "{}", String::from_utf8_lossy(&other));
            }
        }
    }
    assert_eq!(tag_of(b"x"), OTHER);
    assert_eq!(tag_of(b"content-type"), OTHER);
}

#[test]
fn known_names_are_their_tags() {
    for known in [
        Known::CONNECTION,
        Known::TRANSFER_ENCODING,
        Known::TE,
        Known::CONTENT_LENGTH,
        Known::DATE,
        Known::TRAILER,
        Known::HOST,
        Known::X_FORWARDED_CLIENT_CERT,
        Known::X_FORWARDED_FOR,
        Known::X_FORWARDED_PROTO,
        Known::X_REQUEST_ID,
    ] {
        let name = Name::as_str(known);
        assert_eq!(tag_of(name.as_bytes()), Name::tag(known), "{name}");
        assert_eq!(HeaderName::from_static(name).as_str(), name);
    }
    for (t, name) in [
        (tag::UPGRADE, "upgrade"),
        (tag::EXPECT, "expect"),
        (tag::CONNECTION, "connection"),
        (tag::CONTENT_LENGTH, "content-length"),
        (tag::TRANSFER_ENCODING, "transfer-encoding"),
    ] {
        assert_eq!(tag_of(name.as_bytes()), t, "{name}");
    }
    // Looked up by tag or by name: the same answers.
    let h = parsed("Connection: keep-alive\r\nX-Request-Id: a\r\nContent-Length: 3\r\n");
    assert_eq!(h.get(Known::CONTENT_LENGTH), h.get("content-length"));
    assert_eq!(h.contains(Known::X_REQUEST_ID), h.contains("x-request-id"));
    assert!(!h.contains(Known::DATE));
}

#[test]
fn tokens_of_a_list_are_found_whole_and_in_any_case() {
    for (value, token, found) in [
        (&b"close"[..], &b"close"[..], true),
        (b"Close", b"close", true),
        (b"keep-alive, close", b"close", true),
        (b"keep-alive ,  CLOSE ", b"close", true),
        (b"closed", b"close", false),
        (b"clos", b"close", false),
        (b"x-close, closer", b"close", false),
        (b"", b"close", false),
        (b"Keep-Alive", b"keep-alive", true),
        (b"keep-alive", b"close", false),
        (b"keep-alivE", b"KEEP-ALIVE", true),
        (b"keep-alive", b"keep", false),
    ] {
        assert_eq!(has_token(value, token), found, "{:?}", String::from_utf8_lossy(value));
    }
    let h = parsed("Connection: Upgrade\r\nconnection: CLOSE\r\n");
    assert!(h.has_token(Known::CONNECTION, b"close"));
    assert!(!h.has_token(Known::CONNECTION, b"keep-alive"));
    assert!(!h.has_token(Known::TE, b"close"));
}

#[test]
fn client_cert_and_host_edits_on_a_raw_block_are_those_on_a_map() {
    use crate::headers::{set_client_cert, X_FORWARDED_CLIENT_CERT};
    use http::header::HOST;
    let xfcc = HeaderValue::from_static("By=spiffe://td/ns/a/sa/b;Hash=00");
    for wire in [
        "Host: a\r\nX-Forwarded-Client-Cert: forged\r\nx-forwarded-client-cert: forged2\r\n",
        "X-A: 1\r\n",
    ] {
        for cert in [None, Some(&xfcc)] {
            let mut raw = parsed(wire);
            let mut map = parsed(wire).into_map();
            assert_eq!(raw.contains_header(&HOST), map.contains_header(&HOST), "{wire}");
            set_client_cert(&mut raw, cert);
            set_client_cert(&mut map, cert);
            assert_eq!(raw.clone().into_map(), map, "{wire} {cert:?}");
            assert_eq!(raw.get(Known::X_FORWARDED_CLIENT_CERT), cert.map(HeaderValue::as_bytes));
            assert_eq!(
                raw.get_all(X_FORWARDED_CLIENT_CERT.as_str()).count(),
                usize::from(cert.is_some())
            );
        }
    }
}

#[test]
fn lower_case_words_are_matched_in_any_case_and_nothing_else() {
    for target in [&b"keep-alive"[..], b"close"] {
        // Every byte a field value may hold, at every place.
        for at in 0..target.len() {
            for b in (0..=255u8).filter(|&b| b == b'\t' || b >= b' ' && b != 0x7f) {
                let mut v = target.to_vec();
                v[at] = b;
                assert_eq!(
                    eq_lower(&v, target),
                    v.eq_ignore_ascii_case(target),
                    "{:?}",
                    String::from_utf8_lossy(&v)
                );
            }
        }
        assert!(eq_lower(&target.to_ascii_uppercase(), target));
        assert!(!eq_lower(&target[1..], target));
        assert!(!eq_lower(&[target, b"x"].concat(), target));
    }
}
