//! convscope: see what a convolutional network learned, in the terminal.
//!
//! The library holds everything that computes: the model graph ([`graph`]), running it
//! forward and backward under the ReLU rules of the backprop modifiers ([`engine`], with the
//! numeric [`kernels`]), the native model file ([`native`]), input images ([`input`]), the
//! bundled digits ([`digits`]), training of the sample model ([`train`]) and the layer
//! table ([`summary`]). The binary is a thin layer of commands over it.

pub mod diagram;
pub mod digits;
pub mod engine;
pub mod error;
pub mod graph;
pub mod input;
pub mod keras;
pub mod kernels;
pub mod methods;
pub mod model;
pub mod native;
pub mod onnx;
pub mod patch;
pub mod render;
pub mod runtime;
pub mod sample;
pub mod summary;
pub mod train;
pub mod tui;
pub mod views;

pub use engine::{Activations, Gradients, Point, ReluRule, Seed};
pub use error::{Error, Result};
pub use graph::{Activation, ArithKind, ConstOperand, Graph, GraphSpec, Node, Op, Padding};
pub use model::{InputSpec, Model};
