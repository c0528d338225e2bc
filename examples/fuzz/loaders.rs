//! Fuzz targets for the model loaders (convscope's safetensors, ONNX, Keras `.h5` and
//! `.keras`) and the image input path. Seeds are the repository's own fixtures; each case
//! is loaded and, when it loads, run forward on an input of the model's size.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use convscope::Model;
use convscope::formats::onnx::proto::ModelProto;
use prost::Message;

use super::harness::Target;
use super::mutate::Mutator;

/// The loader targets.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "native",
            extension: "safetensors",
            seeds: native_seeds,
            mutate: native_header,
            run: |b| load_and_run(b, "case.safetensors"),
        },
        Target {
            name: "onnx",
            extension: "onnx",
            seeds: || files(&["tests/fixtures/onnx", "tests/fixtures/torch"], &["onnx"]),
            mutate: onnx_integers,
            run: |b| load_and_run(b, "case.onnx"),
        },
        Target {
            name: "h5",
            extension: "h5",
            seeds: || files(&["tests/fixtures/keras"], &["h5"]),
            mutate: |m, bytes| m.same_length_number(bytes),
            run: |b| load_and_run(b, "case.h5"),
        },
        Target {
            name: "keras",
            extension: "keras",
            seeds: || files(&["tests/fixtures/keras"], &["keras"]),
            mutate: keras_config,
            run: |b| load_and_run(b, "case.keras"),
        },
        Target {
            name: "image",
            extension: "img",
            seeds: image_seeds,
            mutate: |_, _| None,
            run: image_and_run,
        },
    ]
}

fn repository(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The files in `folders` (of the repository) with one of `extensions`, in name order.
/// ONNX files whose weights are in a side file are left out: a case is one file.
fn files(folders: &[&str], extensions: &[&str]) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = folders
        .iter()
        .flat_map(|f| std::fs::read_dir(repository(f)).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| extensions.iter().any(|x| e == *x)))
        .filter(|p| !p.with_extension("onnx.data").exists())
        .collect();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// A folder of its own for the cases (an ONNX file looks for external data beside it).
fn case_folder() -> Result<&'static Path, String> {
    static FOLDER: OnceLock<Result<tempfile::TempDir, String>> = OnceLock::new();
    match FOLDER.get_or_init(|| tempfile::tempdir().map_err(|e| format!("a temp folder: {e}"))) {
        Ok(dir) => Ok(dir.path()),
        Err(e) => Err(e.clone()),
    }
}

/// Loads `bytes` as a file called `name` and runs the model on zeros.
fn load_and_run(bytes: &[u8], name: &str) -> Result<(), String> {
    let path = case_folder()?.join(name);
    let model =
        convscope::formats::from_bytes(bytes, &path).map_err(|e| convscope::error::report(&e))?;
    let shape: Vec<usize> = [1].iter().chain(model.graph().input_shape()).copied().collect();
    let x = Tensor::zeros(shape, model.dtype(), &Device::Cpu).map_err(|e| e.to_string())?;
    forward(&model, &x)
}

/// Mult-adds above which a loaded model is not run: a mutated size can make a valid model whose
/// forward takes seconds (1 G mult-adds is about 1 s on the 2-core machine), which would read as
/// a hang under load without being one.
const FORWARD_WORK_LIMIT: u64 = 200_000_000;

fn forward(model: &Model, x: &Tensor) -> Result<(), String> {
    let graph = model.graph();
    let work = (0..graph.nodes().len()).fold(0u64, |sum, i| sum.saturating_add(graph.mult_adds(i)));
    if work > FORWARD_WORK_LIMIT {
        return Ok(());
    }
    model.predict(x).map(drop).map_err(|e| convscope::error::report(&e))
}

/// The sample model, and each small ONNX and Keras fixture that loads, as convscope files.
fn native_seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![convscope::data::sample::bytes().to_vec()];
    let converted = files(&["tests/fixtures/onnx"], &["onnx"])
        .into_iter()
        .map(|b| (b, "m.onnx"))
        .chain(files(&["tests/fixtures/keras"], &["keras"]).into_iter().map(|b| (b, "m.keras")));
    let Ok(folder) = case_folder() else { return seeds };
    let path = folder.join("seed.safetensors");
    for (bytes, name) in converted {
        if let Ok(model) = convscope::formats::from_bytes(&bytes, Path::new(name))
            && convscope::formats::native::save(&model, &path).is_ok()
            && let Ok(saved) = std::fs::read(&path)
        {
            seeds.push(saved);
        }
    }
    seeds
}

