//! Test certificates: a CA made with rcgen and a server certificate it signed for 127.0.0.1
//! and localhost, as a rustls server configuration (for a TLS stand-in) and as PEM (for a
//! switchyard listener's certificate file, and for `discovery.ca_file`).

use std::sync::Arc;

pub struct TestCa {
    /// The CA's certificate: what a client trusts.
    pub pem: String,
    /// The server certificate, the CA's after it, and the server's private key: one file as
    /// switchyard's certificate files hold them.
    pub server_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

/// A CA named `name`, and a server certificate it signed for 127.0.0.1 and localhost.
pub fn test_ca(name: &str) -> TestCa {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let ca =
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), ca.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    TestCa {
        pem: ca.pem(),
        server_pem: format!("{}{}{}", leaf.pem(), ca.pem(), key.serialize_pem()),
        server: Arc::new(server),
    }
}
