//! Turning image files into model input: decode (PNG, JPEG, BMP, …), fit to the model's
//! aspect ([`Fit`]), convert to its channels, resize to its input size, map to its value
//! range and normalise; every change is noted for the user. Numpy files of inputs are read
//! by [`npy`], behind the same calls.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView};

use crate::data::digits::Digits;
use crate::data::npy;
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

/// The inputs a file holds for a model, with what the file says of them.
pub struct FileInputs {
    /// The inputs, prepared.
    pub inputs: Vec<Prepared>,
    /// Each one's true class where the file gives it (a `.npz`'s labels), else None.
    pub labels: Vec<Option<usize>>,
    /// What was read how, for the user (which of a `.npz`'s arrays, a channels-last layout).
    pub note: Option<String>,
}

/// How an image of another aspect ratio is made the model's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fit {
    /// The centre at the model's aspect, the rest cut off: the default, as torchvision's
    /// and Keras's evaluation transforms do (resize, centre crop), so shapes are not
    /// distorted and no border the model never saw is added.
    #[default]
    Crop,
    /// The whole image, with borders of its edge colour added.
    Pad,
    /// The whole image, squashed or stretched.
    Stretch,
}

impl Fit {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Fit::Crop => "crop",
            Fit::Pad => "pad",
            Fit::Stretch => "stretch",
        }
    }
}

/// Decodes `path` and prepares it for `model`, fitted as `fit` says: an image, or a numpy
/// file of one input ([`npy`]).
pub fn load_image(model: &Model, path: &Path, fit: Fit) -> Result<Prepared> {
    let mut file = load_file(model, path, fit)?;
    if file.inputs.len() > 1 {
        let why = format!(
            "holds a batch of {} inputs, and this explains one: save one of them (`x[i:i + 1]`), \
             or give the batch to the explorer or `predict`",
            file.inputs.len()
        );
        return Err(Error::bad_file(path, why));
    }
    let mut input = file.inputs.remove(0);
    if let Some(note) = file.note {
        input.adjusted =
            Some(input.adjusted.map_or(note.clone(), |more| format!("{note}; {more}")));
    }
    Ok(input)
}

/// Every input in the file `path`, prepared for `model`: an image's one, fitted as `fit`
/// says, or each of a numpy file's (with their labels where it has them).
pub fn load_file(model: &Model, path: &Path, fit: Fit) -> Result<FileInputs> {
    if npy::is_array_file(path) {
        return npy::load(model, path);
    }
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.into(), source })?;
    let input = image_from_bytes(model, &bytes, path, fit)?;
    Ok(FileInputs { inputs: vec![input], labels: vec![None], note: None })
}

/// The height and width of the image (or numpy file's inputs) at `path`, for a model that
/// leaves its own open.
pub fn image_size(path: &Path) -> Result<[usize; 2]> {
    if npy::is_array_file(path) {
        return npy::spatial_size(path);
    }
    let (w, h) = image::image_dimensions(path).map_err(|source| match source {
        image::ImageError::IoError(source) => Error::Io { path: path.into(), source },
        source => Error::Image { path: path.into(), source },
    })?;
    Ok([h as usize, w as usize])
}

/// Decodes an image file's `bytes` (`source` names it in errors) and prepares it for
/// `model`, as [`load_image`] does a file.
pub fn image_from_bytes(model: &Model, bytes: &[u8], source: &Path, fit: Fit) -> Result<Prepared> {
    if jpeg_ends_early(bytes) {
        let why = "not a readable image: a JPEG that ends before its image does (truncated)";
        return Err(Error::bad_file(source, why));
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes));
    prepare(model, &decode(reader, source)?, source, fit)
}

