//! The integration tests, in one binary so the crate is linked once.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod activations;
mod actmax;
mod arrays;
mod attribution;
mod cam;
mod cli;
mod explorer;
mod faithfulness;
mod fuzz;
mod gradients;
mod hostile;
mod keras;
mod layout;
mod methods;
mod native;
mod occlusion;
mod onnx;
mod ops;
mod relu_rules;
mod sample;
mod support;
mod torch;
