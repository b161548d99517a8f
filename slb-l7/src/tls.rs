//! TLS termination (rustls, ring provider): certificates chosen by SNI, ALPN for h2, modern
//! defaults (TLS 1.2 and 1.3 with rustls's cipher suites, session tickets).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Reads a PEM certificate chain.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// Reads a PEM private key.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A certificate with the names it serves.
#[derive(Clone, Debug)]
pub struct ServerCert {
    /// The key and chain.
    pub key: Arc<CertifiedKey>,
    /// Names (lower case; `*.example.com` wildcards allowed) to serve it for.
    pub names: Vec<String>,
}

impl ServerCert {
    /// From DER chain and key; served for the DNS names of the leaf certificate and `names`.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        names: Vec<String>,
    ) -> Result<ServerCert, String> {
        let signer =
            rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| e.to_string())?;
        let mut names: Vec<String> = names.into_iter().map(|n| n.to_ascii_lowercase()).collect();
        if let Some(leaf) = chain.first() {
            let ee =
                webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("certificate: {e}"))?;
            for n in ee.valid_dns_names() {
                let n = n.to_ascii_lowercase();
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        Ok(ServerCert { key: Arc::new(CertifiedKey::new(chain, signer)), names })
    }

    /// From PEM files; served for the certificate's DNS names and `extra`.
    pub fn from_pem_files(cert: &Path, key: &Path, extra: &[String]) -> Result<ServerCert, String> {
        ServerCert::from_der(load_certs(cert)?, load_key(key)?, extra.to_vec())
    }
}

/// Picks the certificate by SNI: exact name, then wildcard, then the default (first) one.
#[derive(Debug)]
pub(crate) struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    pub(crate) fn new(certs: &[ServerCert]) -> Self {
        let mut r = SniResolver { exact: HashMap::new(), wildcard: HashMap::new(), default: None };
        for c in certs {
            r.default.get_or_insert_with(|| c.key.clone());
            for n in &c.names {
                match n.strip_prefix("*.") {
                    Some(suffix) => {
                        r.wildcard.entry(suffix.to_owned()).or_insert_with(|| c.key.clone())
                    }
                    None => r.exact.entry(n.clone()).or_insert_with(|| c.key.clone()),
                };
            }
        }
        r
    }

    fn lookup(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni {
            let name = name.to_ascii_lowercase();
            if let Some(k) = self.exact.get(&name) {
                return Some(k.clone());
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(k) = self.wildcard.get(parent) {
                    return Some(k.clone());
                }
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(hello.server_name())
    }
}

/// A server configuration serving `certs` by SNI, offering h2 when `http2`.
pub(crate) fn server_config(
    certs: &[ServerCert],
    http2: bool,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver::new(certs)));
    cfg.alpn_protocols =
        if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    cfg.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| e.to_string())?;
    Ok(Arc::new(cfg))
}

/// Accepts any upstream certificate (`verify = false`): encryption without authentication.
#[derive(Debug)]
pub(crate) struct NoVerify(pub(crate) Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_served_for_their_own_names_and_wildcards() {
        let mk = |names: &[&str], extra: Vec<String>| {
            let ck = rcgen::generate_simple_self_signed(
                names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap();
            let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
            ServerCert::from_der(vec![ck.cert.der().clone()], key, extra).unwrap()
        };
        let a = mk(&["a.test"], vec![]);
        let b = mk(&["x.b.test", "Y.b.test"], vec!["*.c.test".into()]);
        assert_eq!(b.names, ["*.c.test", "x.b.test", "y.b.test"]);
        let r = SniResolver::new(&[a.clone(), b.clone()]);
        let is = |got: Option<Arc<CertifiedKey>>, want: &ServerCert| {
            Arc::ptr_eq(&got.unwrap(), &want.key)
        };
        assert!(is(r.lookup(Some("x.b.test")), &b));
        assert!(is(r.lookup(Some("Y.B.TEST")), &b));
        assert!(is(r.lookup(Some("q.c.test")), &b));
        assert!(is(r.lookup(Some("c.test")), &a), "a wildcard needs a label; else the default");
        assert!(is(r.lookup(None), &a));
    }
}
