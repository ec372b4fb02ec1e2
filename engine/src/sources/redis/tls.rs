//! TLS for the Redis replication client (`rediss://`): what the user
//! configures ([`TlsOptions`]) and the handshake it drives. rustls with the
//! ring provider, TLS 1.2 and 1.3; the server's certificate is verified
//! against a given CA file or the system's roots and the name it was
//! reached by (or an override), and a client certificate is presented when
//! the server asks for one (`tls-auth-clients yes`).
//!
//! The handshake is run to completion before the first command, so a
//! server the client does not trust never sees the password, and a
//! certificate problem is reported with rustls' reason and a hint instead
//! of as a broken reply.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::sync::protocol;
use crate::error::read_timed_out;
use crate::{Error, Result};

/// How to set up and verify a TLS connection.
///
/// Built with [`TlsOptions::new`] and the `with_*` methods, so that a
/// setting added later is not a breaking change:
/// ```
/// # use std::path::{Path, PathBuf};
/// # use cairn_engine::TlsOptions;
/// let tls = TlsOptions::new().with_ca_file(PathBuf::from("/etc/redis/ca.pem"));
/// assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/etc/redis/ca.pem")));
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct TlsOptions {
    /// PEM file of the CA certificates to trust; `None` trusts the system's
    /// roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` are honoured).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for servers with `tls-auth-clients`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must carry (also sent as SNI);
    /// `None` uses the host part of [`SyncOptions::addr`](super::sync::SyncOptions::addr).
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// No settings: the system's roots, no client certificate, the
    /// address's host name.
    pub fn new() -> TlsOptions {
        TlsOptions::default()
    }

    /// Sets (or, with `None`, clears) [`TlsOptions::ca_file`].
    pub fn with_ca_file(mut self, path: impl Into<Option<PathBuf>>) -> TlsOptions {
        self.ca_file = path.into();
        self
    }

    /// Sets (or clears) [`TlsOptions::cert_file`].
    pub fn with_cert_file(mut self, path: impl Into<Option<PathBuf>>) -> TlsOptions {
        self.cert_file = path.into();
        self
    }

    /// Sets (or clears) [`TlsOptions::key_file`].
    pub fn with_key_file(mut self, path: impl Into<Option<PathBuf>>) -> TlsOptions {
        self.key_file = path.into();
        self
    }

    /// Sets (or clears) [`TlsOptions::server_name`].
    pub fn with_server_name(mut self, name: impl Into<Option<String>>) -> TlsOptions {
        self.server_name = name.into();
        self
    }
}

fn pem_err(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("{}: reading {what}: {e}", path.display()))
}

/// The client configuration for `t`: trusted roots, optional client
/// certificate, ring as the crypto provider (named explicitly so that
/// another crate enabling a second provider cannot make rustls ambiguous).
fn tls_config(t: &TlsOptions) -> Result<Arc<rustls::ClientConfig>> {
    if t.cert_file.is_some() != t.key_file.is_some() {
        return Err(Error::Config("TLS: a client certificate needs both a certificate and a key file".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    match &t.ca_file {
        Some(f) => {
            for cert in CertificateDer::pem_file_iter(f).map_err(|e| pem_err(f, "CA certificates", e))? {
                let cert = cert.map_err(|e| pem_err(f, "CA certificates", e))?;
                roots.add(cert).map_err(|e| pem_err(f, "CA certificates", e))?;
            }
            if roots.is_empty() {
                return Err(pem_err(f, "CA certificates", "no CERTIFICATE section"));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "loading the system's CA certificates");
            }
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(Error::Config(
                    "TLS: no trusted CA certificates found on this system; name a CA file".into(),
                ));
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let config = match (&t.cert_file, &t.key_file) {
        (Some(c), Some(k)) => {
            let chain = CertificateDer::pem_file_iter(c)
                .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| pem_err(c, "the client certificate", e))?;
            if chain.is_empty() {
                return Err(pem_err(c, "the client certificate", "no CERTIFICATE section"));
            }
            let key = PrivateKeyDer::from_pem_file(k).map_err(|e| pem_err(k, "the client key", e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::Config(format!("TLS client certificate {}: {e}", c.display())))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The host part of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// Runs the TLS handshake to completion, so that a certificate the client
/// does not trust fails here, with rustls' reason, before any command.
pub(super) fn tls_handshake(
    mut tcp: TcpStream,
    addr: &str,
    timeout: Duration,
    t: &TlsOptions,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let name = t.server_name.as_deref().unwrap_or_else(|| host_of(addr));
    let server_name =
        ServerName::try_from(name.to_string()).map_err(|e| protocol(addr, format!("TLS server name {name:?}: {e}")))?;
    let mut tls =
        rustls::ClientConnection::new(tls_config(t)?, server_name).map_err(|e| protocol(addr, format!("TLS: {e}")))?;
    while tls.is_handshaking() {
        if let Err(e) = tls.complete_io(&mut tcp).map_err(|e| read_timed_out(e, timeout)) {
            let hint = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::InvalidCertificate(_)) if t.ca_file.is_some() => {
                    " (is the server's certificate signed by a CA in the CA file given, and for this name?)"
                }
                Some(rustls::Error::InvalidCertificate(_)) => {
                    " (checked against the system's CA certificates; a CA file can name others)"
                }
                _ => "",
            };
            return Err(protocol(addr, format!("TLS handshake failed: {e}{hint}")));
        }
    }
    Ok(rustls::StreamOwned::new(tls, tcp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("redis.example:6380"), "redis.example");
        assert_eq!(host_of("127.0.0.1:6379"), "127.0.0.1");
        assert_eq!(host_of("[::1]:6379"), "::1");
    }

    #[test]
    fn client_certificate_needs_both_files() {
        let t = TlsOptions::new().with_cert_file(PathBuf::from("c.pem"));
        let e = tls_config(&t).err().unwrap().to_string();
        assert!(e.contains("both a certificate and a key"), "{e}");
    }
}
