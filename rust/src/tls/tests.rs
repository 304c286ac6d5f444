//! mTLS end to end on loopback: a front engine (plaintext listener, backend with `tls`) talks to
//! a back engine (STRICT / PERMISSIVE listener) in front of a hyper upstream that echoes the
//! `x-forwarded-client-cert` it receives. Certificates come from rcgen.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Engine;

// === certificates ===

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// PEM material for `Engine::set_identity`.
struct Issued {
    chain: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    fn issue(&self, spiffe_ids: &[&str], validity: Option<(i32, i32)>) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = spiffe_ids
            .iter()
            .map(|id| SanType::URI((*id).try_into().unwrap()))
            .collect();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        if let Some((from, to)) = validity {
            params.not_before = date_time_ymd(from, 1, 1);
            params.not_after = date_time_ymd(to, 1, 1);
        }
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            chain: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

const FRONT: &str = "spiffe://td/ns/front/sa/web";
const BACK: &str = "spiffe://td/ns/back/sa/reviews";

fn set(engine: &Engine, issued: &Issued, bundle: &str) -> u64 {
    engine.set_identity(&issued.chain, &issued.key, bundle).unwrap()
}

// === upstream, engines ===

/// Answers `xfcc=<x-forwarded-client-cert or ->`.
async fn xfcc_upstream() -> SocketAddr {
    crate::testutil::serve(false, |req: Request<Incoming>| async move {
        let xfcc = req
            .headers()
            .get_all("x-forwarded-client-cert")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>();
        let text = if xfcc.is_empty() {
            "-".to_owned()
        } else {
            xfcc.join(" | ")
        };
        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(text))))
    })
    .await
}

fn catch_all(listener_tls: &str, backend: &str) -> String {
    format!(
        r#"{{"listeners": [{{"name": "l", "address": "127.0.0.1:0" {listener_tls}}}],
            "backends": [{{"name": "b", {backend}}}],
            "vhosts": [{{"name": "v", "domains": ["*"], "routes": [{{"name": "r", "backends": [{{"backend": "b", "weight": 1}}]}}]}}]}}"#
    )
}