/// Whether `bytes` are a JPEG cut off before its end-of-image marker. The decoder fills a
/// cut-off image's missing rows with grey and reports nothing, so a half-copied photo would
/// be explained as if whole. Walks the markers: each segment's length, and past a scan's
/// header its entropy-coded data up to the next marker (`FF 00` is a stuffed byte, `FF D0`
/// to `FF D7` restart markers within the scan). A JPEG this walk cannot follow is left to
/// the decoder.
fn jpeg_ends_early(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return false;
    }
    let mut at = 2;
    loop {
        // Fill bytes (more FFs) may precede a marker.
        while bytes.get(at + 1) == Some(&0xFF) && bytes[at] == 0xFF {
            at += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(at), bytes.get(at + 1)) else {
            // Past the end before the end marker, or not at a marker: cut off, or unknown.
            return at + 1 >= bytes.len();
        };
        match marker {
            0xD9 => return false,
            0x01 | 0xD0..=0xD7 => at += 2,
            _ => {
                let Some(&[hi, lo]) = bytes.get(at + 2..at + 4) else { return true };
                at += 2 + usize::from(u16::from_be_bytes([hi, lo]));
                if marker == 0xDA {
                    let scan = bytes.get(at..).unwrap_or_default();
                    let next = scan.windows(2).position(|pair| {
                        pair[0] == 0xFF && !matches!(pair[1], 0x00 | 0xD0..=0xD7 | 0xFF)
                    });
                    match next {
                        Some(offset) => at += offset,
                        None => return true,
                    }
                }
            }
        }
    }
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

/// `image` at the aspect ratio `w`:`h` as `fit` says, and a note of what was done (`None`
/// when the aspect already matches to within a pixel).
fn fit_aspect(
    image: &DynamicImage,
    w: usize,
    h: usize,
    fit: Fit,
) -> (DynamicImage, Option<String>) {
    let (iw, ih) = image.dimensions();
    // The image's width at the model's aspect, for its height.
    let at_aspect = (u64::from(ih) * w as u64).div_ceil(h.max(1) as u64);
    if u64::from(iw).abs_diff(at_aspect) <= 1 || fit == Fit::Stretch {
        let note = (u64::from(iw).abs_diff(at_aspect) > 1).then(|| {
            format!("stretched from aspect {iw}:{ih} to {w}:{h} (--fit crop|pad keep shapes)")
        });
        return (image.clone(), note);
    }
    let wide = u64::from(iw) > at_aspect;
    // The side that stays, and the other side at the model's aspect.
    let (cw, ch) = if wide {
        (at_aspect as u32, ih)
    } else {
        (iw, (u64::from(iw) * h as u64 / w.max(1) as u64) as u32)
    };
    match fit {
        Fit::Crop => {
            let (x, y) = ((iw - cw.min(iw)) / 2, (ih - ch.min(ih)) / 2);
            let note = format!(
                "cropped to its centre {cw}×{ch} (aspect {iw}:{ih}, the model's {w}:{h}; --fit pad|stretch keep all of it)"
            );
            (image.crop_imm(x, y, cw.min(iw), ch.min(ih)), Some(note))
        }
        Fit::Pad | Fit::Stretch => {
            // Padded out to the aspect: the longer side stays, the shorter grows.
            let (pw, ph) = if wide {
                (iw, (u64::from(iw) * h as u64).div_ceil(w.max(1) as u64) as u32)
            } else {
                (at_aspect as u32, ih)
            };
            let rgba = image.to_rgba8();
            let fill = edge_colour(&rgba);
            let mut canvas = image::RgbaImage::from_pixel(pw, ph, fill);
            image::imageops::replace(
                &mut canvas,
                &rgba,
                i64::from((pw - iw) / 2),
                i64::from((ph - ih) / 2),
            );
            let note = format!(
                "padded to {pw}×{ph} with its edge colour (aspect {iw}:{ih}, the model's {w}:{h}; --fit crop|stretch fill the frame)"
            );
            (DynamicImage::ImageRgba8(canvas), Some(note))
        }
    }
}

