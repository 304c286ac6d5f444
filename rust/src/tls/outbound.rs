//! The client side towards a backend with `tls`: present the workload certificate, verify the
//! server's chain against the trust bundle (no DNS-name check: workload certificates carry a
//! URI SAN only), then require its SPIFFE ID to be one the backend allows.

use std::io;
use std::sync::Arc;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, ResolvesClientCert, Resumption};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, OtherError, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::identity::{spiffe_id, IdentityStore};
use super::{count, Stream, TlsStats};

/// `backends[].tls` (validated).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// SPIFFE IDs the server may present.
    pub identities: Vec<String>,
    /// SNI; `None`: the endpoint's host.
    pub server_name: Option<String>,
}

/// The server presented a valid certificate for another workload.
#[derive(Debug, Clone, thiserror::Error)]
#[error("upstream identity mismatch: expected {}, got {got}", expected.join(", "))]
pub struct IdentityMismatch {
    pub expected: Vec<String>,
    pub got: String,
}

impl IdentityMismatch {
    /// The mismatch a connect error carries, if that is why it failed.
    pub fn of(err: &io::Error) -> Option<&IdentityMismatch> {
        err.get_ref()?.downcast_ref::<IdentityMismatch>()
    }
}

/// A copy of a connect error for another waiter on the same connection attempt; an identity
/// mismatch stays recognizable.
pub fn clone_connect_error(err: &io::Error) -> io::Error {
    match IdentityMismatch::of(err) {
        Some(m) => io::Error::new(err.kind(), m.clone()),
        None => io::Error::new(err.kind(), err.to_string()),
    }
}

/// Connects one endpoint of a TLS backend. Built once per endpoint; what it presents and
/// trusts is read from the identity store per handshake.
pub struct TlsConnect {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    stats: Arc<TlsStats>,
}

/// ALPN for a backend: `h2` for HTTP/2 backends, else `http/1.1`.
pub fn alpn(http2: bool) -> Vec<u8> {
    if http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }
}

impl TlsConnect {
    /// `addr` is the endpoint's `host:port`; its host is the SNI unless `tls.server_name` says.
    pub fn new(
        tls: &UpstreamTls,
        addr: &str,
        http2: bool,
        store: Arc<IdentityStore>,
        stats: Arc<TlsStats>,
    ) -> Result<Self, String> {
        let server_name = server_name(tls, addr)?;
        let verifier = Arc::new(SpiffeServerVerifier {
            store: store.clone(),
            identities: tls.identities.clone(),
        });
        let mut config = ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(CurrentClientCert { store }));
        config.alpn_protocols = vec![alpn(http2)];
        // Every connection verifies the server against the current bundle and identities.
        config.resumption = Resumption::disabled();
        Ok(TlsConnect {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            stats,
        })
    }

    /// The TLS handshake on a connected socket. A wrong server identity fails with an
    /// `IdentityMismatch` inside the `io::Error` (see `IdentityMismatch::of`); both kinds of
    /// failure are counted.
    pub async fn handshake(&self, tcp: TcpStream) -> io::Result<Stream> {
        match self.connector.connect(self.server_name.clone(), tcp).await {
            Ok(tls) => {
                count(&self.stats.upstream_handshakes);
                Ok(Stream::Client(Box::new(tls)))
            }
            Err(e) => {
                if let Some(m) = mismatch_in(&e) {
                    count(&self.stats.identity_mismatch);
                    return Err(io::Error::new(io::ErrorKind::PermissionDenied, m));
                }
                count(&self.stats.upstream_handshake_failures);
                Err(io::Error::new(e.kind(), format!("TLS handshake: {e}")))
            }
        }
    }
}

/// The SNI for endpoint `addr` (`host:port`): `tls.server_name`, else the endpoint's host.
pub fn server_name(tls: &UpstreamTls, addr: &str) -> Result<ServerName<'static>, String> {
    let name = tls.server_name.as_deref().unwrap_or_else(|| host_of(addr));
    ServerName::try_from(name.to_owned()).map_err(|_| format!("{name:?} is not a DNS name or IP address"))
}

/// The `IdentityMismatch` our verifier failed a handshake with.
fn mismatch_in(err: &io::Error) -> Option<IdentityMismatch> {
    match err.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<IdentityMismatch>().cloned()
        }
        _ => None,
    }
}

/// The host of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// Presents the current workload certificate.
#[derive(Debug)]
struct CurrentClientCert {
    store: Arc<IdentityStore>,
}

impl ResolvesClientCert for CurrentClientCert {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.store.current().map(|id| id.certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Chain to the current bundle and validity (webpki), then one of `identities`.
#[derive(Debug)]
struct SpiffeServerVerifier {
    store: Arc<IdentityStore>,
    identities: Vec<String>,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = self
            .store
            .current()
            .ok_or_else(|| rustls::Error::General("no workload identity".into()))?;
        let cert = ParsedCertificate::try_from(end_entity)?;
        let algs = super::provider().signature_verification_algorithms;
        verify_server_cert_signed_by_trust_anchor(&cert, &id.roots, intermediates, now, algs.all)?;
        let got = spiffe_id(end_entity).map_err(|m| rustls::Error::General(format!("server certificate {m}")))?;
        if !self.identities.contains(&got) {
            let mismatch = IdentityMismatch {
                expected: self.identities.clone(),
                got,
            };
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
                Arc::new(mismatch),
            ))));
        }
        Ok(ServerCertVerified::assertion())
    }

    super::provider_signatures!();
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn sni_defaults_to_the_endpoint_host() {
        assert_eq!(host_of("reviews.default:9080"), "reviews.default");
        assert_eq!(host_of("127.0.0.1:15006"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8443"), "::1");
    }
}
