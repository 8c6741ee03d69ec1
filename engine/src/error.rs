//! Task failures and their class, which decides what happens next: a user error fails the
//! model at once, a transient one is retried with backoff, an internal one is retried once.

use datafusion::error::DataFusionError;

/// How a failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Bad SQL, a type error, a missing column, a query too big for the memory limit:
    /// retrying cannot help.
    User,
    /// I/O, network, object store: may succeed when retried.
    Transient,
    /// A bug or an unexpected state.
    Internal,
}

/// Why a task failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The user's SQL or data is at fault.
    #[error("{message}")]
    User {
        /// What went wrong and, where possible, what to do.
        message: String,
    },
    /// Storage or network trouble.
    #[error("{message}")]
    Transient {
        /// What went wrong.
        message: String,
    },
    /// Something Strata did not expect.
    #[error("internal error: {message}")]
    Internal {
        /// What went wrong.
        message: String,
    },
}

impl TaskError {
    /// A user error.
    pub fn user(message: impl Into<String>) -> Self {
        Self::User {
            message: message.into(),
        }
    }

    /// A transient error.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
        }
    }

    /// An internal error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal {
            message: message.into(),
        }
    }

    /// The failure's class.
    pub fn class(&self) -> Class {
        match self {
            Self::User { .. } => Class::User,
            Self::Transient { .. } => Class::Transient,
            Self::Internal { .. } => Class::Internal,
        }
    }

    /// Prefixes the message with where it happened, keeping the class.
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        match self {
            Self::User { message } => Self::User {
                message: format!("{context}: {message}"),
            },
            Self::Transient { message } => Self::Transient {
                message: format!("{context}: {message}"),
            },
            Self::Internal { message } => Self::Internal {
                message: format!("{context}: {message}"),
            },
        }
    }
}

/// Classifies a DataFusion error.
pub fn classify_datafusion(err: DataFusionError) -> TaskError {
    match err {
        DataFusionError::Context(context, inner) => classify_datafusion(*inner).context(context),
        DataFusionError::Diagnostic(_, inner) => classify_datafusion(*inner),
        DataFusionError::Shared(inner) => match std::sync::Arc::try_unwrap(inner) {
            Ok(inner) => classify_datafusion(inner),
            // Still shared (a hash join's build side fails every partition probing it):
            // classified by its root cause.
            Err(shared) => match shared.find_root() {
                DataFusionError::ResourcesExhausted(message) => out_of_memory(message),
                DataFusionError::IoError(err) => TaskError::transient(err.to_string()),
                _ => TaskError::internal(shared.to_string()),
            },
        },
        DataFusionError::ObjectStore(err) => classify_object_store(*err),
        DataFusionError::IoError(err) => TaskError::transient(err.to_string()),
        DataFusionError::ResourcesExhausted(message) => out_of_memory(&message),
        DataFusionError::Internal(message) => TaskError::internal(message),
        DataFusionError::External(inner) => match inner.downcast::<DataFusionError>() {
            Ok(inner) => classify_datafusion(*inner),
            Err(other) => TaskError::transient(other.to_string()),
        },
        DataFusionError::ArrowError(err, _) => {
            let text = err.to_string();
            if text.contains("Io error") || text.contains("IO error") {
                TaskError::transient(text)
            } else {
                TaskError::user(text)
            }
        }
        other => TaskError::user(other.strip_backtrace()),
    }
}

/// A query that needs more memory than its pool, where spilling cannot help (a hash join's
/// build side, say): the user's to fix, by the setting that sizes the pool.
fn out_of_memory(message: &str) -> TaskError {
    TaskError::user(format!(
        "the query needs more memory than the task's pool allows ({message}); raise engine.memory_limit_mib (--memory-limit-mib) or reduce the data per task"
    ))
}

/// Classifies a storage error: a missing object or a refused request is the user's to fix
/// (a wrong location or credentials); anything else (timeouts, resets, 5xx) may pass.
fn classify_object_store(err: object_store::Error) -> TaskError {
    match err {
        object_store::Error::NotFound { path, .. } => TaskError::user(format!("not found: {path}")),
        err @ (object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. }
        | object_store::Error::InvalidPath { .. }
        | object_store::Error::NotSupported { .. }) => TaskError::user(err.to_string()),
        other => TaskError::transient(other.to_string()),
    }
}

impl From<strata_storage::StorageError> for TaskError {
    fn from(err: strata_storage::StorageError) -> Self {
        match err {
            strata_storage::StorageError::InvalidLocation { .. } => {
                TaskError::user(err.to_string())
            }
            strata_storage::StorageError::Store {
                operation,
                location,
                source,
            } => classify_object_store(source).context(format!("{operation} {location}")),
            strata_storage::StorageError::Delta { location, source } => {
                TaskError::from(*source).context(format!("reading {location}"))
            }
            strata_storage::StorageError::Local { .. } => TaskError::transient(err.to_string()),
        }
    }
}

impl From<deltalake::DeltaTableError> for TaskError {
    fn from(err: deltalake::DeltaTableError) -> Self {
        match err {
            deltalake::DeltaTableError::ObjectStore { source } => classify_object_store(source),
            deltalake::DeltaTableError::Io { source } => TaskError::transient(source.to_string()),
            deltalake::DeltaTableError::Arrow { source } => TaskError::user(source.to_string()),
            other => TaskError::internal(other.to_string()),
        }
    }
}

impl From<DataFusionError> for TaskError {
    fn from(err: DataFusionError) -> Self {
        classify_datafusion(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planning_errors_are_user_errors_and_memory_exhaustion_says_what_to_do() {
        let err = classify_datafusion(DataFusionError::Plan(String::from("table 'x' not found")));
        assert_eq!(err.class(), Class::User);
        let err = classify_datafusion(DataFusionError::ResourcesExhausted(String::from(
            "pool is full",
        )));
        assert_eq!(err.class(), Class::User);
        assert!(
            err.to_string().contains("raise engine.memory_limit_mib"),
            "{err}"
        );
        // A hash join's build side that does not fit fails every partition probing it: the
        // error is still shared when it is classified.
        let shared = std::sync::Arc::new(DataFusionError::Context(
            String::from("building the hash table"),
            Box::new(DataFusionError::ResourcesExhausted(String::from(
                "Failed to allocate additional 17.0 MB for HashJoinInput[1]",
            ))),
        ));
        let err = classify_datafusion(DataFusionError::Shared(std::sync::Arc::clone(&shared)));
        assert_eq!(err.class(), Class::User);
        assert!(
            err.to_string().contains("HashJoinInput[1]")
                && err.to_string().contains("engine.memory_limit_mib"),
            "{err}"
        );
        let err = classify_datafusion(DataFusionError::Context(
            String::from("reading"),
            Box::new(DataFusionError::IoError(std::io::Error::other("reset"))),
        ));
        assert_eq!(err.class(), Class::Transient);
        assert!(err.to_string().starts_with("reading: "), "{err}");
    }
}
