//! The library's error type: every failure a user can cause (a bad file, a wrong shape, an
//! unknown name) is a variant with the facts needed for a one-line message. A variant that
//! wraps another error says only its own part and gives the other as its `source`, so each
//! cause is said once: [`report`] (or `anyhow`'s `{:#}` in the binary) joins the chain.

use std::path::PathBuf;

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in convscope's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}", path.display())]
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
    /// The model leaves its input's height and width (or a signal's length) open and no
    /// size was given.
    #[error(
        "{}: input '{input}' leaves its size open: give the size to use with --input-size HxW \
         (1xL for a signal's length L)",
        path.display()
    )]
    OpenInputSize {
        /// The model file.
        path: PathBuf,
        /// The input's name.
        input: String,
    },
    /// A request that does not fit the model (a class index out of range, a batch of the
    /// wrong shape).
    #[error("{0}")]
    Invalid(String),
    /// An image could not be decoded.
    #[error("{}: not a readable image", path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        source: image::ImageError,
    },
    /// A tensor operation failed; with validated shapes this points at a bug.
    #[error("tensor operation failed")]
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

/// An error and its causes on one line, each said once: `a: b: c`. A cause whose message
/// runs over lines (the JPEG decoder's do) has them joined with spaces.
pub fn report(error: &dyn std::error::Error) -> String {
    let one_line = |e: &dyn std::error::Error| {
        let text = e.to_string();
        if text.contains('\n') {
            text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
        } else {
            text
        }
    };
    let mut line = one_line(error);
    let mut cause = error.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&one_line(c));
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let error = Error::Io { path: "m.onnx".into(), source };
        assert_eq!(error.to_string(), "m.onnx");
        assert_eq!(report(&error), "m.onnx: gone");
        let plain = Error::graph("conv", "bad");
        assert_eq!(report(&plain), "layer 'conv': bad");
        let source = std::io::Error::other("not enough bytes\n: expected 1\n");
        let error = Error::Io { path: "x.jpg".into(), source };
        assert_eq!(report(&error), "x.jpg: not enough bytes : expected 1");
    }
}
