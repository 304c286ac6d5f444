//! The server side: listener modes, the mTLS handshake with a required client certificate, and
//! the verified caller.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DistinguishedName, ServerConfig};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::identity::{spiffe_id, IdentityStore};
use super::{count, Peer, Stream, TlsStats};

/// First byte of a TLS record carrying a handshake message (a ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;

/// A client that connected must finish its handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a listener accepts (`listeners[].tls.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Plaintext only.
    #[default]
    Disable,
    /// mTLS or plaintext, told apart by the first byte.
    Permissive,
    /// mTLS only.
    Strict,
}

impl TlsMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "DISABLE" => Some(TlsMode::Disable),
            "PERMISSIVE" => Some(TlsMode::Permissive),
            "STRICT" => Some(TlsMode::Strict),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "DISABLE",
            TlsMode::Permissive => "PERMISSIVE",
            TlsMode::Strict => "STRICT",
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            1 => TlsMode::Permissive,
            2 => TlsMode::Strict,
            _ => TlsMode::Disable,
        }
    }
}

/// A downstream connection ready for HTTP: its stream and, after mTLS, the verified caller with
/// the `x-forwarded-client-cert` value its requests carry upstream.
pub struct Accepted {
    pub stream: Stream,
    pub peer: Option<(Arc<Peer>, HeaderValue)>,
}

/// The server half of mTLS, shared by every listener. One `ServerConfig` for the engine's life:
/// its resolver and verifier read the identity store per handshake.
pub struct Inbound {
    acceptor: TlsAcceptor,
    store: Arc<IdentityStore>,
    stats: Arc<TlsStats>,
}

impl Inbound {
    pub fn new(store: Arc<IdentityStore>, stats: Arc<TlsStats>) -> Self {
        let provider = super::provider();
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_client_cert_verifier(Arc::new(CurrentClientVerifier { store: store.clone() }))
            .with_cert_resolver(Arc::new(CurrentServerCert { store: store.clone() }));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // No resumption: every connection presents (and has verified) its certificate against
        // the current bundle, so a dropped root or an expired certificate is never carried on
        // through a session ticket.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Inbound {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            store,
            stats,
        }
    }

    /// Applies the listener's mode to a new connection; `None` when it is refused (counted) or
    /// went away before saying anything.
    pub async fn accept(&self, tcp: TcpStream, mode: TlsMode) -> Option<Accepted> {
        if mode == TlsMode::Disable {
            return Some(plain(tcp));
        }
        let mut first = [0u8; 1];
        let is_tls = match tcp.peek(&mut first).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => first[0] == TLS_HANDSHAKE,
        };
        if !is_tls {
            if mode == TlsMode::Strict {
                count(&self.stats.plaintext_rejected);
                return None;
            }
            return Some(plain(tcp));
        }
        let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await else {
            count(&self.stats.handshake_failures);
            return None;
        };
        // The verifier accepted the leaf only with a SPIFFE ID.
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|leaf| Peer::from_leaf(leaf).ok());
        let Some(peer) = peer else {
            count(&self.stats.handshake_failures);
            return None;
        };
        count(&self.stats.handshakes);
        let by = self.store.current().map(|id| id.spiffe_id.clone()).unwrap_or_default();
        let xfcc = peer.xfcc(&by);
        Some(Accepted {
            stream: Stream::Server(Box::new(tls)),
            peer: Some((Arc::new(peer), xfcc)),
        })
    }
}

fn plain(tcp: TcpStream) -> Accepted {
    Accepted {
        stream: Stream::Plain(tcp),
        peer: None,
    }
}

impl Peer {
    /// The caller a verified client leaf names.
    pub fn from_leaf(leaf: &CertificateDer<'_>) -> Result<Self, String> {
        let spiffe = spiffe_id(leaf)?;
        Ok(Peer {
            spiffe_id: spiffe.into(),
            cert_sha256_hex: sha256_hex(leaf).into(),
        })
    }

    /// Envoy's `x-forwarded-client-cert`: `By=<own id>;Hash=<leaf sha256>;URI=<caller id>`.
    pub fn xfcc(&self, by: &str) -> HeaderValue {
        let v = format!("By={by};Hash={};URI={}", self.cert_sha256_hex, self.spiffe_id);
        // SPIFFE IDs are URIs (visible ASCII); anything else would have failed to parse.
        HeaderValue::try_from(v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

pub(crate) fn sha256_hex(der: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Presents the current workload certificate.
#[derive(Debug)]
struct CurrentServerCert {
    store: Arc<IdentityStore>,
}

impl ResolvesServerCert for CurrentServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.store.current().map(|id| id.certified.clone())
    }
}

/// Requires a client certificate that webpki chains to the current bundle (validity included)
/// and that names exactly one SPIFFE ID.
#[derive(Debug)]
struct CurrentClientVerifier {
    store: Arc<IdentityStore>,
}

impl ClientCertVerifier for CurrentClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No CA names are hinted (they would have to outlive a bundle swap); clients send the
    /// certificate they have.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let id = self
            .store
            .current()
            .ok_or_else(|| rustls::Error::General("no workload identity".into()))?;
        let verified = id.client_verifier.verify_client_cert(end_entity, intermediates, now)?;
        spiffe_id(end_entity).map_err(|m| rustls::Error::General(format!("client certificate {m}")))?;
        Ok(verified)
    }

    super::provider_signatures!();
}