/// The back engine: a `mode` listener before the xfcc upstream.
async fn back(mode: &str, issued: &Issued, bundle: &str) -> (Engine, SocketAddr) {
    let up = xfcc_upstream().await;
    let engine = Engine::new(1).unwrap();
    set(&engine, issued, bundle);
    let tls = format!(r#", "tls": {{"mode": "{mode}"}}"#);
    engine
        .apply(&catch_all(
            &tls,
            &format!(r#""protocol": "http1", "endpoints": ["{up}"]"#),
        ))
        .unwrap();
    let addr = engine.listeners()[0].1;
    (engine, addr)
}

/// The front engine's snapshot: plaintext listener, backend `b` with mTLS to `to`.
fn front_snapshot(to: SocketAddr, identities: &str, connect_timeout_ms: u64) -> String {
    let backend = format!(
        r#""protocol": "http1", "endpoints": ["{to}"], "tls": {{"identities": [{identities}], "server_name": "reviews.back"}}"#
    );
    let mut s = catch_all("", &backend);
    s.insert_str(
        1,
        &format!(r#""pool": {{"connect_timeout_ms": {connect_timeout_ms}}}, "#),
    );
    s
}

fn front(to: SocketAddr, identities: &str, issued: &Issued, bundle: &str) -> (Engine, SocketAddr) {
    let engine = Engine::new(1).unwrap();
    set(&engine, issued, bundle);
    engine.apply(&front_snapshot(to, identities, 2000)).unwrap();
    let addr = engine.listeners()[0].1;
    (engine, addr)
}

/// A GET over a fresh plaintext HTTP/1.1 connection, with an optional spoofed XFCC.
async fn get(addr: SocketAddr, spoof: bool) -> (StatusCode, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get("/").header("host", "svc");
    if spoof {
        req = req.header("x-forwarded-client-cert", "By=x;URI=spiffe://td/ns/admin/sa/root");
    }
    let resp = send
        .send_request(req.body(Full::<Bytes>::default()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Waits up to 5 s for `cond` (a counter another task increments).
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{what}: condition not met within 5 s");
}

fn tls_stat(engine: &Engine, name: &str) -> u64 {
    let stats: serde_json::Value = serde_json::from_str(&engine.stats_json()).unwrap();
    stats["tls"][name].as_u64().unwrap()
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn sha256_hex_of_pem(pem: &str) -> String {
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    super::inbound::sha256_hex(&der)
}

// === identity ===

#[test]
fn set_identity_checks_the_material_and_counts_generations() {
    let ca = Ca::new("root");
    let other = ca.issue(&[BACK], None);
    let good = ca.issue(&[FRONT], Some((2020, 2090)));
    let engine = Engine::new(1).unwrap();
    assert!(engine.identity().is_none());
    let e = |chain: &str, key: &str, bundle: &str| engine.set_identity(chain, key, bundle).unwrap_err().to_string();
    assert!(
        e("junk", &good.key, &ca.pem()).contains("cert_chain_pem: no CERTIFICATE"),
        "{}",
        e("junk", &good.key, &ca.pem())
    );
    assert!(e(&good.chain, "junk", &ca.pem()).contains("key_pem"));
    assert!(e(&good.chain, &other.key, &ca.pem()).contains("key_pem: does not fit the leaf"));
    assert!(e(&good.chain, &good.key, "").contains("trust_bundle_pem"));
    let none = ca.issue(&[], None);
    assert!(e(&none.chain, &none.key, &ca.pem()).contains("no spiffe:// URI SAN"));
    let two = ca.issue(&[FRONT, BACK], None);
    assert!(e(&two.chain, &two.key, &ca.pem()).contains("more than one spiffe://"));
    assert!(engine.identity().is_none(), "refused material changes nothing");

    assert_eq!(set(&engine, &good, &ca.pem()), 1);
    let id = engine.identity().unwrap();
    assert_eq!(&*id.spiffe_id, FRONT);
    assert_eq!(id.not_after, 3_786_912_000); // 2090-01-01T00:00:00Z
    assert_eq!(id.generation, 1);
    assert_eq!(set(&engine, &other, &ca.pem()), 2);
    assert_eq!(&*engine.identity().unwrap().spiffe_id, BACK);
}

#[test]
fn tls_listeners_and_backends_are_refused_before_set_identity() {
    let engine = Engine::new(1).unwrap();
    let strict = catch_all(r#", "tls": {"mode": "STRICT"}"#, r#""protocol": "http1""#);
    let err = engine.apply(&strict).unwrap_err().to_string();
    assert!(
        err.contains("listeners[0].tls.mode: STRICT needs a workload identity"),
        "{err}"
    );
    let backend = catch_all(
        "",
        r#""protocol": "http1", "endpoints": ["127.0.0.1:1"], "tls": {"identities": ["spiffe://td/x"]}"#,
    );
    let err = engine.apply(&backend).unwrap_err().to_string();
    assert!(err.contains("backends[0].tls: mTLS needs a workload identity"), "{err}");
    assert!(engine.listeners().is_empty());
    let ca = Ca::new("root");
    set(&engine, &ca.issue(&[FRONT], None), &ca.pem());
    engine.apply(&strict).unwrap();
    engine.apply(&backend).unwrap();
}

#[test]
fn tls_snapshot_fields_are_validated_by_path() {
    let err = |listener: &str, backend: &str| {
        crate::config::parse(&catch_all(listener, backend))
            .unwrap_err()
            .to_string()
    };
    let plain = r#""protocol": "http1""#;
    assert!(err(r#", "tls": {"mode": "strict"}"#, plain).contains("listeners[0].tls.mode: \"strict\" is not one of"));
    let e = err(r#", "tls": {"mode": "STRICT", "ciphers": []}"#, plain);
    assert!(
        e.contains("listeners[0].tls") && e.contains("unknown field `ciphers`"),
        "{e}"
    );
    let e = err("", r#""protocol": "http1", "tls": {"identities": []}"#);
    assert!(e.contains("backends[0].tls.identities: must name at least one"), "{e}");
    let e = err("", r#""protocol": "http1", "tls": {"identities": ["https://td/x"]}"#);
    assert!(
        e.contains("backends[0].tls.identities[0]: \"https://td/x\" is not a SPIFFE ID"),
        "{e}"
    );
    let e = err(
        "",
        r#""protocol": "http1", "tls": {"identities": ["spiffe://td/x"], "server_name": "a b"}"#,
    );
    assert!(e.contains("backends[0].tls.server_name"), "{e}");
    let e = err(
        "",
        r#""protocol": "http1", "tls": {"identities": ["spiffe://td/x"], "sni": "a"}"#,
    );
    assert!(
        e.contains("backends[0].tls") && e.contains("unknown field `sni`"),
        "{e}"
    );
    let e = err(
        "",
        r#""protocol": "http1", "endpoints": ["bad..host:80"], "tls": {"identities": ["spiffe://td/x"]}"#,
    );
    assert!(e.contains("backends[0].endpoints[0]: no TLS server name"), "{e}");
}

// === inbound + outbound ===

#[test]
fn mtls_end_to_end_sets_xfcc_and_drops_the_spoofed_one() {
    run(async {
        let ca = Ca::new("root");
        let (back_engine, back_addr) = back("STRICT", &ca.issue(&[BACK], None), &ca.pem()).await;
        let front_id = ca.issue(&[FRONT], None);
        let (front_engine, front_addr) = front(back_addr, &format!("\"{BACK}\""), &front_id, &ca.pem());
        let (status, xfcc) = get(front_addr, true).await;
        assert_eq!(status, StatusCode::OK, "{xfcc}");
        let hash = sha256_hex_of_pem(&front_id.chain);
        assert_eq!(xfcc, format!("By={BACK};Hash={hash};URI={FRONT}"));
        // Plaintext listener: the spoofed header never passes.
        let (_, plain_view) = get(back_addr_plain(&ca).await, true).await;
        assert_eq!(plain_view, "-");
        assert_eq!(tls_stat(&back_engine, "handshakes"), 1);
        assert_eq!(tls_stat(&front_engine, "upstream_handshakes"), 1);
        assert_eq!(tls_stat(&back_engine, "handshake_failures"), 0);
    });
}

/// A DISABLE listener in front of the xfcc upstream.
async fn back_addr_plain(ca: &Ca) -> SocketAddr {
    let (engine, addr) = back("DISABLE", &ca.issue(&[BACK], None), &ca.pem()).await;
    // Leaked on purpose: it serves until the test's runtime ends.
    std::mem::forget(engine);
    addr
}

#[test]
fn wrong_server_identity_answers_502_and_counts() {
    run(async {
        let ca = Ca::new("root");
        let (back_engine, back_addr) = back("STRICT", &ca.issue(&[BACK], None), &ca.pem()).await;
        let want = "\"spiffe://td/ns/back/sa/ratings\", \"spiffe://td/ns/back/sa/details\"";
        let (front_engine, front_addr) = front(back_addr, want, &ca.issue(&[FRONT], None), &ca.pem());
        let (status, body) = get(front_addr, false).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(
            body,
            format!(
                "upstream identity mismatch: expected spiffe://td/ns/back/sa/ratings, spiffe://td/ns/back/sa/details, got {BACK}\n"
            )
        );
        // A mismatch is a connect failure: the built-in retry (attempts 1, `connect-failure`)
        // tries once more, and meets the same certificate.
        assert_eq!(tls_stat(&front_engine, "identity_mismatch"), 2);
        assert_eq!(tls_stat(&front_engine, "upstream_handshakes"), 0);
        assert_eq!(
            tls_stat(&back_engine, "handshakes"),
            0,
            "no request reached the wrong server"
        );
    });
}

/// The client certificates STRICT refuses: each one fails the handshake (502 at the front),
/// counted at both ends, and nothing reaches the upstream.
#[test]
fn strict_refuses_unknown_ca_expired_and_not_yet_valid_client_certificates() {
    run(async {
        let ca = Ca::new("root");
        let rogue = Ca::new("rogue");
        let cases = [
            ("unknown CA", rogue.issue(&[FRONT], None)),
            ("expired", ca.issue(&[FRONT], Some((2000, 2001)))),
            ("not yet valid", ca.issue(&[FRONT], Some((2090, 2091)))),
        ];
        let (back_engine, back_addr) = back("STRICT", &ca.issue(&[BACK], None), &ca.pem()).await;
        for (what, issued) in &cases {
            let before = tls_stat(&back_engine, "handshake_failures");
            let (_front_engine, front_addr) = front(back_addr, &format!("\"{BACK}\""), issued, &ca.pem());
            let (status, body) = get(front_addr, false).await;
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{what}: {body}");
            // TLS 1.3: the client's side of the handshake is done before the server judges its
            // certificate, so the refusal is counted at the back (and the front sees a closed
            // connection, retried once for a GET).
            eventually(what, || tls_stat(&back_engine, "handshake_failures") > before).await;
        }
        assert_eq!(tls_stat(&back_engine, "handshakes"), 0);
        // The same front with a good certificate passes.
        let (_front_engine, front_addr) =
            front(back_addr, &format!("\"{BACK}\""), &ca.issue(&[FRONT], None), &ca.pem());
        assert_eq!(get(front_addr, false).await.0, StatusCode::OK);
    });
}

/// Accepts any server certificate: a client that checks nothing and presents nothing.
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    crate::tls::provider_signatures!();
}

/// Sends a plaintext request head and reads until EOF: what came back.
async fn plaintext_exchange(addr: SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

#[test]
fn strict_refuses_plaintext_and_tls_without_client_certificate() {
    run(async {
        let ca = Ca::new("root");
        let (back_engine, back_addr) = back("STRICT", &ca.issue(&[BACK], None), &ca.pem()).await;
        assert_eq!(
            plaintext_exchange(back_addr).await,
            b"",
            "STRICT answers plaintext with a close"
        );
        assert_eq!(tls_stat(&back_engine, "plaintext_rejected"), 1);

        let config = rustls::ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer))
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(back_addr).await.unwrap();
        // TLS 1.3: the client may finish its side before the server's alert arrives; the
        // first read then fails or sees EOF, never an HTTP answer.
        if let Ok(mut tls) = connector.connect(ServerName::try_from("x").unwrap(), tcp).await {
            let _ = tls.write_all(b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n").await;
            let mut out = Vec::new();
            let _ = tls.read_to_end(&mut out).await;
            assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        }
        eventually("no client certificate", || {
            tls_stat(&back_engine, "handshake_failures") == 1
        })
        .await;
        assert_eq!(tls_stat(&back_engine, "handshakes"), 0);
    });
}

#[test]
fn permissive_serves_plaintext_and_mtls_on_one_port() {
    run(async {
        let ca = Ca::new("root");
        let (back_engine, back_addr) = back("PERMISSIVE", &ca.issue(&[BACK], None), &ca.pem()).await;
        let plain = plaintext_exchange(back_addr).await;
        let text = String::from_utf8_lossy(&plain);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("\r\n\r\n-"), "plaintext: no XFCC: {text}");
        let (front_engine, front_addr) = front(back_addr, &format!("\"{BACK}\""), &ca.issue(&[FRONT], None), &ca.pem());
        let (status, xfcc) = get(front_addr, false).await;
        assert_eq!(status, StatusCode::OK);
        assert!(xfcc.ends_with(&format!("URI={FRONT}")), "{xfcc}");
        assert_eq!(tls_stat(&back_engine, "handshakes"), 1);
        assert_eq!(tls_stat(&back_engine, "plaintext_rejected"), 0);
        drop(front_engine);
    });
}

/// Rotation: the client certificate and then the root change under a pooled (established)
/// connection, which keeps serving; new connections use the new material, and once the old
/// root is dropped a certificate from it no longer gets in.
#[test]
fn rotation_keeps_established_connections_and_applies_to_new_handshakes() {
    run(async {
        let (old_root, new_root) = (Ca::new("root-1"), Ca::new("root-2"));
        let both = format!("{}{}", old_root.pem(), new_root.pem());
        let (back_engine, back_addr) = back("STRICT", &old_root.issue(&[BACK], None), &old_root.pem()).await;
        let first = old_root.issue(&[FRONT], None);
        let (front_engine, front_addr) = front(back_addr, &format!("\"{BACK}\""), &first, &old_root.pem());
        let old_hash = sha256_hex_of_pem(&first.chain);
        assert!(get(front_addr, false).await.1.contains(&old_hash));

        // Both sides trust old + new; then each takes a certificate from the new root.
        set(&back_engine, &old_root.issue(&[BACK], None), &both);
        set(&front_engine, &first, &both);
        set(&back_engine, &new_root.issue(&[BACK], None), &both);
        let second = new_root.issue(&[FRONT], None);
        assert_eq!(set(&front_engine, &second, &both), 3);
        // The pooled connection (old certificates) still serves: established connections are untouched.
        assert!(get(front_addr, false).await.1.contains(&old_hash));
        // Even once the back drops the old root.
        set(&back_engine, &new_root.issue(&[BACK], None), &new_root.pem());
        assert!(get(front_addr, false).await.1.contains(&old_hash));
        assert_eq!(tls_stat(&back_engine, "handshakes"), 1);

        // A changed pool setting gives the front a new endpoint pool: a new handshake, with
        // the new certificate.
        front_engine
            .apply(&front_snapshot(back_addr, &format!("\"{BACK}\""), 2001))
            .unwrap();
        let (status, xfcc) = get(front_addr, false).await;
        assert_eq!(status, StatusCode::OK, "{xfcc}");
        assert!(xfcc.contains(&sha256_hex_of_pem(&second.chain)), "{xfcc}");
        assert_eq!(tls_stat(&back_engine, "handshakes"), 2);

        // A new connection with a certificate from the dropped root fails.
        let (_stale_engine, stale_addr) = front(back_addr, &format!("\"{BACK}\""), &first, &both);
        assert_eq!(get(stale_addr, false).await.0, StatusCode::BAD_GATEWAY);
        eventually("dropped root", || tls_stat(&back_engine, "handshake_failures") >= 1).await;
        assert_eq!(tls_stat(&back_engine, "handshakes"), 2);
    });
}
