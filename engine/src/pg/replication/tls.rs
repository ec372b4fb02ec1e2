//! TLS for PostgreSQL connections with rustls (ring provider), following
//! libpq's `sslmode`:
//!
//! - `prefer`, `require` (without a root certificate): encryption only; any
//!   certificate is accepted, but the handshake signatures are still checked
//!   against the certificate presented.
//! - `verify-ca` (and `require` with `sslrootcert`): the chain must lead to
//!   a root in `sslrootcert`; the host name is not checked.
//! - `verify-full`: as `verify-ca`, and the certificate must name the host
//!   (subjectAltName, as webpki checks it; a bare common name is not enough).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::conninfo::{ConnInfo, SslMode};
use crate::{Error, Result};

/// The rustls client configuration for `ci`'s `sslmode`.
pub(crate) fn client_config(ci: &ConnInfo) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match (ci.sslmode, &ci.sslrootcert) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => {
            Arc::new(AcceptAnyCertificate(provider.clone()))
        }
        (SslMode::Require | SslMode::VerifyCa, _) => {
            Arc::new(ChainOnly(webpki_verifier(&root_cert_path(ci)?, provider.clone())?))
        }
        (SslMode::VerifyFull, _) => webpki_verifier(&root_cert_path(ci)?, provider.clone())?,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name sent as SNI and checked by `verify-full`: the host, or
/// `localhost` where the host is no valid DNS name or IP address.
pub(crate) fn server_name(ci: &ConnInfo) -> ServerName<'static> {
    ServerName::try_from(ci.host.clone()).unwrap_or_else(|_| ServerName::try_from("localhost").expect("valid name"))
}

/// `sslrootcert`, or libpq's default `~/.postgresql/root.crt`.
fn root_cert_path(ci: &ConnInfo) -> Result<PathBuf> {
    if let Some(p) = &ci.sslrootcert {
        return Ok(p.clone());
    }
    let home = std::env::var_os("HOME").ok_or_else(|| {
        Error::Config("verifying the server's certificate needs a root certificate: set sslrootcert".into())
    })?;
    Ok(Path::new(&home).join(".postgresql/root.crt"))
}

fn webpki_verifier(path: &Path, provider: Arc<CryptoProvider>) -> Result<Arc<WebPkiServerVerifier>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::Config(format!("root certificate file {}: {e}", path.display())))?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        let cert = cert.map_err(|e| Error::Config(format!("root certificate file {}: {e}", path.display())))?;
        roots.add(cert).map_err(|e| {
            Error::Config(format!("root certificate file {}: unusable certificate: {e}", path.display()))
        })?;
    }
    if roots.is_empty() {
        return Err(Error::Config(format!("root certificate file {} holds no certificate", path.display())));
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| Error::Config(format!("root certificate file {}: {e}", path.display())))
}

/// `sslmode=require`: encryption without authentication of the server.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: webpki's checks, except that the certificate need
/// not name the host.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the name only after the chain has been verified, so
        // a name error means everything else passed.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
