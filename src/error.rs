//! Typed errors for everything the library can reject.

use std::fmt;

/// A tensor shape, printed PyTorch-style: `(4096, 32)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Shape(pub Vec<usize>);

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() == 1 {
            write!(f, ",")?;
        }
        write!(f, ")")
    }
}

/// Every failure the library reports. Bad input is always one of these, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor the model needs is absent from the checkpoint.
    #[error("checkpoint is missing tensor `{key}` (expected shape {expected})")]
    MissingKey { key: String, expected: Shape },

    /// The checkpoint holds tensors the model does not know.
    #[error("checkpoint has {} unexpected tensor(s): {}", keys.len(), list_keys(keys))]
    UnexpectedKeys { keys: Vec<(String, Shape)> },

    /// A tensor has the wrong shape.
    #[error("tensor `{key}` has shape {found}, expected {expected}")]
    ShapeMismatch {
        key: String,
        found: Shape,
        expected: Shape,
    },

    /// A tensor has a dtype the model cannot use at that place.
    #[error("tensor `{key}` has dtype {found}, expected {expected}")]
    DTypeMismatch {
        key: String,
        found: String,
        expected: String,
    },

    /// The bytes are not a valid checkpoint of the stated format.
    #[error("invalid {format} file: {reason}")]
    Format {
        format: &'static str,
        reason: String,
    },

    /// A configuration that cannot describe a model.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// An argument outside its valid range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A file could not be read or written.
    /// (The I/O error is part of the message, not a separate source, so error chains do
    /// not print it twice.)
    #[error("{path}: {err}")]
    Io { path: String, err: std::io::Error },

    /// The requested compute device is not available.
    #[error("device unavailable: {0}")]
    Device(String),

    /// Reading a tensor back from the device failed.
    #[error("reading a tensor back from the device failed: {0}")]
    Readback(String),

    /// The caller asked to stop.
    #[error("cancelled")]
    Cancelled,
}

fn list_keys(keys: &[(String, Shape)]) -> String {
    const SHOWN: usize = 8;
    let mut s = keys
        .iter()
        .take(SHOWN)
        .map(|(k, sh)| format!("`{k}` {sh}"))
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOWN {
        s.push_str(&format!(", … ({} more)", keys.len() - SHOWN));
    }
    s
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
    pub(crate) fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
}
