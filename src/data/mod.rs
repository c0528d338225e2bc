//! What the models are fed and what ships with convscope: input images prepared as a model
//! expects ([`input`]), arrays of inputs ([`npy`]), the bundled digits ([`digits`]), the bundled sample model
//! ([`sample`]) and its training ([`train`]), and results kept on disk between runs
//! ([`cache`]).

pub mod cache;
pub mod digits;
pub mod input;
pub mod inputs;
pub mod npy;
pub mod sample;
pub mod train;
