use super::*;

fn hex(s: &str) -> Bytes {
    let s: String = s.chars().filter(char::is_ascii_hexdigit).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

fn fields(d: &mut Decoder, block: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    d.decode(&hex(block), &mut out).unwrap();
    out.into_iter()
        .map(|(n, v)| {
            let n = match n {
                Name::Method => ":method".to_string(),
                Name::Scheme => ":scheme".to_string(),
                Name::Authority => ":authority".to_string(),
                Name::Path => ":path".to_string(),
                Name::Header(h) => h.as_str().to_string(),
                Name::Invalid(b) => String::from_utf8_lossy(&b).into_owned(),
            };
            (n, String::from_utf8(v.to_vec()).unwrap())
        })
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(a, b)| ((*a).to_string(), (*b).to_string())).collect()
}

#[test]
fn the_huffman_code_is_canonical() {
    // The bit-by-bit decoder relies on it: codes of one length are consecutive, in symbol order.
    let c = canonical();
    for s in 0..=255u8 {
        let len = usize::from(ENCODE_CODE_LENGTHS[usize::from(s)]);
        let rank = c.symbols[c.offset[len] as usize..][..c.count[len] as usize]
            .iter()
            .position(|&x| x == s)
            .unwrap();
        assert_eq!(
            ENCODE_CODES[usize::from(s)],
            c.first[len] + u32::try_from(rank).unwrap(),
            "symbol {s}"
        );
    }
}

/// The three requests of RFC 7541 C.3 and C.4 (the same fields, without and with Huffman).
fn rfc_requests() -> [Vec<(String, String)>; 3] {
    let first = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ];
    let mut second = first.to_vec();
    second.push(("cache-control", "no-cache"));
    let third = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];
    [pairs(&first), pairs(&second), pairs(&third)]
}

#[test]
fn rfc7541_c3_and_c4_requests_with_and_without_huffman() {
    let plain = [
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ];
    let huffman = [
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ];
    for blocks in [plain, huffman] {
        let mut d = Decoder::new(4096);
        for ((block, want), size) in blocks.iter().zip(rfc_requests()).zip([57, 110, 164]) {
            assert_eq!(fields(&mut d, block), want, "{block}");
            assert_eq!(d.table_size(), size, "{block}");
        }
    }
}

#[test]
fn eviction_keeps_the_table_within_its_size() {
    // RFC 7541 C.5 with a 256-byte table: the third response evicts the oldest entries.
    let mut d = Decoder::new(256);
    let mut block = BytesMut::new();
    for i in 0..10 {
        block.clear();
        block.put_u8(0x40);
        put_str(&mut block, format!("name-{i}").as_bytes());
        put_str(&mut block, &[b'v'; 40]);
        let mut out = Vec::new();
        d.decode(&block.clone().freeze(), &mut out).unwrap();
        assert!(d.table_size() <= 256);
    }
    // 62 is the newest entry, 63 the one before; 4 entries of 6+40+32 = 78 bytes do not fit.
    let mut out = Vec::new();
    d.decode(&Bytes::from_static(&[0x80 | 0x3e, 0x80 | 0x3f, 0x80 | 0x40]), &mut out)
        .unwrap();
    assert_eq!(out[0].0, Name::Header(HeaderName::from_static("name-9")));
    assert_eq!(out[2].0, Name::Header(HeaderName::from_static("name-7")));
    assert_eq!(
        d.decode(&Bytes::from_static(&[0x80 | 0x41]), &mut Vec::new()),
        Err(Error::Index)
    );
}

#[test]
fn invalid_blocks_are_compression_errors() {
    let cases: &[(&[u8], Error)] = &[
        (&[0x80], Error::Index),                 // index 0
        (&[0xff, 0x00], Error::Index),           // 127: past both tables
        (&[0x41, 0x05, b'a'], Error::Truncated), // value longer than the block
        (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], Error::Integer),
        (&[0x82, 0x3f, 0xe1, 0x1f], Error::SizeUpdate), // update after a field
        (&[0x3f, 0xe2, 0x1f], Error::SizeUpdate),       // 4097 > 4096
        (&[0x41, 0x81, 0x00], Error::Huffman),          // padding of zeros
        (&[0x41, 0x84, 0xff, 0xff, 0xff, 0xff], Error::Huffman), // EOS inside
    ];
    for (block, want) in cases {
        let mut d = Decoder::new(4096);
        assert_eq!(
            d.decode(&Bytes::copy_from_slice(block), &mut Vec::new()),
            Err(*want),
            "{block:02x?}"
        );
    }
}

#[test]
fn a_size_update_to_zero_empties_the_table() {
    let mut d = Decoder::new(4096);
    fields(&mut d, "400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65");
    assert!(d.table_size() > 0);
    fields(&mut d, "20 82");
    assert_eq!(d.table_size(), 0);
    assert_eq!(d.decode(&hex("be"), &mut Vec::new()), Err(Error::Index));
}

