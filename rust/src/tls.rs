//! Workload identity and mTLS (docs/engine-snapshot.md "Security").
//!
//! - `identity`: the workload certificate, key and trust bundle behind one `ArcSwap`
//!   (`IdentityStore`); every handshake reads the current material, so a rotation needs no
//!   rebuilt config and leaves established connections alone.
//! - `inbound`: listener modes (DISABLE / PERMISSIVE / STRICT), the server side of mTLS, the
//!   verified caller (`Peer`) and its `x-forwarded-client-cert`.
//! - `outbound`: the client side towards `backends[].tls`: the workload certificate presented,
//!   the server chain verified against the bundle, then its SPIFFE ID against the backend's.
//! - `stream`: one byte stream type for plaintext and TLS, both directions.
//!
//! All cryptography is rustls (ring provider) and webpki; certificates are read with
//! x509-parser.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use serde::Serialize;

pub mod identity;
pub mod inbound;
pub mod outbound;
pub mod stream;

pub use identity::{Identity, IdentityError, IdentityStore};
pub use inbound::{Inbound, TlsMode};
pub use outbound::{IdentityMismatch, UpstreamTls};
pub use stream::Stream;

/// The crypto provider of every config: ring.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The signature methods `ClientCertVerifier` and `ServerCertVerifier` share: handshake
/// signatures are checked by the provider's algorithms.
macro_rules! provider_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            let algs = $crate::tls::provider().signature_verification_algorithms;
            rustls::crypto::verify_tls12_signature(message, cert, dss, &algs)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            let algs = $crate::tls::provider().signature_verification_algorithms;
            rustls::crypto::verify_tls13_signature(message, cert, dss, &algs)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            $crate::tls::provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}
pub(crate) use provider_signatures;

/// TLS counters (stats JSON `"tls"`), cumulative since the engine started.
#[derive(Debug, Default)]
pub struct TlsStats {
    /// Downstream mTLS handshakes completed (a verified client certificate).
    pub handshakes: AtomicU64,
    /// Downstream handshakes that failed (unknown CA, expired, no client certificate, ...).
    pub handshake_failures: AtomicU64,
    /// Plaintext connections a STRICT listener closed.
    pub plaintext_rejected: AtomicU64,
    /// Upstream servers whose SPIFFE ID was not one the backend allows.
    pub identity_mismatch: AtomicU64,
    /// Upstream mTLS handshakes completed.
    pub upstream_handshakes: AtomicU64,
    /// Upstream handshakes that failed for another reason than the identity.
    pub upstream_handshake_failures: AtomicU64,
}

/// `TlsStats` as rendered in the stats JSON.
#[derive(Debug, Serialize)]
pub struct TlsStatsDoc {
    handshakes: u64,
    handshake_failures: u64,
    plaintext_rejected: u64,
    identity_mismatch: u64,
    upstream_handshakes: u64,
    upstream_handshake_failures: u64,
}

impl TlsStats {
    pub fn doc(&self) -> TlsStatsDoc {
        TlsStatsDoc {
            handshakes: self.handshakes.load(Relaxed),
            handshake_failures: self.handshake_failures.load(Relaxed),
            plaintext_rejected: self.plaintext_rejected.load(Relaxed),
            identity_mismatch: self.identity_mismatch.load(Relaxed),
            upstream_handshakes: self.upstream_handshakes.load(Relaxed),
            upstream_handshake_failures: self.upstream_handshake_failures.load(Relaxed),
        }
    }
}

/// Adds one to a counter.
pub(crate) fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// The verified caller of a downstream connection (an mTLS client certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The client leaf's SPIFFE URI SAN, e.g. `spiffe://td/ns/default/sa/web`.
    pub spiffe_id: Arc<str>,
    /// SHA-256 of the client leaf's DER, lower-case hex (`x-forwarded-client-cert` `Hash=`).
    pub cert_sha256_hex: Arc<str>,
}

impl Peer {
    /// The namespace segment of the SPIFFE ID (`/ns/<ns>/`), if present.
    pub fn namespace(&self) -> Option<&str> {
        let rest = self.spiffe_id.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/').skip(1);
        while let Some(key) = parts.next() {
            let value = parts.next()?;
            if key == "ns" {
                return Some(value);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod peer_tests {
    use super::Peer;

    #[test]
    fn namespace_from_spiffe_id() {
        let p = |id: &str| Peer {
            spiffe_id: id.into(),
            cert_sha256_hex: "".into(),
        };
        assert_eq!(p("spiffe://td/ns/default/sa/web").namespace(), Some("default"));
        assert_eq!(p("spiffe://td/sa/web/ns/prod").namespace(), Some("prod"));
        assert_eq!(p("spiffe://td/workload").namespace(), None);
        assert_eq!(p("https://td/ns/x/sa/y").namespace(), None);
    }
}
