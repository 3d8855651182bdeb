//! TLS to PostgreSQL, decided by the store URL as libpq decides it:
//! `sslmode` (`disable`, `allow`, `prefer` (the default), `require`,
//! `verify-ca`, `verify-full`) and `sslrootcert` (a PEM file of trusted
//! certificates, or `system` for the public web roots).
//!
//! - `disable`: plain TCP.
//! - `allow` / `prefer`: TLS when the server offers it, plain otherwise;
//!   the certificate is not checked (encryption only, as libpq does).
//! - `require`: TLS or no connection; the certificate is checked against
//!   `sslrootcert` when one is given (libpq's rule), not otherwise.
//! - `verify-ca`: TLS; the certificate chain must lead to `sslrootcert`
//!   (default: the public web roots); the host name is not checked.
//! - `verify-full`: as `verify-ca`, and the certificate must name the host.
//!
//! rustls (with ring, already used for outbound HTTP) does the TLS through
//! `tokio-postgres-rustls`; both parameters are taken out of the URL
//! before the rest goes to `postgres::Config`, which knows neither
//! `verify-*` nor `sslrootcert`.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use postgres::config::SslMode;
use postgres::{Client, NoTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Nothing (encryption only).
    Nothing,
    /// The chain, not the name.
    Chain,
    /// The chain and the host name.
    Full,
}

/// Where a store connects and how: the parsed configuration and the TLS
/// connector its `sslmode` asks for.
#[derive(Clone)]
pub(super) struct Target {
    /// Everything but the TLS parameters.
    pub config: postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("hosts", &self.config.get_hosts())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Parse `url` (a `postgres://` URL or a libpq `key=value` string).
    pub fn parse(url: &str) -> Result<Target, StoreError> {
        let (rest, mode, root) = split_tls_params(url)?;
        let mut config = postgres::Config::from_str(&rest)
            .map_err(|e| StoreError::Config(format!("bad PostgreSQL URL: {e}")))?;
        let (ssl, check) = match mode.as_deref().unwrap_or("prefer") {
            "disable" => (SslMode::Disable, None),
            "allow" | "prefer" => (SslMode::Prefer, Some(Check::Nothing)),
            "require" if root.is_some() => (SslMode::Require, Some(Check::Chain)),
            "require" => (SslMode::Require, Some(Check::Nothing)),
            "verify-ca" => (SslMode::Require, Some(Check::Chain)),
            "verify-full" => (SslMode::Require, Some(Check::Full)),
            other => {
                return Err(StoreError::Config(format!(
                    "unknown sslmode {other:?} (disable, allow, prefer, require, verify-ca, verify-full)"
                )));
            }
        };
        config.ssl_mode(ssl);
        let tls = match check {
            None => None,
            Some(check) => Some(MakeRustlsConnect::new(client_config(check, root.as_ref())?)),
        };
        Ok(Target { config, tls })
    }

    /// A new connection (blocking).
    pub fn connect(&self) -> Result<Client, postgres::Error> {
        match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        }
    }
}

/// `url` without `sslmode` and `sslrootcert`, and their values.
fn split_tls_params(url: &str) -> Result<(String, Option<String>, Option<String>), StoreError> {
    let (mut mode, mut root) = (None, None);
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // Only the query is rewritten; the rest goes to postgres::Config as
        // given (which also reports what is wrong with it).
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), None, None));
        };
        let mut kept = url::form_urlencoded::Serializer::new(String::new());
        let mut any = false;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "sslmode" => mode = Some(v.into_owned()),
                "sslrootcert" => root = Some(v.into_owned()),
                _ => {
                    kept.append_pair(&k, &v);
                    any = true;
                }
            }
        }
        let rest = if any {
            format!("{base}?{}", kept.finish())
        } else {
            base.to_string()
        };
        return Ok((rest, mode, root));
    }
    // key=value form (values without spaces).
    let kept: Vec<&str> = url
        .split_whitespace()
        .filter(|kv| match kv.split_once('=') {
            Some(("sslmode", v)) => {
                mode = Some(v.to_string());
                false
            }
            Some(("sslrootcert", v)) => {
                root = Some(v.to_string());
                false
            }
            _ => true,
        })
        .collect();
    Ok((kept.join(" "), mode, root))
}

/// The rustls client configuration for `check`, trusting `root` (a PEM
/// file, or `system`; default the public web roots).
fn client_config(check: Check, root: Option<&String>) -> Result<rustls::ClientConfig, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("TLS to PostgreSQL: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Nothing => Arc::new(EncryptOnly(provider)),
        Check::Chain | Check::Full => {
            let roots = Arc::new(roots(root)?);
            let webpki =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| StoreError::Config(format!("TLS to PostgreSQL: {e}")))?;
            if check == Check::Full {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The trusted roots: the PEM file `root`, or the public web roots.
fn roots(root: Option<&String>) -> Result<RootCertStore, StoreError> {
    let mut store = RootCertStore::empty();
    match root.map(String::as_str) {
        None | Some("system") => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let path = PathBuf::from(path);
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| {
                    StoreError::Config(format!("reading sslrootcert {}: {e}", path.display()))
                })?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(StoreError::Config(format!(
                    "sslrootcert {} holds no usable certificate",
                    path.display()
                )));
            }
        }
    }
    Ok(store)
}

/// `allow`, `prefer` and `require` without a root: any certificate, but
/// the handshake's signatures are still checked.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
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

/// `verify-ca`: the chain is checked, a name mismatch is accepted.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_urls() {
        let (rest, mode, root) = split_tls_params(
            "postgres://u:p@db.example:5433/pincer?sslmode=verify-full&application_name=x&sslrootcert=%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p@db.example:5433/pincer?application_name=x"
        );
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        let (rest, mode, root) =
            split_tls_params("host=db user=u sslmode=require dbname=p").unwrap();
        assert_eq!(rest, "host=db user=u dbname=p");
        assert_eq!(mode.as_deref(), Some("require"));
        assert_eq!(root, None);
        let (rest, mode, _) = split_tls_params("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(rest, "postgres://u@h/db");
        assert_eq!(mode.as_deref(), Some("disable"));
    }

    #[test]
    fn modes_map_to_libpq_behaviour() {
        let t = |url: &str| Target::parse(url);
        assert!(
            t("postgres://u@h/db?sslmode=disable")
                .unwrap()
                .tls
                .is_none()
        );
        assert!(
            t("postgres://u@h/db").unwrap().tls.is_some(),
            "prefer by default"
        );
        assert!(
            t("postgres://u@h/db?sslmode=verify-full")
                .unwrap()
                .tls
                .is_some()
        );
        let e = t("postgres://u@h/db?sslmode=sometimes")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown sslmode"), "{e}");
        let e = t("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent.pem")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslrootcert"), "{e}");
    }
}