#[test]
fn names_a_request_must_not_carry_are_invalid_not_errors() {
    for n in ["Upper", ":status", ":foo", "bad name"] {
        assert!(matches!(Name::from_bytes(n.as_bytes()), Name::Invalid(_)), "{n}");
    }
    assert_eq!(Name::from_bytes(b"x-y"), Name::Header(HeaderName::from_static("x-y")));
}

#[test]
fn huffman_round_trips_every_byte_value() {
    let all: Vec<u8> = (0..=255).collect();
    for s in [&b""[..], b"a", b"www.example.com", b"custom-value", &all] {
        let mut enc = BytesMut::new();
        huffman_encode(s, &mut enc);
        assert_eq!(&huffman_decode(&enc).unwrap()[..], s);
    }
    let mut enc = BytesMut::new();
    huffman_encode(b"www.example.com", &mut enc);
    assert_eq!(&enc[..], &hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")[..]);
}

#[test]
fn encoded_responses_decode_to_what_was_encoded() {
    // The encoder's output read back by this decoder (never indexing: the table stays empty).
    let mut block = BytesMut::new();
    encode_status(StatusCode::OK, &mut block);
    encode_status(StatusCode::IM_A_TEAPOT, &mut block);
    let hs = [
        ("content-type", "text/plain"),
        ("content-length", "12"),
        ("x-long", &"z".repeat(300)),
        ("www-authenticate", "Basic"),
    ];
    for (n, v) in hs {
        encode_field(
            &HeaderName::from_static(n),
            &HeaderValue::from_str(v).unwrap(),
            &mut block,
        );
    }
    let mut out = Vec::new();
    Decoder::new(4096).decode(&block.freeze(), &mut out).unwrap();
    assert_eq!(
        out[0],
        (
            Name::Invalid(Bytes::from_static(b":status")),
            Bytes::from_static(b"200")
        )
    );
    assert_eq!(out[1].1, Bytes::from_static(b"418"));
    for (i, (n, v)) in hs.iter().enumerate() {
        assert_eq!(
            out[i + 2],
            (
                Name::Header(HeaderName::from_static(n)),
                Bytes::copy_from_slice(v.as_bytes())
            )
        );
    }
}

#[test]
fn static_name_indexes_match_the_table() {
    for (i, (name, _)) in STATIC.iter().enumerate() {
        let idx = static_name(name.as_bytes());
        assert!(idx == 0 || usize::from(idx) == i + 1, "{name}");
    }
    assert_eq!(static_name(b"content-type"), 31);
    // Every name a response may carry that the table has (all but the request-only ones and
    // the pseudo-headers) is found.
    let request_only = [
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept",
        "authorization",
        "cookie",
        "expect",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "max-forwards",
        "proxy-authorization",
        "range",
        "referer",
        "transfer-encoding",
        "user-agent",
    ];
    for (i, (name, _)) in STATIC.iter().enumerate() {
        if !name.starts_with(':') && !request_only.contains(name) {
            assert_eq!(usize::from(static_name(name.as_bytes())), i + 1, "{name}");
        }
    }
}

#[test]
fn raw_fields_are_encoded_lower_case_as_their_header_name_would_be() {
    // An HTTP/1.1 upstream's names in any case, a name longer than the stack buffer.
    let long = format!("X-{}", "Long".repeat(40));
    let long_value = "v".repeat(300);
    let fields = [
        ("Content-Type", "text/plain"),
        ("SERVER", "nginx"),
        ("x-custom", "v"),
        ("Content-Length", "1"),
        ("x-long-value", long_value.as_str()),
        ("X-Custom", "w"),
        (long.as_str(), "z"),
    ];
    for (n, v) in fields {
        let (mut raw, mut typed) = (BytesMut::new(), BytesMut::new());
        encode_raw_field(n.as_bytes(), v.as_bytes(), &mut raw);
        let name = HeaderName::from_bytes(n.as_bytes()).unwrap();
        encode_field(&name, &HeaderValue::from_str(v).unwrap(), &mut typed);
        assert_eq!(raw, typed, "{n}");
        let mut out = Vec::new();
        Decoder::new(4096).decode(&raw.freeze(), &mut out).unwrap();
        assert_eq!(out, [(Name::Header(name), Bytes::copy_from_slice(v.as_bytes()))]);
    }
}

#[test]
fn lower_case_by_words_equals_the_byte_by_byte_lower_case() {
    // Every byte value at every position of names of every length up to 32.
    for len in 0..=32usize {
        for at in 0..len.max(1) {
            for b in 0..=255u8 {
                let mut name: Vec<u8> = (0..len).map(|i| b"aZ-09Mx"[i % 7]).collect();
                if len > 0 {
                    name[at] = b;
                }
                let mut buf = [0u8; 32];
                assert_eq!(lower_case(&name, &mut buf), &name.to_ascii_lowercase()[..], "{name:?}");
            }
        }
    }
}
