//! The inputs a session works on: image files and folders given by the user, or the bundled
//! digits, each with its true class where known, and the model's predictions for them in
//! batches.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use crate::data::digits::Digits;
use crate::data::input::{self, Fit, Prepared};
use crate::engine::argmax;
use crate::error::{Error, Result};
use crate::model::{Model, printable_path};

/// File extensions a folder given to `--images` is searched for: images, and numpy files of
/// inputs.
const INPUT_EXTENSIONS: &[&str] =
    &["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "pgm", "ppm", "pnm", "npy", "npz"];

/// How many bundled digits the explorer offers when no images are given.
pub const BUNDLED_INPUTS: usize = 24;

/// An input before classification: its name, pixels and true class if known.
pub type NamedInput = (String, Prepared, Option<usize>);

/// The true class of a file named `…_<class>.<ext>` (as `convscope export-digits` names
/// them), if the suffix is one of the model's class names.
pub fn label_from_name(model: &Model, path: &Path) -> Option<usize> {
    let stem = path.file_stem()?.to_str()?;
    let suffix = stem.rsplit('_').next()?;
    (suffix != stem).then_some(())?;
    model.classes.iter().position(|c| c == suffix)
}

/// Loads `--images` (files, or folders searched for images; fitted to the model's aspect
/// as `fit` says), or the bundled digits when none are given and the model reads 28×28
/// grey digits: the first [`BUNDLED_INPUTS`] of them, or with `mistakes` every validation
/// digit the model gets wrong. A file that cannot be read is skipped; that, and what was
/// changed to fit the others, go to `notes`.
pub fn load_inputs(
    model: &Model,
    images: &[PathBuf],
    fit: Fit,
    mistakes: bool,
    notes: &mut Vec<String>,
) -> Result<Vec<NamedInput>> {
    let inputs = if images.is_empty() {
        bundled_inputs(model, if mistakes { usize::MAX } else { BUNDLED_INPUTS })?
    } else {
        image_inputs(model, images, fit, notes)?
    };
    if !mistakes {
        return Ok(inputs);
    }
    let labelled = inputs.iter().filter(|i| i.2.is_some()).count();
    if labelled == 0 {
        return Err(Error::Invalid(
            "--mistakes needs inputs whose class is known: bundled digits, or files named \
             …_<class>.png"
                .into(),
        ));
    }
    let predicted = predictions(model, &inputs)?;
    let wrong: Vec<NamedInput> = inputs
        .into_iter()
        .zip(predicted)
        .filter(|((.., label), probs)| misclassified(*label, probs))
        .map(|(input, _)| input)
        .collect();
    if wrong.is_empty() {
        return Err(Error::Invalid(format!(
            "the model classifies all {labelled} labelled inputs correctly: nothing for --mistakes"
        )));
    }
    notes.push(format!("{} of {labelled} labelled inputs are misclassified", wrong.len()));
    Ok(wrong)
}

/// Up to `count` bundled validation digits, for models that read 28×28 grey digits.
fn bundled_inputs(model: &Model, count: usize) -> Result<Vec<NamedInput>> {
    if model.input_chw()? != [1, 28, 28] {
        return Err(Error::Invalid(
            "this model does not read 28×28 grey digits: give images with --images DIR|FILE…"
                .into(),
        ));
    }
    let digits = Digits::bundled()?;
    digits
        .validation()
        .take(count)
        .map(|i| {
            let prepared = input::bundled_digit(model, &digits, i, format!("digit #{i}"))?;
            // A digit's label is a class of this model only if it has the ten digits'.
            let label = (model.num_classes() == 10).then(|| digits.label(i));
            Ok((format!("digit #{i}"), prepared, label))
        })
        .collect()
}

/// The image files given to `--images` (each input of a numpy file), folders searched for
/// them. One that cannot be read is skipped with a note ("skipped …: why"), so one bad file
/// does not stop the rest; none readable at all is an error.
fn image_inputs(
    model: &Model,
    images: &[PathBuf],
    fit: Fit,
    notes: &mut Vec<String>,
) -> Result<Vec<NamedInput>> {
    let files = image_files(images)?;
    let mut inputs = Vec::new();
    let mut skipped = Vec::new();
    for path in &files {
        match input::load_file(model, path, fit) {
            Ok(file) => {
                notes.extend(file.note.map(|note| format!("{}: {note}", printable_path(path))));
                let named = label_from_name(model, path);
                for (prepared, label) in file.inputs.into_iter().zip(file.labels) {
                    if let Some(note) = &prepared.adjusted {
                        notes.push(format!("{}: {note}", printable_path(&prepared.source)));
                    }
                    let source = prepared.source.as_path();
                    let name = printable_path(source.file_name().map_or(source, Path::new));
                    inputs.push((name, prepared, label.or(named)));
                }
            }
            Err(e) => skipped.push(format!("skipped {}", crate::error::report(&e))),
        }
    }
    if inputs.is_empty() {
        return Err(Error::Invalid(format!(
            "none of the {} image files could be read: {}",
            files.len(),
            skipped.join("; ")
        )));
    }
    notes.extend(skipped);
    Ok(inputs)
}

/// The image files `images` names: files as they are, folders searched for images (sorted).
pub fn image_files(images: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in images {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|source| Error::Io { path: path.clone(), source })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| INPUT_EXTENSIONS.contains(&e.to_lowercase().as_str()))
                })
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(Error::bad_file(path, "no image files in this folder"));
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Whether the true class `label`, if known, is not the top class of `probs` (none while
/// `probs` is empty: not yet classified).
pub fn misclassified(label: Option<usize>, probs: &[f32]) -> bool {
    label.is_some_and(|label| !probs.is_empty() && label != argmax(probs))
}

/// Inputs per pass when classifying many: memory bounded by the batch rather than the number
/// of inputs (2,000 digits at once would hold 300 MB of conv outputs).
pub const BATCH: usize = 64;

/// The model's probabilities for each input.
pub fn predictions(model: &Model, inputs: &[NamedInput]) -> Result<Vec<Vec<f32>>> {
    let tensors: Vec<&Tensor> = inputs.iter().map(|i| &i.1.tensor).collect();
    predictions_of(model, &tensors)
}

/// The model's probabilities for each prepared input tensor (`[1, C, H, W]`), in passes of
/// [`BATCH`].
pub fn predictions_of(model: &Model, tensors: &[&Tensor]) -> Result<Vec<Vec<f32>>> {
    let mut probs = Vec::with_capacity(tensors.len());
    for chunk in tensors.chunks(BATCH) {
        let batch = Tensor::cat(chunk, 0)?;
        probs.extend(model.predict(&batch)?.to_dtype(DType::F32)?.to_vec2::<f32>()?);
    }
    Ok(probs)
}

/// An input with the model's verdict on it.
#[derive(Clone, Debug)]
pub struct InputItem {
    /// Shown in the list.
    pub name: String,
    /// The prepared input.
    pub prepared: Prepared,
    /// The true class, where known (bundled digits, `…_<class>.png` files).
    pub label: Option<usize>,
    /// The model's probabilities; empty until it is classified (the explorer classifies in
    /// the background).
    pub probs: Vec<f32>,
}

impl InputItem {
    /// Whether the model's probabilities are known.
    pub fn is_classified(&self) -> bool {
        !self.probs.is_empty()
    }

    /// Whether its true class is known and is not the model's top class.
    pub fn misclassified(&self) -> bool {
        misclassified(self.label, &self.probs)
    }

    /// The `n` most probable classes, most probable first.
    pub fn top_classes(&self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.probs.len()).collect();
        let by_probability = |a: &usize, b: &usize| self.probs[*b].total_cmp(&self.probs[*a]);
        if n < order.len() {
            order.select_nth_unstable_by(n, by_probability);
            order.truncate(n);
        }
        order.sort_by(by_probability);
        order
    }
}