/// The mean colour of an image's outermost pixels: a padding that continues its
/// background.
fn edge_colour(img: &image::RgbaImage) -> image::Rgba<u8> {
    let (w, h) = img.dimensions();
    let mut sum = [0u64; 4];
    let mut n = 0u64;
    for (x, y, p) in img.enumerate_pixels() {
        if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
            for (s, v) in sum.iter_mut().zip(p.0) {
                *s += u64::from(v);
            }
            n += 1;
        }
    }
    image::Rgba(sum.map(|s| (s / n.max(1)) as u8))
}

/// The digits model (28×28 grey, ten classes, trained on MNIST) reads light strokes on a
/// dark ground; a grey input whose border is mostly light is the other way round.
fn polarity_note(model: &Model, pixels: &[f32], h: usize, w: usize) -> Option<String> {
    if model.input_chw().ok()? != [1, 28, 28] || model.num_classes() != 10 {
        return None;
    }
    let border: Vec<f32> = (0..h * w)
        .filter(|i| i / w == 0 || i / w == h - 1 || i % w == 0 || i % w == w - 1)
        .filter_map(|i| pixels.get(i).copied())
        .collect();
    let mean = border.iter().sum::<f32>() / border.len().max(1) as f32;
    (mean > 0.5).then(|| {
        format!(
            "looks dark-on-light (border mean {mean:.2}); digit models like this one expect light strokes on a dark ground (MNIST): invert it for a fair answer"
        )
    })
}

