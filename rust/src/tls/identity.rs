//! The workload identity: certificate chain, private key and trust bundle, swapped whole by
//! `Engine.set_identity` and read by every handshake (server and client certificate resolvers,
//! client and server verifiers).

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

/// Why `set_identity` refused its material. Nothing changed.
#[derive(Debug, thiserror::Error)]
#[error("invalid identity: {0}")]
pub struct IdentityError(pub String);

fn err(message: impl Into<String>) -> IdentityError {
    IdentityError(message.into())
}

/// One generation of the workload's material.
pub struct Identity {
    /// The leaf's SPIFFE URI SAN.
    pub spiffe_id: Arc<str>,
    /// The leaf's notAfter, unix seconds.
    pub not_after: i64,
    /// 1 for the first `set_identity`, then 2, ...
    pub generation: u64,
    /// Chain and signing key, presented as server and as client.
    pub(crate) certified: Arc<CertifiedKey>,
    /// The trust bundle.
    pub(crate) roots: Arc<RootCertStore>,
    /// Client certificates: chain to `roots`, within validity (webpki).
    pub(crate) client_verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("spiffe_id", &self.spiffe_id)
            .field("not_after", &self.not_after)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// The current identity, if one was set. Cloning the `Arc` is what a handshake costs.
#[derive(Debug, Default)]
pub struct IdentityStore {
    current: ArcSwapOption<Identity>,
    /// The last generation handed out; the lock also serializes `set`.
    generation: Mutex<u64>,
}

impl IdentityStore {
    pub fn current(&self) -> Option<Arc<Identity>> {
        self.current.load_full()
    }

    /// Parses and checks the material, then swaps it in; returns its generation.
    pub fn set(&self, cert_chain_pem: &str, key_pem: &str, trust_bundle_pem: &str) -> Result<u64, IdentityError> {
        let chain = certs(cert_chain_pem, "cert_chain_pem")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| err(format!("key_pem: no private key (PKCS#8, SEC1 or PKCS#1 PEM): {e}")))?;
        let leaf = chain[0].clone();
        let (spiffe_id, not_after) = leaf_facts(&leaf).map_err(|m| err(format!("cert_chain_pem: leaf {m}")))?;
        let provider = super::provider();
        let certified = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| err(format!("key_pem: does not fit the leaf certificate: {e}")))?;
        let mut roots = RootCertStore::empty();
        for (i, root) in certs(trust_bundle_pem, "trust_bundle_pem")?.into_iter().enumerate() {
            roots
                .add(root)
                .map_err(|e| err(format!("trust_bundle_pem: certificate {i} is not a usable root: {e}")))?;
        }
        let roots = Arc::new(roots);
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
            .build()
            .map_err(|e| err(format!("trust_bundle_pem: {e}")))?;
        let mut generation = self.generation.lock();
        *generation += 1;
        self.current.store(Some(Arc::new(Identity {
            spiffe_id: spiffe_id.into(),
            not_after,
            generation: *generation,
            certified: Arc::new(certified),
            roots,
            client_verifier,
        })));
        Ok(*generation)
    }
}

/// Every certificate of a PEM text; at least one.
fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("{what}: unparseable PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err(format!("{what}: no CERTIFICATE in the PEM text")));
    }
    Ok(certs)
}

/// The certificate's one SPIFFE URI SAN and its notAfter (unix seconds).
pub(crate) fn leaf_facts(der: &CertificateDer<'_>) -> Result<(String, i64), String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("is not an X.509 certificate: {e}"))?;
    let not_after = cert.validity().not_after.timestamp();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("has an unreadable subjectAltName: {e}"))?;
    let mut ids = san
        .iter()
        .flat_map(|san| &san.value.general_names)
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
            _ => None,
        });
    match (ids.next(), ids.next()) {
        (Some(id), None) => Ok((id.to_owned(), not_after)),
        (None, _) => Err("has no spiffe:// URI SAN".into()),
        (Some(_), Some(_)) => Err("has more than one spiffe:// URI SAN".into()),
    }
}

/// The SPIFFE ID of a peer's leaf certificate.
pub(crate) fn spiffe_id(der: &CertificateDer<'_>) -> Result<String, String> {
    leaf_facts(der).map(|(id, _)| id)
}
