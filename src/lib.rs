//! convscope: see what a convolutional network learned, in the terminal.
//!
//! The crate in layers; each imports only from the layers above it in this list:
//!
//! - [`error`], [`files`], [`runtime`]: the error type, safe file writes and the process
//!   settings.
//! - [`model`]: the graph of ops, its shapes, weights, input description and class names.
//! - [`kernels`]: the numeric kernels (convolution, dense, pooling), with their SIMD paths.
//! - [`engine`]: running a model forward and backward under the ReLU rules, and
//!   occlusion's incremental pass.
//! - [`formats`]: model files in (convscope's own, ONNX, Keras), one `load` for all.
//! - [`data`]: input preparation, the bundled digits and sample model, on-disk results.
//! - [`methods`]: what the explorer explains with (filters, feature maps, activation
//!   maximisation, occlusion, saliency, grad-CAM), each returning plain data, and the
//!   registry that lists them.
//! - [`present`]: results as pictures, text and files; the layer table and diagram.
//! - [`tui`]: the explorer.
//!
//! The core (`model`, `kernels`, `engine`, `formats`, `data`, `methods`) names no terminal
//! or command-line crate; the binary's commands (`src/cli`) are a thin layer over it all.
//! `tests/all/layout.rs` holds the crate to this order.

pub mod data;
pub mod engine;
pub mod error;
pub mod files;
pub mod formats;
pub mod kernels;
pub mod methods;
pub mod model;
pub mod present;
pub mod runtime;
pub mod tui;

pub use engine::{Activations, Gradients, Keep, Point, ReluRule, Seed};
pub use error::{Error, Result};
pub use model::{
    Activation, ArithKind, ConstOperand, Graph, GraphSpec, InputSpec, Model, Node, Op, Padding,
    ReduceKind,
};
