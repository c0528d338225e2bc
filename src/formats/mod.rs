//! Model files in, one [`load`] for all: the reader is chosen by the file's first bytes
//! (the extension only where the content cannot tell), so the model core never names a
//! format and each reader only builds a [`Model`].
//!
//! - [`native`]: convscope's own safetensors file (weights + a JSON graph in the metadata).
//! - [`onnx`]: what PyTorch's exporters and tf2onnx write.
//! - [`keras`]: Keras `.h5` and `.keras`, read directly.
//!
//! Files are memory-mapped ([`mapped`]): each reader copies a weight once, into the model's
//! f32 tensor, and holds nothing else of the file's size.

pub mod keras;
pub mod mapped;
pub mod native;
pub mod onnx;

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::Model;
use mapped::FileBytes;

/// What the user chooses about a model where its file leaves a choice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Height and width for an input the file leaves open (`--input-size`); a file that
    /// fixes them must agree.
    pub input_size: Option<[usize; 2]>,
    /// The output to explain, of a model with several (`--head`).
    pub output: Option<String>,
}

/// The note for a model whose file computes in another float type than float32 (`why`
/// says where the file says so): convscope computes in float32 whatever the file's type.
fn other_precision_note(why: &str) -> String {
    format!(
        "the model computes in another float type than float32 ({why}); convscope computes in \
         float32 throughout, so its numbers differ from such a runtime's by that type's rounding"
    )
}

/// Reads a model file, choosing the reader by content.
pub fn load(path: &Path) -> Result<Model> {
    load_with(path, &Options::default())
}

/// [`load`] with the user's choices.
pub fn load_with(path: &Path, options: &Options) -> Result<Model> {
    from_file_with(&open(path)?, path, options)
}

/// The bytes of the file at `path`, mapped (or read where it cannot be mapped), for
/// [`from_file_with`].
pub fn open(path: &Path) -> Result<FileBytes> {
    FileBytes::open(path).map_err(|source| Error::Io { path: path.into(), source })
}

/// Reads a model from the bytes of a file, choosing the reader by its first bytes (the
/// extension only where the content cannot tell); `path` names the file in errors.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Model> {
    from_bytes_with(bytes, path, &Options::default())
}

/// [`from_bytes`] with the user's choices. The bytes are copied once; a file is better
/// read with [`open`] and [`from_file_with`].
pub fn from_bytes_with(bytes: &[u8], path: &Path, options: &Options) -> Result<Model> {
    from_file_with(&FileBytes::from(bytes.to_vec()), path, options)
}

/// Reads a model from a file's bytes (see [`open`]), choosing the reader by its first
/// bytes; `path` names the file in errors (and external ONNX data is looked for beside it).
pub fn from_file_with(file: &FileBytes, path: &Path, options: &Options) -> Result<Model> {
    let bytes: &[u8] = file;
    let checked = |model: Model| match (options.input_size, model.input_chw()) {
        (Some(size), Ok([_, h, w])) if size != [h, w] => Err(Error::bad_file(
            path,
            format!(
                "its input is fixed at {h}×{w}; --input-size {}x{} does not fit it",
                size[0], size[1]
            ),
        )),
        _ => match &options.output {
            // convscope's own and Keras files have one output.
            Some(name) if *name != model.graph().nodes()[model.graph().output_node()].name => {
                Err(Error::bad_file(path, format!("the model has one output, not '{name}'")))
            }
            _ => Ok(model),
        },
    };
    match FileKind::of(bytes, path) {
        FileKind::Native => native::from_file(file, path).and_then(checked),
        FileKind::Keras => keras::from_file(file, path).and_then(checked).map(|m| named(m, path)),
        FileKind::Onnx => onnx::from_file_with(file, path, options).map(|m| named(m, path)),
        FileKind::Unknown => Err(Error::bad_file(
            path,
            "not a convscope model, ONNX or Keras file (convscope reads its own \
             .safetensors, .onnx, .h5 and .keras)",
        )),
    }
}

/// Files beside a model that may name its classes, one per line: Teachable Machine puts
/// `labels.txt` (`0 Class 1` …) beside its `keras_model.h5`.
const CLASS_FILES: [&str; 3] = ["labels.txt", "classes.txt", "class_names.txt"];

/// Largest class-name file read beside a model.
const MAX_CLASS_FILE: u64 = 16 << 20;

/// ImageNet-1k's class names in output order, as torchvision names them
/// (`scripts/make_imagenet_classes.py` writes the file).
const IMAGENET_CLASSES: &str = include_str!("imagenet_classes.txt");

/// `model` read from another framework's file at `path`, its classes named where the file
/// left them numbered: by a file beside it, else ImageNet-1k's names for 1,000 outputs.
fn named(model: Model, path: &Path) -> Model {
    with_imagenet_classes(with_classes_beside(model, path))
}