/// Prepares a decoded image for `model`, fitted to its aspect as `fit` says.
pub fn prepare(model: &Model, image: &DynamicImage, source: &Path, fit: Fit) -> Result<Prepared> {
    let [c, h, w] = model.input_chw()?;
    if model.takes_signals() {
        let why = format!(
            "an image, and this model reads signals of {c}×{w} values (a 1-D CNN): give them \
             as numpy arrays (.npy or .npz: {c}×{w}, {w}×{c} or a batch of those)"
        );
        return Err(Error::bad_file(source, why));
    }
    let mut changes = Vec::new();
    let source_color = image.color();
    let (fitted, aspect) = fit_aspect(image, w, h, fit);
    changes.extend(aspect);
    let (iw, ih) = fitted.dimensions();
    let image = &fitted;
    let resized = if (iw as usize, ih as usize) != (w, h) {
        changes.push(format!("resized from {iw}×{ih} to {w}×{h}"));
        image.resize_exact(w as u32, h as u32, FilterType::Triangle)
    } else {
        image.clone()
    };
    let is_gray = matches!(
        source_color,
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
        4 => {
            if !source_color.has_alpha() {
                changes.push("an opaque alpha channel added".into());
            }
            let rgba = resized.to_rgba32f();
            (0..4).flat_map(|ch| rgba.pixels().map(move |p| p.0[ch])).collect()
        }
        other => {
            return Err(Error::bad_file(
                source,
                format!(
                    "the model takes {other} input channels, and images give 1, 3 or 4: give \
                     its input as a .npy array ({other}×{h}×{w})"
                ),
            ));
        }
    };
    if c == 1 {
        changes.extend(polarity_note(model, &pixels, h, w));
    }
    let tensor = normalise(model, &pixels)?;
    let adjusted = (!changes.is_empty()).then(|| changes.join("; "));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jpeg_cut_anywhere_before_its_end_marker_is_found_out() {
        let mut jpeg = Vec::new();
        let noisy = image::RgbImage::from_fn(48, 40, |x, y| {
            image::Rgb([(x * 37 % 251) as u8, (y * 91 % 253) as u8, ((x * y) % 255) as u8])
        });
        DynamicImage::ImageRgb8(noisy)
            .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        assert!(!jpeg_ends_early(&jpeg));
        // Trailing bytes after the end marker (some cameras append data) are no cut.
        let trailed = [jpeg.as_slice(), b"trailer"].concat();
        assert!(!jpeg_ends_early(&trailed));
        for cut in (3..jpeg.len()).step_by(7).chain([jpeg.len() - 1]) {
            assert!(jpeg_ends_early(&jpeg[..cut]), "cut at {cut} of {}", jpeg.len());
        }
        // Other formats are the decoder's to judge.
        assert!(!jpeg_ends_early(b"\x89PNG\r\n"));
    }

    /// A 40×20 grey image: a light ground with a dark square in the middle 20×20.
    fn wide() -> DynamicImage {
        DynamicImage::ImageLuma8(image::GrayImage::from_fn(40, 20, |x, _| {
            image::Luma([if (10..30).contains(&x) { 0 } else { 250 }])
        }))
    }

    #[test]
    fn crop_keeps_the_centre_at_the_models_aspect() {
        let (out, note) = fit_aspect(&wide(), 28, 28, Fit::Crop);
        assert_eq!(out.dimensions(), (20, 20));
        assert!(out.to_luma8().pixels().all(|p| p.0 == [0]), "the dark middle only");
        assert!(note.unwrap().starts_with("cropped to its centre 20×20 (aspect 40:20"));
        // Taller than wide: the middle rows.
        let tall = DynamicImage::ImageLuma8(image::GrayImage::from_fn(10, 30, |_, y| {
            image::Luma([y as u8])
        }));
        let (out, _) = fit_aspect(&tall, 28, 28, Fit::Crop);
        assert_eq!(out.dimensions(), (10, 10));
        assert_eq!(out.to_luma8().get_pixel(0, 0).0, [10]);
    }

    #[test]
    fn pad_keeps_everything_on_its_edge_colour() {
        let (out, note) = fit_aspect(&wide(), 28, 28, Fit::Pad);
        assert_eq!(out.dimensions(), (40, 40));
        let grey = out.to_luma8();
        // The image in the middle rows, the added rows the edge's mean colour: the edge is
        // all light but the 20 dark pixels of the top and bottom rows' middle.
        assert_eq!(grey.get_pixel(20, 20).0, [0]);
        assert_eq!(grey.get_pixel(0, 20).0, [250]);
        let edge = ((40 + 40 + 2 * 18 - 40) * 250 / (40 + 40 + 2 * 18)) as u8;
        assert_eq!(grey.get_pixel(20, 0).0, [edge]);
        assert!(note.unwrap().starts_with("padded to 40×40 with its edge colour"));
    }

    #[test]
    fn stretch_and_a_matching_aspect_change_nothing_but_say_so() {
        let (out, note) = fit_aspect(&wide(), 28, 28, Fit::Stretch);
        assert_eq!(out.dimensions(), (40, 20));
        assert!(note.unwrap().starts_with("stretched from aspect 40:20 to 28:28"));
        for fit in [Fit::Crop, Fit::Pad, Fit::Stretch] {
            let (out, note) = fit_aspect(&wide(), 56, 28, fit);
            assert_eq!((out.dimensions(), note), ((40, 20), None));
        }
    }

    #[test]
    fn a_dark_on_light_digit_is_noted_and_every_change_is_said() {
        let model = crate::data::sample::model().unwrap();
        let prepared = prepare(&model, &wide(), Path::new("w.png"), Fit::Crop).unwrap();
        // The cropped middle is all dark: light-on-dark as the model wants.
        assert_eq!(
            prepared.adjusted.as_deref(),
            Some(
                "cropped to its centre 20×20 (aspect 40:20, the model's 28:28; --fit pad|stretch \
                 keep all of it); resized from 20×20 to 28×28"
            )
        );
        let light = DynamicImage::ImageRgb8(image::RgbImage::from_fn(28, 28, |x, _| {
            image::Rgb([if x == 14 { 0 } else { 240 }; 3])
        }));
        let prepared = prepare(&model, &light, Path::new("l.png"), Fit::Crop).unwrap();
        let note = prepared.adjusted.unwrap();
        assert!(note.starts_with("converted to greyscale; looks dark-on-light"), "{note}");
    }
}
