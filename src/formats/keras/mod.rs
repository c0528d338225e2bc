//! Keras models read directly, in pure Rust: legacy `.h5` files (Keras 2, and Keras 3's
//! `model.save("x.h5")`) and Keras 3 `.keras` zips (`config.json` + `model.weights.h5`).
//!
//! The architecture comes from the model config, nested models flattened into layers
//! named `outer/inner`; weights move from Keras's channels-last layouts to the engine's
//! channels-first ones. Rescaling and Normalization layers right after the input become
//! the input description: such a model is fed raw pixels 0..255, so `Rescaling(scale,
//! offset)` maps them onto `[offset, 255·scale + offset]` and `Normalization(mean,
//! variance)` gives the mean and `sqrt(variance)` as std (a Normalization alone maps
//! pixels onto 0..255). Without them the input range is [0, 1].

mod config;
mod convert;
mod hdf5;
mod store;

use std::io::{Cursor, Read};
use std::path::Path;

use crate::error::{Error, Result};
use crate::formats::mapped::FileBytes;
use crate::model::{FlatOrder, Model};

/// The first bytes of an HDF5 file (`.h5`).
pub const HDF5_MAGIC: &[u8] = b"\x89HDF\r\n\x1a\n";
/// The first bytes of a zip archive (`.keras`).
pub const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// Whether `bytes` start like a file this reader takes (HDF5 or zip).
pub fn is_keras(bytes: &[u8]) -> bool {
    bytes.starts_with(HDF5_MAGIC) || bytes.starts_with(ZIP_MAGIC)
}

/// Reads a Keras model from the bytes of a `.h5` or `.keras` file; `path` only names the
/// file in errors.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Model> {
    from_file(&FileBytes::from(bytes.to_vec()), path)
}

/// [`from_bytes`] for a mapped file: HDF5 is read in place, each weight copied out once.
pub fn from_file(file: &FileBytes, path: &Path) -> Result<Model> {
    let (json, store, keras3) = if file.starts_with(HDF5_MAGIC) {
        legacy_h5(file, path)?
    } else if file.starts_with(ZIP_MAGIC) {
        let (json, store) = keras_zip(file, path)?;
        (json, store, true)
    } else {
        return Err(Error::bad_file(path, "neither a Keras .h5 (HDF5) nor a .keras (zip) file"));
    };
    let in_file = |e: Error| match e {
        Error::BadFile { .. } => e,
        other => Error::bad_file(path, other.to_string()),
    };
    let mut arch = config::Architecture::parse(&json).map_err(in_file)?;
    arch.keras3 = keras3;
    let (graph, weights, input) = convert::build(&arch, &store).map_err(in_file)?;
    let precision = arch.other_precision();
    let mut model = Model::new(arch.name, graph, weights, input, Vec::new()).map_err(in_file)?;
    model.notes.extend(precision.as_deref().map(super::other_precision_note));
    model
        .with_class_head()
        .and_then(|model| model.with_image_input(FlatOrder::ChannelsLast))
        .map_err(in_file)
}

/// The model config, the weights and whether Keras 3 wrote the file.
fn legacy_h5(file: &FileBytes, path: &Path) -> Result<(String, store::Store, bool)> {
    let h5 = hdf5::H5::open(file.clone(), path)?;
    let json = h5.attr_string("", "model_config")?.ok_or_else(|| {
        Error::bad_file(
            path,
            "an HDF5 file without a model architecture (no 'model_config'): weights only? \
             Save the whole model with model.save()",
        )
    })?;
    let keras3 = h5.attr_string("", "keras_version")?.is_some_and(|v| v.starts_with('3'));
    Ok((json, store::Store::Legacy(h5), keras3))
}

fn keras_zip(zip: &FileBytes, path: &Path) -> Result<(String, store::Store)> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        Error::bad_file(path, format!("{what}: {e} (truncated or corrupt .keras file?)"))
    };
    let bytes: &[u8] = zip;
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| bad("not a readable zip", &e))?;
    let mut entry = |name: &str| -> Result<FileBytes> {
        let mut file = archive.by_name(name).map_err(|e| bad(&format!("entry '{name}'"), &e))?;
        // Keras stores its entries uncompressed: such an entry is read in place.
        let start = file.data_start().and_then(|s| usize::try_from(s).ok());
        if let Some(start) = start
            && file.compression() == zip::CompressionMethod::Stored
            && !file.encrypted()
            && file.size() == file.compressed_size()
            && let Some(end) = usize::try_from(file.size()).ok().and_then(|n| start.checked_add(n))
            && end <= zip.len()
        {
            return Ok(zip.slice(start..end));
        }
        // A compressed entry is read up to the size it declares, which the memory budget
        // bounds: a decompression bomb stops there.
        let declared = file.size();
        let budget = crate::runtime::memory_budget();
        if declared > budget {
            return Err(bad(
                &format!("entry '{name}'"),
                &format!(
                    "it declares {}, more than the memory budget of {} (--max-memory)",
                    crate::runtime::human_size(declared.into()),
                    crate::runtime::human_size(budget.into())
                ),
            ));
        }
        let mut data = Vec::new();
        file.by_ref()
            .take(declared.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| bad(&format!("entry '{name}'"), &e))?;
        if data.len() as u64 != declared {
            return Err(bad(
                &format!("entry '{name}'"),
                &format!("{} bytes where it declares {declared}", data.len()),
            ));
        }
        Ok(FileBytes::from(data))
    };
    let json = String::from_utf8(entry("config.json")?.to_vec())
        .map_err(|e| bad("entry 'config.json'", &e))?;
    let weights = hdf5::H5::open(entry("model.weights.h5")?, path)?;
    Ok((json, store::Store::v3(weights)?))
}
