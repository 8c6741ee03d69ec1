//! Connection strings, tokens and header values: written in the project as references to
//! an environment variable or a file (a mounted Kubernetes Secret), resolved only when the
//! agent connects, and never printed.

use serde::Deserialize;
use strata_core::settings::SecretString;

use crate::IngestError;

/// A value from the project: a literal, or where to find a secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SecretRef {
    /// Written in the project (no password allowed in it).
    Literal(String),
    /// `{env: NAME}`: the environment variable `NAME`.
    Env {
        /// The variable.
        env: String,
    },
    /// `{file: /var/run/secrets/crm/url}`: the file's content, trimmed.
    File {
        /// The file.
        file: String,
    },
}

impl SecretRef {
    /// The value.
    ///
    /// # Errors
    /// [`IngestError::Secret`] naming the variable or file when it is unset or unreadable.
    pub fn resolve(&self) -> Result<SecretString, IngestError> {
        match self {
            SecretRef::Literal(text) => Ok(SecretString::from(text.as_str())),
            SecretRef::Env { env } => std::env::var(env)
                .map(|value| SecretString::from(value.as_str()))
                .map_err(|_| IngestError::Secret {
                    reference: format!("environment variable {env}"),
                    reason: "it is not set".into(),
                }),
            SecretRef::File { file } => std::fs::read_to_string(file)
                .map(|value| SecretString::from(value.trim()))
                .map_err(|err| IngestError::Secret {
                    reference: format!("file {file}"),
                    reason: err.to_string(),
                }),
        }
    }

    /// Refuses a literal URL that carries a password (`scheme://user:password@host`).
    pub(crate) fn check_no_literal_password(&self, key: &str) -> Result<(), String> {
        let SecretRef::Literal(text) = self else {
            return Ok(());
        };
        let has_password = url::Url::parse(text)
            .map(|url| url.password().is_some())
            .unwrap_or(false)
            || text.to_ascii_lowercase().contains("password=");
        if has_password {
            return Err(format!(
                "`{key}` holds a password: write `{key}: {{env: NAME}}` or `{key}: {{file: PATH}}` and keep the secret out of the project"
            ));
        }
        Ok(())
    }

    /// Refuses any literal: the value is a secret itself.
    pub(crate) fn check_not_literal(&self, key: &str) -> Result<(), String> {
        match self {
            SecretRef::Literal(_) => Err(format!(
                "`{key}` is a secret: write `{key}: {{env: NAME}}` or `{key}: {{file: PATH}}` instead of its value"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_and_literals_with_passwords_are_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "s3cret\n").unwrap();
        let by_file = SecretRef::File {
            file: file.path().display().to_string(),
        };
        assert_eq!(by_file.resolve().unwrap().expose(), "s3cret");
        let missing = SecretRef::Env {
            env: "STRATA_TEST_SURELY_UNSET".into(),
        };
        assert!(
            missing
                .resolve()
                .unwrap_err()
                .to_string()
                .contains("STRATA_TEST_SURELY_UNSET")
        );
        let literal = SecretRef::Literal("postgres://app@db/crm".into());
        assert!(literal.check_no_literal_password("connection").is_ok());
        let with_password = SecretRef::Literal("postgres://app:pw@db/crm".into());
        assert!(
            with_password
                .check_no_literal_password("connection")
                .is_err()
        );
    }
}
