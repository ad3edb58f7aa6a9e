//! TLS to PostgreSQL as libpq reads `sslmode` and `sslrootcert` from the URL (tokio-postgres
//! knows neither verify-ca, verify-full nor sslrootcert, so they are taken out of the URL here).
//!
//! - `disable`: plain TCP. `allow`, `prefer` (the default): TLS when the server offers it,
//!   certificate not checked. `require`: TLS or nothing, certificate not checked unless a root
//!   certificate is there (`sslrootcert`, or `~/.postgresql/root.crt`), then as `verify-ca`.
//! - `verify-ca`: the chain must lead to a root in `sslrootcert` (a PEM file, or `system` for
//!   the system's roots; default `~/.postgresql/root.crt`). `verify-full`: that, and the
//!   certificate must name the host.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    Nothing,
    Chain,
    ChainAndHost,
}

/// What the URL asks of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// What tokio-postgres is told (it only knows disable, prefer and require).
    pub mode: SslMode,
    pub verify: Verify,
    pub root_cert: Option<String>,
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL without `sslmode`/`sslrootcert` (sslmode given back as tokio-postgres reads it),
/// and the TLS settings they asked for.
pub fn split_url(url: &str) -> Result<(String, TlsSettings), String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept: Vec<&str> = Vec::new();
    let mut sslmode = "prefer".to_owned();
    let mut root_cert = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => sslmode = percent_decode(value),
            "sslrootcert" => root_cert = Some(percent_decode(value)),
            _ => kept.push(pair),
        }
    }
    let default_root_exists = || default_root().is_some_and(|p| p.exists());
    let (mode, verify) = match sslmode.as_str() {
        "disable" => (SslMode::Disable, Verify::Nothing),
        "allow" | "prefer" => (SslMode::Prefer, Verify::Nothing),
        "require" if root_cert.is_some() || default_root_exists() => {
            (SslMode::Require, Verify::Chain)
        }
        "require" => (SslMode::Require, Verify::Nothing),
        "verify-ca" => (SslMode::Require, Verify::Chain),
        "verify-full" => (SslMode::Require, Verify::ChainAndHost),
        other => {
            return Err(format!(
                "unknown sslmode {other:?}: use disable, allow, prefer, require, verify-ca or \
                 verify-full"
            ))
        }
    };
    let tokio_mode = match mode {
        SslMode::Disable => "disable",
        SslMode::Require => "require",
        _ => "prefer",
    };
    kept.push(match tokio_mode {
        "disable" => "sslmode=disable",
        "require" => "sslmode=require",
        _ => "sslmode=prefer",
    });
    let url = format!("{base}?{}", kept.join("&"));
    Ok((
        url,
        TlsSettings {
            mode,
            verify,
            root_cert,
        },
    ))
}

fn default_root() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".postgresql/root.crt"))
}

// ring rather than aws-lc-rs (rustls's default): no cmake and C toolchain for aws-lc at
// install. ring's provider is deprecated only for lacking post-quantum key exchange.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(root_cert: Option<&str>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    if root_cert == Some("system") {
        let found = rustls_native_certs::load_native_certs();
        store.add_parsable_certificates(found.certs);
        if store.is_empty() {
            return Err("sslrootcert=system: no system root certificates found".into());
        }
        return Ok(store);
    }
    let path = match root_cert {
        Some(p) => PathBuf::from(p),
        None => default_root().ok_or("sslrootcert is not set and HOME is unknown")?,
    };
    let pem = std::fs::read(&path)
        .map_err(|e| format!("cannot read the root certificate {}: {e}", path.display()))?;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
        store
            .add(cert)
            .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
    }
    if store.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(store)
}

/// Accepts any certificate (libpq's prefer and require without a root certificate), still
/// checking that the server holds its key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        verify_tls12_signature(
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The chain is checked, the name is not (verify-ca).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
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

/// The connector for `settings` (None for sslmode=disable).
pub fn connector(settings: &TlsSettings) -> Result<Option<MakeRustlsConnect>, String> {
    if settings.mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = match settings.verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        Verify::ChainAndHost => builder
            .with_root_certificates(roots(settings.root_cert.as_deref())?)
            .with_no_client_auth(),
        Verify::Chain => {
            let roots = Arc::new(roots(settings.root_cert.as_deref())?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("TLS setup: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                .with_no_client_auth()
        }
    };
    Ok(Some(MakeRustlsConnect::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_read_and_taken_out() {
        let (url, tls) = split_url(
            "postgresql://u@h/db?options=-c%20x&sslmode=verify-full&sslrootcert=%2Fca.pem",
        )
        .unwrap();
        assert_eq!(url, "postgresql://u@h/db?options=-c%20x&sslmode=require");
        assert_eq!(tls.verify, Verify::ChainAndHost);
        assert_eq!(tls.root_cert.as_deref(), Some("/ca.pem"));
        let (url, tls) = split_url("postgresql://u@h/db").unwrap();
        assert_eq!(url, "postgresql://u@h/db?sslmode=prefer");
        assert_eq!((tls.mode, tls.verify), (SslMode::Prefer, Verify::Nothing));
        let (_, tls) = split_url("postgresql://u@h/db?sslmode=disable").unwrap();
        assert_eq!(tls.mode, SslMode::Disable);
        assert!(split_url("postgresql://u@h/db?sslmode=sometimes").is_err());
    }

    #[test]
    fn a_missing_root_certificate_is_an_error_that_names_it() {
        let tls = TlsSettings {
            mode: SslMode::Require,
            verify: Verify::ChainAndHost,
            root_cert: Some("/nonexistent/ca.pem".into()),
        };
        let err = connector(&tls).err().unwrap();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
