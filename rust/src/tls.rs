//! Workload identity and mTLS (docs/engine-snapshot.md "Security").

use std::sync::Arc;

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
mod tests {
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
