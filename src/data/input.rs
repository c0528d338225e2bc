//! Turning image files into model input: decode (PNG, JPEG, BMP, …), convert to the model's
//! channels, resize to its input size, map to its value range and normalise.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView};

use crate::data::digits::Digits;
use crate::error::{Error, Result};
use crate::model::{ChannelOrder, Model};

/// An image prepared for a model.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Where it came from (a file, or a bundled digit's label).
    pub source: PathBuf,
    /// `[1, C, H, W]` in the model's dtype, ready for [`Model::forward`].
    pub tensor: Tensor,
    /// The pixels before normalisation, `[C, H, W]` in [0, 1], for drawing.
    pub pixels: Vec<f32>,
    /// What was changed to make it fit, for a note to the user (`None` if nothing).
    pub adjusted: Option<String>,
}

/// Decodes `path` and prepares it for `model`.
pub fn load_image(model: &Model, path: &Path) -> Result<Prepared> {
    let reader =
        image::ImageReader::open(path).map_err(|source| Error::Io { path: path.into(), source })?;
    prepare(model, &decode(reader, path)?, path)
}

/// Decodes an image file's `bytes` (`source` names it in errors) and prepares it for
/// `model`, as [`load_image`] does a file.
pub fn image_from_bytes(model: &Model, bytes: &[u8], source: &Path) -> Result<Prepared> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes));
    prepare(model, &decode(reader, source)?, source)
}

/// Decodes whatever format the content is in, within the `image` crate's default limits
/// (512 MB per image), so a decompression bomb is an error.
fn decode<R: std::io::BufRead + std::io::Seek>(
    reader: image::ImageReader<R>,
    path: &Path,
) -> Result<DynamicImage> {
    reader
        .with_guessed_format()
        .map_err(|source| Error::Io { path: path.into(), source })?
        .decode()
        .map_err(|source| Error::Image { path: path.into(), source })
}

/// Prepares a decoded image for `model`.
pub fn prepare(model: &Model, image: &DynamicImage, source: &Path) -> Result<Prepared> {
    let [c, h, w] = model.input_chw()?;
    let mut changes = Vec::new();
    let (iw, ih) = image.dimensions();
    let resized = if (iw as usize, ih as usize) != (w, h) {
        changes.push(format!("resized from {iw}×{ih} to {w}×{h}"));
        image.resize_exact(w as u32, h as u32, FilterType::Triangle)
    } else {
        image.clone()
    };
    let is_gray = matches!(
        image.color(),
        image::ColorType::L8
            | image::ColorType::L16
            | image::ColorType::La8
            | image::ColorType::La16
    );
    let pixels: Vec<f32> = match c {
        1 => {
            if !is_gray {
                changes.push("converted to greyscale".into());
            }
            resized.to_luma32f().into_raw()
        }
        3 => {
            if is_gray {
                changes.push("grey copied to 3 channels".into());
            }
            let rgb = resized.to_rgb32f();
            let order: [usize; 3] =
                if model.input.channel_order == ChannelOrder::Bgr { [2, 1, 0] } else { [0, 1, 2] };
            // Interleaved HWC → planar CHW.
            order.iter().flat_map(|&ch| rgb.pixels().map(move |p| p.0[ch])).collect()
        }
        other => {
            return Err(Error::Invalid(format!(
                "the model takes {other} input channels; only 1 and 3 come from images"
            )));
        }
    };
    let tensor = normalise(model, &pixels)?;
    let adjusted = (!changes.is_empty()).then(|| changes.join(", "));
    Ok(Prepared { source: source.into(), tensor, pixels, adjusted })
}

/// Bundled digit `i` prepared for `model` (a 28×28 grey model), named `source`.
pub fn bundled_digit(model: &Model, digits: &Digits, i: usize, source: String) -> Result<Prepared> {
    let pixels: Vec<f32> = digits.pixels(i).iter().map(|&p| f32::from(p) / 255.0).collect();
    Ok(Prepared {
        source: PathBuf::from(source),
        tensor: normalise(model, &pixels)?,
        pixels,
        adjusted: None,
    })
}

/// Maps `[C, H, W]` pixels in [0, 1] through the model's input description into a
/// `[1, C, H, W]` tensor.
pub fn normalise(model: &Model, pixels: &[f32]) -> Result<Tensor> {
    let [c, h, w] = model.input_chw()?;
    if pixels.len() != c * h * w {
        return Err(Error::Invalid(format!(
            "{} pixel values for an input of {c}×{h}×{w}",
            pixels.len()
        )));
    }
    let spec = &model.input;
    let [lo, hi] = spec.range;
    let values: Vec<f32> = pixels
        .chunks_exact(h * w)
        .enumerate()
        .flat_map(|(ch, plane)| {
            let (mean, std) = spec.normalisation(ch);
            plane.iter().map(move |&p| (lo + p * (hi - lo) - mean) / std)
        })
        .collect();
    Ok(Tensor::from_vec(values, (1, c, h, w), &Device::Cpu)?.to_dtype(model.dtype())?)
}
