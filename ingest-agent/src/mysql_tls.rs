//! TLS to MySQL and MariaDB, as the `mysql` client's `--ssl-mode` asks, given in the connection
//! URL: `ssl-mode=PREFERRED` (the default: TLS when the server offers it, clear otherwise) and
//! `REQUIRED` encrypt without checking the server's certificate; `VERIFY_IDENTITY` checks that a
//! trusted authority signed it and that it names the host in the URL; `DISABLED` connects in
//! clear. The authorities are `ssl-ca` (a PEM file) or, without it, the Mozilla roots that
//! rustls ships (webpki-roots).
//!
//! `VERIFY_CA` (the authority without the host) is refused: mysql_async recognises a certificate
//! for another host by the text of rustls' error, which rustls 0.23 no longer writes, so it
//! would check the host anyway and fail where the user asked it not to.
//!
//! mysql_async parses its own TLS parameters (`require_ssl`, `verify_ca`, `verify_identity`,
//! `built_in_roots`); a URL that uses them and no `ssl-mode` keeps their meaning.

use std::path::PathBuf;

/// How a connection is encrypted and how far the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// In clear.
    Disabled,
    /// Encrypted when the server offers TLS, in clear otherwise; the certificate is not checked.
    Preferred,
    /// Encrypted, or no connection; the certificate is not checked.
    Required,
    /// Encrypted, with a certificate signed by a trusted authority for the host connected to.
    VerifyIdentity,
}

/// The TLS parameters of a connection URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// The mode `ssl-mode` names; `None` when the URL does not name one.
    pub mode: Option<SslMode>,
    /// The trusted authorities (PEM), instead of the built-in ones.
    pub ca: Option<PathBuf>,
}

impl TlsOptions {
    /// Splits `url` into what mysql_async parses and the TLS options: `ssl-mode` and `ssl-ca`
    /// (also spelled with `_`) are taken out.
    ///
    /// # Errors
    /// An unknown mode, or `VERIFY_CA`, with what to write instead (the URL is not repeated:
    /// it may hold a secret).
    pub fn from_url(url: &str) -> Result<(String, TlsOptions), String> {
        let mut options = TlsOptions {
            mode: None,
            ca: None,
        };
        let Ok(mut parsed) = url::Url::parse(url) else {
            return Ok((url.to_string(), options));
        };
        let mut kept = Vec::new();
        for (key, value) in parsed.query_pairs() {
            match key.replace('_', "-").as_str() {
                "ssl-mode" => options.mode = Some(parse_mode(&value)?),
                "ssl-ca" => options.ca = Some(PathBuf::from(value.as_ref())),
                _ => kept.push((key.to_string(), value.to_string())),
            }
        }
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
        Ok((parsed.to_string(), options))
    }

    /// The mode in effect: the one named, or PREFERRED.
    pub fn effective_mode(&self) -> SslMode {
        self.mode.unwrap_or(SslMode::Preferred)
    }

    /// mysql_async's TLS settings for the mode; `None` for a connection in clear.
    pub fn ssl_opts(&self) -> Option<mysql_async::SslOpts> {
        let encrypted_only = mysql_async::SslOpts::default()
            .with_danger_accept_invalid_certs(true)
            .with_danger_skip_domain_validation(true);
        match self.effective_mode() {
            SslMode::Disabled => None,
            SslMode::Preferred | SslMode::Required => Some(encrypted_only),
            SslMode::VerifyIdentity => {
                let checked = mysql_async::SslOpts::default();
                Some(match &self.ca {
                    Some(path) => checked
                        .with_root_certs(vec![path.clone().into()])
                        .with_disable_built_in_roots(true),
                    None => checked,
                })
            }
        }
    }
}

fn parse_mode(value: &str) -> Result<SslMode, String> {
    match value.to_ascii_uppercase().replace('-', "_").as_str() {
        "DISABLED" => Ok(SslMode::Disabled),
        "PREFERRED" => Ok(SslMode::Preferred),
        "REQUIRED" => Ok(SslMode::Required),
        "VERIFY_IDENTITY" => Ok(SslMode::VerifyIdentity),
        "VERIFY_CA" => Err(String::from(
            "ssl-mode=VERIFY_CA is not supported (the MySQL driver cannot check the authority \
             without the host name); use VERIFY_IDENTITY with the host name the certificate \
             names, or REQUIRED",
        )),
        other => Err(format!(
            "ssl-mode={other} is not a mode; use DISABLED, PREFERRED, REQUIRED or VERIFY_IDENTITY"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mysql_client_parameters_leave_the_url_and_the_others_stay() {
        let (url, options) = TlsOptions::from_url(concat!(
            "mysql://app@db.example:3306/shop",
            "?ssl-mode=verify_identity&ssl_ca=/etc/ca.pem&prefer_socket=false"
        ))
        .unwrap();
        assert_eq!(url, "mysql://app@db.example:3306/shop?prefer_socket=false");
        assert_eq!(options.mode, Some(SslMode::VerifyIdentity));
        assert_eq!(options.ca, Some(PathBuf::from("/etc/ca.pem")));

        let (url, options) = TlsOptions::from_url("mysql://app@db:3306/shop").unwrap();
        assert_eq!(url, "mysql://app@db:3306/shop");
        assert_eq!(options.effective_mode(), SslMode::Preferred);
        assert!(options.ssl_opts().is_some());

        let (_, disabled) = TlsOptions::from_url("mysql://db/shop?ssl-mode=DISABLED").unwrap();
        assert!(disabled.ssl_opts().is_none());
    }

    #[test]
    fn verify_ca_and_unknown_modes_are_refused_with_what_to_write() {
        let refused = TlsOptions::from_url("mysql://db/shop?ssl-mode=VERIFY_CA").unwrap_err();
        assert!(refused.contains("VERIFY_IDENTITY"), "{refused}");
        let unknown = TlsOptions::from_url("mysql://db/shop?ssl-mode=sometimes").unwrap_err();
        assert!(unknown.contains("SOMETIMES is not a mode"), "{unknown}");
    }
}
