//! The bundled sample model: the article's MNIST network, trained by `convscope train` on
//! the bundled digits, compiled into the program so `convscope` works from anywhere.

use std::path::Path;

use crate::error::Result;
use crate::model::Model;

/// Where the sample model lives in the source tree (and where `convscope train` writes).
pub const PATH: &str = "sample_models/mnist_cnn.safetensors";

static BYTES: &[u8] = include_bytes!("../../sample_models/mnist_cnn.safetensors");

/// The sample model's file, as compiled in.
pub fn bytes() -> &'static [u8] {
    BYTES
}

/// The sample model.
pub fn model() -> Result<Model> {
    crate::formats::native::from_bytes(BYTES, Path::new(PATH))
}
