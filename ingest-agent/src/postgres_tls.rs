//! TLS to PostgreSQL with rustls, as libpq's `sslmode` asks: `prefer` (the default) and
//! `require` encrypt without checking the server's certificate, `verify-ca` checks that a
//! trusted authority signed it, `verify-full` also that it names the host. The authorities are
//! `sslrootcert` (a PEM file) or, without it, the system's.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`: [`TlsOptions::from_url`] takes
//! the libpq parameters it does not know out of the URL before it is parsed.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// How far the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Encryption only (`prefer`, `require`): libpq's behaviour without a root certificate.
    Nothing,
    /// A trusted authority signed it (`verify-ca`).
    Authority,
    /// And it names the host connected to (`verify-full`).
    Host,
}

/// The TLS parameters of a connection URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// How far the certificate is checked.
    pub verify: Verify,
    /// The trusted authorities (PEM), instead of the system's.
    pub root_cert: Option<PathBuf>,
}

impl TlsOptions {
    /// Splits `url` into what tokio-postgres parses and the TLS options: `sslmode=verify-ca`
    /// and `verify-full` become `require` with the check they ask for; `sslrootcert` is taken
    /// out. Keyword/value strings (`host=… sslmode=…`) are left as they are.
    pub fn from_url(url: &str) -> (String, TlsOptions) {
        let mut options = TlsOptions {
            verify: Verify::Nothing,
            root_cert: None,
        };
        let Ok(mut parsed) = url::Url::parse(url) else {
            return (url.to_string(), options);
        };
        let mut kept = Vec::new();
        for (key, value) in parsed.query_pairs() {
            match (key.as_ref(), value.as_ref()) {
                ("sslmode", "verify-ca") => {
                    options.verify = Verify::Authority;
                    kept.push((key.to_string(), String::from("require")));
                }
                ("sslmode", "verify-full") => {
                    options.verify = Verify::Host;
                    kept.push((key.to_string(), String::from("require")));
                }
                ("sslrootcert", path) => options.root_cert = Some(PathBuf::from(path)),
                _ => kept.push((key.to_string(), value.to_string())),
            }
        }
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
        (parsed.to_string(), options)
    }

    /// The rustls connector these options ask for.
    ///
    /// # Errors
    /// When the root certificate file cannot be read or holds no certificate, or the system's
    /// authorities cannot be loaded.
    pub fn connector(&self) -> Result<RustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?;
        let config = match self.verify {
            Verify::Nothing => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptionOnly(provider)))
                .with_no_client_auth(),
            Verify::Authority | Verify::Host => {
                let roots = Arc::new(self.roots()?);
                let webpki =
                    rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                        .build()
                        .map_err(|err| err.to_string())?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Checked {
                        webpki,
                        check_host: self.verify == Verify::Host,
                    }))
                    .with_no_client_auth()
            }
        };
        Ok(RustlsConnect(Arc::new(config)))
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                for cert in read_pem_certificates(path)? {
                    roots
                        .add(cert)
                        .map_err(|err| format!("sslrootcert {}: {err}", path.display()))?;
                }
            }
            None => {
                let loaded = rustls_native_certs::load_native_certs();
                if let Some(err) = loaded.errors.first() {
                    tracing::warn!(error = %err, "some of the system's certificate authorities cannot be read");
                }
                roots.add_parsable_certificates(loaded.certs);
            }
        }
        if roots.is_empty() {
            return Err(String::from(
                "no trusted certificate authority: give sslrootcert=<PEM file> in the connection URL",
            ));
        }
        Ok(roots)
    }
}

/// The certificates of a PEM file.
fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject as _;
    let unreadable = |err: &dyn std::fmt::Display| format!("sslrootcert {}: {err}", path.display());
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|err| unreadable(&err))?
        .collect::<Result<_, _>>()
        .map_err(|err| unreadable(&err))?;
    if certs.is_empty() {
        return Err(unreadable(&"no certificate in the file"));
    }
    Ok(certs)
}

/// Accepts any certificate (the handshake's signatures are still checked): libpq's `require`.
#[derive(Debug)]
struct EncryptionOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptionOnly {
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

/// The authority's signature checked by webpki; the host name only for `verify-full`.
#[derive(Debug)]
struct Checked {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    check_host: bool,
}

impl ServerCertVerifier for Checked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.check_host => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// tokio-postgres' TLS hook, over rustls.
#[derive(Clone)]
pub struct RustlsConnect(Arc<ClientConfig>);

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnector;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnector> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        Ok(RustlsConnector {
            config: self.0.clone(),
            name,
        })
    }
}

/// Connects one stream.
pub struct RustlsConnector {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.config);
            let stream = connector.connect(self.name, stream).await?;
            Ok(RustlsStream(stream))
        })
    }
}

/// An encrypted connection.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM's channel binding (tls-server-end-point) is optional; without it the
        // password exchange is SCRAM over the encrypted channel.
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_modes_become_what_tokio_postgres_parses_and_a_check() {
        let (url, options) = TlsOptions::from_url(
            "postgresql://u@db:5432/x?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=a",
        );
        assert_eq!(
            url,
            "postgresql://u@db:5432/x?sslmode=require&application_name=a"
        );
        assert_eq!(options.verify, Verify::Host);
        assert_eq!(options.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        let (url, options) = TlsOptions::from_url("postgresql://u@db/x?sslmode=verify-ca");
        assert_eq!(url, "postgresql://u@db/x?sslmode=require");
        assert_eq!(options.verify, Verify::Authority);
        let (url, options) = TlsOptions::from_url("postgresql://u@db/x");
        assert_eq!(url, "postgresql://u@db/x");
        assert_eq!(options.verify, Verify::Nothing);
    }

    #[test]
    fn a_root_certificate_file_without_certificates_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let options = TlsOptions {
            verify: Verify::Host,
            root_cert: Some(path),
        };
        let err = options.connector().err().unwrap();
        assert!(
            err.contains("ca.pem") && err.contains("no certificate"),
            "{err}"
        );
    }
}
