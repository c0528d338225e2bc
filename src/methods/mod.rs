//! The visualisation methods of the article and beyond, one file each, as library
//! functions returning plain data ([`Map`]s and numbers), listed with what they need in
//! [`registry`]. The commands and the explorer both call these, so a heatmap on screen and
//! the PNG on disk are the same numbers.

pub mod actmax;
pub mod attribution;
pub mod explainers;
pub mod faithfulness;
pub mod features;
pub mod filters;
pub mod gradcam;
mod gradients;
pub mod occlusion;
pub mod registry;
pub mod saliency;
pub mod sanity;

use crate::error::{Error, Result};

/// A 2-D map of floats, row-major: a heatmap, a feature map, one channel of a filter.
#[derive(Clone, Debug, PartialEq)]
pub struct Map {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `height · width` values, row by row.
    pub data: Vec<f32>,
}

impl Map {
    /// A map from row-major values; errors if the count does not match.
    pub fn new(height: usize, width: usize, data: Vec<f32>) -> Result<Map> {
        if data.len() != height * width {
            return Err(Error::Invalid(format!(
                "{} values for a {height}×{width} map",
                data.len()
            )));
        }
        Ok(Map { height, width, data })
    }

    /// Value at row `y`, column `x`.
    pub fn get(&self, y: usize, x: usize) -> f32 {
        self.data[y * self.width + x]
    }

    /// `(min, max)` of the values (`(0, 0)` for an empty map).
    pub fn range(&self) -> (f32, f32) {
        if self.data.is_empty() {
            return (0.0, 0.0);
        }
        self.data
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
    }

    /// Min-max scaled to [0, 1] as keras-vis does, `(v − min) / (max − min + 1e-7)`: a
    /// constant map becomes all zeros, never NaN.
    pub fn normalised(&self) -> Map {
        let (lo, hi) = self.range();
        let data = self.data.iter().map(|&v| (v - lo) / (hi - lo + 1e-7)).collect();
        Map { data, ..*self }
    }

    /// Whether every value is zero.
    pub fn is_all_zero(&self) -> bool {
        self.data.iter().all(|&v| v == 0.0)
    }
}
