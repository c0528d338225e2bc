//! The library's error type: every failure a user can cause (a bad file, a wrong shape, an
//! unknown name) is a variant with the facts needed for a one-line message.

use std::path::PathBuf;

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in convscope's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A file was read but is not what it should be (not a model, truncated, bad metadata).
    #[error("{}: {message}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The graph is inconsistent: a node's input is missing, its shape does not fit its op,
    /// or its weights have the wrong shape.
    #[error("layer '{node}': {message}")]
    Graph {
        /// The node at fault.
        node: String,
        /// What is wrong.
        message: String,
    },
    /// A layer name given by the user is not in the model.
    #[error("no layer named '{name}' in the model (layers: {available})")]
    UnknownLayer {
        /// The name asked for.
        name: String,
        /// The layer names the model has, comma separated.
        available: String,
    },
    /// A request that does not fit the model (a class index out of range, a batch of the
    /// wrong shape).
    #[error("{0}")]
    Invalid(String),
    /// An image could not be decoded.
    #[error("{}: not a readable image: {source}", path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        source: image::ImageError,
    },
    /// A tensor operation failed; with validated shapes this points at a bug.
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn graph(node: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Graph { node: node.into(), message: message.into() }
    }

    pub(crate) fn bad_file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::BadFile { path: path.into(), message: message.into() }
    }
}
