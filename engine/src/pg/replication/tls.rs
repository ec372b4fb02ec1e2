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

/// The `tls-server-end-point` channel binding data (RFC 5929) for the
/// server certificate `cert`: its hash with the hash function of its
/// signature algorithm, SHA-256 standing in for MD5 and SHA-1. `None` for
/// algorithms without a single hash (RSA-PSS, EdDSA) or a certificate we
/// cannot read; SCRAM then runs without channel binding.
pub(crate) fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm
    // SEQUENCE { algorithm OID, ... }, signatureValue BIT STRING }
    let (cert_body, _) = der_element(cert, 0x30)?;
    let (_, rest) = der_element(cert_body, 0x30)?;
    let (algorithm, _) = der_element(rest, 0x30)?;
    let (oid, _) = der_element(algorithm, 0x06)?;
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    enum H {
        Sha256,
        Sha384,
        Sha512,
    }
    let hash = match oid {
        // md5WithRSA, sha1WithRSA, sha256WithRSA; ecdsa-with-SHA1, -SHA256
        [r @ .., 0x04 | 0x05 | 0x0b] if r == RSA => H::Sha256,
        [r @ .., 0x01] if r == ECDSA => H::Sha256,
        [r @ .., 0x03, 0x02] if r == ECDSA => H::Sha256,
        [r @ .., 0x0c] if r == RSA => H::Sha384,
        [r @ .., 0x03, 0x03] if r == ECDSA => H::Sha384,
        [r @ .., 0x0d] if r == RSA => H::Sha512,
        [r @ .., 0x03, 0x04] if r == ECDSA => H::Sha512,
        _ => return None,
    };
    Some(match hash {
        H::Sha256 => sha2::Sha256::digest(cert).to_vec(),
        H::Sha384 => sha2::Sha384::digest(cert).to_vec(),
        H::Sha512 => sha2::Sha512::digest(cert).to_vec(),
    })
}

/// Splits one DER element with tag `tag` off the front of `der`: its
/// contents and what follows it.
fn der_element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = der.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DER element with a long-form length where needed.
    fn element(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut e = vec![tag];
        if body.len() < 0x80 {
            e.push(body.len() as u8);
        } else {
            e.push(0x82);
            e.extend_from_slice(&(body.len() as u16).to_be_bytes());
        }
        e.extend_from_slice(body);
        e
    }

    fn cert_with_algorithm(oid: &[u8]) -> Vec<u8> {
        let tbs = element(0x30, &[0u8; 300]);
        let alg = element(0x30, &[element(0x06, oid), vec![0x05, 0x00]].concat());
        element(0x30, &[tbs, alg, element(0x03, &[0, 1, 2])].concat())
    }

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        use sha2::Digest;
        let rsa_sha256 = cert_with_algorithm(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]);
        assert_eq!(tls_server_end_point(&rsa_sha256).unwrap(), sha2::Sha256::digest(&rsa_sha256).to_vec());
        let rsa_sha1 = cert_with_algorithm(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05]);
        assert_eq!(tls_server_end_point(&rsa_sha1).unwrap().len(), 32);
        let ecdsa_sha384 = cert_with_algorithm(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]);
        assert_eq!(tls_server_end_point(&ecdsa_sha384).unwrap(), sha2::Sha384::digest(&ecdsa_sha384).to_vec());
        let rsa_sha512 = cert_with_algorithm(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d]);
        assert_eq!(tls_server_end_point(&rsa_sha512).unwrap().len(), 64);
        let ed25519 = cert_with_algorithm(&[0x2b, 0x65, 0x70]);
        assert_eq!(tls_server_end_point(&ed25519), None);
        for cut in 0..rsa_sha256.len() {
            let _ = tls_server_end_point(&rsa_sha256[..cut]);
        }
    }
}