/// Prepares `inputs` for `model` again (its dtype and input description), not yet
/// classified.
pub fn prepare(model: &Model, inputs: Vec<NamedInput>) -> Result<Vec<InputItem>> {
    inputs
        .into_iter()
        .map(|(name, prepared, label)| {
            let tensor = input::normalise(model, &prepared.pixels)?;
            let prepared = Prepared { tensor, ..prepared };
            Ok(InputItem { name, prepared, label, probs: Vec::new() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_file_is_skipped_with_a_note_and_only_bad_files_are_an_error() {
        let model = crate::data::sample::model().unwrap();
        let dir = tempfile::tempdir().unwrap();
        image::GrayImage::from_pixel(28, 28, image::Luma([0]))
            .save(dir.path().join("a_3.png"))
            .unwrap();
        std::fs::write(dir.path().join("b.png"), b"not a png").unwrap();
        let mut notes = Vec::new();
        let inputs =
            load_inputs(&model, &[dir.path().to_path_buf()], Fit::Crop, false, &mut notes).unwrap();
        assert_eq!(inputs.len(), 1);
        assert_eq!((inputs[0].0.as_str(), inputs[0].2), ("a_3.png", Some(3)));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("skipped ") && notes[0].contains("b.png: not a readable image")
        );
        let bad = dir.path().join("b.png");
        let error = load_inputs(&model, &[bad], Fit::Crop, false, &mut Vec::new()).unwrap_err();
        assert!(error.to_string().starts_with("none of the 1 image files could be read"));
    }
}