/// A number in a safetensors file's JSON header changed (its length prefix kept right).
fn native_header(m: &mut Mutator, bytes: &[u8]) -> Option<Vec<u8>> {
    let len = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = std::str::from_utf8(bytes.get(8..8usize.checked_add(len)?)?).ok()?;
    let header = m.json_number(header)?;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&bytes[8 + len..]);
    Some(out)
}

/// One integer of an ONNX file (a dimension, an attribute, an opset, integer tensor data)
/// set to an interesting value.
fn onnx_integers(m: &mut Mutator, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut model = ModelProto::decode(bytes).ok()?;
    let mut slots: Vec<&mut i64> = vec![&mut model.ir_version];
    slots.extend(model.opset_import.iter_mut().map(|o| &mut o.version));
    if let Some(graph) = model.graph.as_mut() {
        let infos = graph.input.iter_mut().chain(&mut graph.output).chain(&mut graph.value_info);
        for info in infos {
            let shape = info.r#type.as_mut().and_then(|t| t.tensor_type.as_mut());
            if let Some(shape) = shape.and_then(|t| t.shape.as_mut()) {
                slots.extend(shape.dim.iter_mut().filter_map(|d| d.dim_value.as_mut()));
            }
        }
        for t in &mut graph.initializer {
            slots.extend(t.dims.iter_mut().chain(&mut t.int64_data));
        }
        for attribute in graph.node.iter_mut().flat_map(|n| &mut n.attribute) {
            slots.push(&mut attribute.i);
            slots.extend(&mut attribute.ints);
            if let Some(t) = attribute.t.as_mut() {
                slots.extend(t.dims.iter_mut().chain(&mut t.int64_data));
            }
        }
    }
    let pick = m.below(slots.len());
    let value = m.interesting().clamp(i128::from(i64::MIN), i128::from(i64::MAX));
    *slots[pick] = value as i64;
    Some(model.encode_to_vec())
}

/// A number in a `.keras` file's `config.json` changed (the zip rewritten around it).
fn keras_config(m: &mut Mutator, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).ok()?;
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).ok()?;
        let name = entry.name().ok()?.to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).ok()?;
        if name == "config.json" {
            data = m.json_number(std::str::from_utf8(&data).ok()?)?.into_bytes();
        }
        out.start_file(name, stored).ok()?;
        out.write_all(&data).ok()?;
    }
    Some(out.finish().ok()?.into_inner())
}

/// A few bundled digits as PNG, and one of them in every other format the input path
/// reads.
fn image_seeds() -> Vec<Vec<u8>> {
    let mut seeds = files(&["sample_models/digits"], &["png"]);
    seeds.truncate(4);
    let Some(digit) = seeds.first().and_then(|png| image::load_from_memory(png).ok()) else {
        return seeds;
    };
    use image::ImageFormat::{Bmp, Gif, Jpeg, Pnm, Tiff, WebP};
    for format in [Jpeg, Bmp, Gif, Pnm, Tiff, WebP] {
        let mut encoded = std::io::Cursor::new(Vec::new());
        let image = if matches!(format, Gif | WebP) {
            image::DynamicImage::ImageRgba8(digit.to_rgba8())
        } else {
            digit.clone()
        };
        if image.write_to(&mut encoded, format).is_ok() {
            seeds.push(encoded.into_inner());
        }
    }
    seeds
}

/// Decodes `bytes` as an input for the sample model and runs it.
fn image_and_run(bytes: &[u8]) -> Result<(), String> {
    static SAMPLE: OnceLock<Result<Model, String>> = OnceLock::new();
    let model = SAMPLE
        .get_or_init(|| convscope::data::sample::model().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| format!("the sample model: {e}"))?;
    let prepared = convscope::data::input::image_from_bytes(
        model,
        bytes,
        Path::new("case"),
        Default::default(),
    )
    .map_err(|e| convscope::error::report(&e))?;
    forward(model, &prepared.tensor)
}