/// Whether the model's classes are its outputs' numbers: its file names none.
fn numbered(model: &Model) -> bool {
    model.classes.iter().enumerate().all(|(i, name)| *name == i.to_string())
}

/// `model` with ImageNet-1k's class names where it has 1,000 numbered outputs (or 1,001:
/// TensorFlow's slim models put a background class first), what nearly every model of that
/// many outputs was trained on, and a note that says so.
fn with_imagenet_classes(mut model: Model) -> Model {
    let background = match model.num_classes() {
        1000 => false,
        1001 => true,
        _ => return model,
    };
    if !numbered(&model) {
        return model;
    }
    let first = background.then(|| "background".to_string());
    model.classes = first.into_iter().chain(IMAGENET_CLASSES.lines().map(String::from)).collect();
    let (count, after) = match background {
        true => ("1,001", ", after a background class"),
        false => ("1,000", ""),
    };
    model.notes.push(format!(
        "the file names none of its {count} classes: named as ImageNet-1k's{after}, which \
         nearly every model of {count} outputs is trained on (--classes FILE to name them \
         otherwise)"
    ));
    model
}

/// `model` with its classes named by a file beside it ([`CLASS_FILES`], the first there),
/// where its own file left them numbered and that file has one name per output; a note says
/// which file named them, or why it did not.
fn with_classes_beside(mut model: Model, path: &Path) -> Model {
    if !numbered(&model) {
        return model;
    }
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // A regular file only, read whole: not a FIFO that would block, nor a link out.
    let readable = |candidate: &Path| {
        std::fs::symlink_metadata(candidate).is_ok_and(|m| m.is_file() && m.len() <= MAX_CLASS_FILE)
    };
    let Some(candidate) = CLASS_FILES.iter().map(|name| folder.join(name)).find(|c| readable(c))
    else {
        return model;
    };
    let shown = crate::model::printable_path(&candidate);
    match std::fs::read_to_string(&candidate).map(|text| class_lines(&text)) {
        Ok(names) if names.len() == model.num_classes() => {
            model.classes = names.iter().map(|n| crate::model::printable(n)).collect();
            model.notes.push(format!(
                "class names from {shown}, beside the model (--classes FILE to name them otherwise)"
            ));
        }
        Ok(names) => model.notes.push(format!(
            "{shown}, beside the model, has {} names for {} outputs: not used",
            names.len(),
            model.num_classes()
        )),
        Err(e) => model.notes.push(format!("{shown}, beside the model, is not read: {e}")),
    }
    model
}

/// Class names from a text file: one per non-empty line, trimmed, less an index in front
/// where every line starts with its own (`0 cat`, `1: dog`; Teachable Machine's
/// `labels.txt`).
pub fn class_lines(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let unindexed = |(i, line): (usize, &&str)| {
        let rest = line.strip_prefix(&i.to_string())?;
        let rest = rest.strip_prefix(':').unwrap_or(rest);
        rest.starts_with(char::is_whitespace).then(|| rest.trim().to_string())
    };
    match lines.iter().enumerate().map(unindexed).collect::<Option<Vec<String>>>() {
        Some(names) if names.iter().all(|n| !n.is_empty()) => names,
        _ => lines.into_iter().map(String::from).collect(),
    }
}

/// The model file formats, as told apart by [`FileKind::of`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileKind {
    /// convscope's safetensors file (or another safetensors file, which its reader names).
    Native,
    /// A Keras `.h5` (HDF5) or `.keras` (zip).
    Keras,
    /// An ONNX protobuf: it opens with field 1, `ir_version`, as every ONNX writer orders it.
    Onnx,
    /// Nothing convscope reads.
    Unknown,
}

impl FileKind {
    fn of(bytes: &[u8], path: &Path) -> FileKind {
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        // safetensors: an 8-byte little-endian header length, then the JSON header.
        let safetensors = bytes.len() > 8 && bytes[8] == b'{';
        if safetensors || extension == "safetensors" {
            FileKind::Native
        } else if keras::is_keras(bytes) {
            FileKind::Keras
        } else if bytes.first() == Some(&0x08) || extension == "onnx" {
            FileKind::Onnx
        } else {
            FileKind::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::class_lines;

    #[test]
    fn class_lines_drop_their_own_indices_only() {
        let names = |text: &str| class_lines(text);
        assert_eq!(names("0 Class 1\n1 Class 2\n\n"), ["Class 1", "Class 2"]);
        assert_eq!(names("  0: cat\n1:\tdog  \n"), ["cat", "dog"]);
        // Not every line its own index: the lines as they are.
        assert_eq!(names("0 cat\n2 dog"), ["0 cat", "2 dog"]);
        assert_eq!(names("n01440764 tench\n10 dog"), ["n01440764 tench", "10 dog"]);
        assert_eq!(names("0\n1\n"), ["0", "1"]);
        assert_eq!(names("10x\n"), ["10x"]);
        assert_eq!(names("0cats\n1dogs"), ["0cats", "1dogs"]);
    }
}
