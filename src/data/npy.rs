//! Model inputs from numpy's `.npy` files: the tensor a training script feeds its model
//! (`np.save("x.npy", batch.numpy())`), for inputs no image file holds — already prepared,
//! of any number of channels (multispectral bands, stacked frames), or a dataset's arrays
//! as they are (`x_test[:16]`).
//!
//! A `.npz` (`np.savez`, Keras's `mnist.npz`) gives the inputs of its array that holds the
//! model's (the test set's where several do), and their true classes from the integer
//! array of as many values beside it (`y_test` beside `x_test`).
//!
//! A float array is the model's input itself: given as it is, no scaling or normalisation.
//! An integer array is pixels (0..255, or 0..65,535 for `uint16`), prepared as an image's
//! are. Either way it must have the model's height and width (nothing is resized): `C×H×W`,
//! `H×W×C`, `H×W` for one channel, or a batch of those (`N×…`, each its own input).

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::data::input::{self, FileInputs, Prepared};
use crate::error::{Error, Result};
use crate::model::Model;

/// A decoded `.npy` array, in C order.
#[derive(Debug, PartialEq)]
pub struct Array {
    /// Its dimensions.
    pub shape: Vec<usize>,
    /// Its values.
    pub values: Values,
}

/// An array's values, by what they mean to a model.
#[derive(Debug, PartialEq)]
pub enum Values {
    /// Floats: the model's input values.
    Float(Vec<f64>),
    /// Integers: pixels.
    Pixels {
        /// The pixels as stored.
        values: Vec<u16>,
        /// The brightest pixel: 255, or 65,535 for `uint16` arrays.
        full: u16,
    },
}

/// Whether `path` names a numpy file of inputs: one array (`.npy`) or several (`.npz`).
pub fn is_array_file(path: &Path) -> bool {
    has_extension(path, "npy") || has_extension(path, "npz")
}

fn has_extension(path: &Path, extension: &str) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case(extension))
}

/// The element types read, from a header's `descr`: the byte order character and the code.
#[derive(Clone, Copy)]
enum Element {
    Float { bytes: usize },
    Unsigned { bytes: usize },
    Signed { bytes: usize },
}

impl Element {
    fn parse(descr: &str) -> std::result::Result<(Element, bool), String> {
        let (order, code) = descr.split_at(descr.len().min(1));
        let big_endian = match order {
            "<" | "|" | "=" => false,
            ">" => true,
            _ => return Err(format!("unknown element type '{descr}'")),
        };
        let element = match code {
            "f2" => Element::Float { bytes: 2 },
            "f4" => Element::Float { bytes: 4 },
            "f8" => Element::Float { bytes: 8 },
            "u1" => Element::Unsigned { bytes: 1 },
            "u2" => Element::Unsigned { bytes: 2 },
            "u4" => Element::Unsigned { bytes: 4 },
            "u8" => Element::Unsigned { bytes: 8 },
            "i1" => Element::Signed { bytes: 1 },
            "i2" => Element::Signed { bytes: 2 },
            "i4" => Element::Signed { bytes: 4 },
            "i8" => Element::Signed { bytes: 8 },
            _ => {
                return Err(format!(
                    "elements of type '{descr}': save the input as float32 (the model's values) \
                     or uint8 (pixels)"
                ));
            }
        };
        Ok((element, big_endian))
    }

    fn bytes(self) -> usize {
        match self {
            Element::Float { bytes } | Element::Unsigned { bytes } | Element::Signed { bytes } => {
                bytes
            }
        }
    }
}

/// The text of `key`'s value in a header dict (`{'descr': '<f4', 'shape': (2, 3), }`), up
/// to the next top-level comma or the closing brace.
fn header_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let quoted = [format!("'{key}'"), format!("\"{key}\"")];
    let start = quoted.iter().find_map(|k| header.find(k.as_str()).map(|at| at + k.len()))?;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0usize;
    let end = rest
        .char_indices()
        .find(|&(_, ch)| match ch {
            '(' | '[' => {
                depth += 1;
                false
            }
            ')' | ']' => {
                depth = depth.saturating_sub(1);
                false
            }
            ',' | '}' => depth == 0,
            _ => false,
        })
        .map_or(rest.len(), |(at, _)| at);
    Some(rest[..end].trim())
}

/// What a `.npy` header says: the array's shape and how its values are stored.
struct Header {
    shape: Vec<usize>,
    element: Element,
    big_endian: bool,
    fortran: bool,
}

impl Header {
    /// The values, as 8 little-endian bytes each (their meaning is `element`'s).
    fn words<'d>(&self, data: &'d [u8]) -> impl Iterator<Item = [u8; 8]> + 'd {
        let big_endian = self.big_endian;
        data.chunks_exact(self.element.bytes()).map(move |word| {
            let mut le = [0u8; 8];
            le[..word.len()].copy_from_slice(word);
            if big_endian {
                le[..word.len()].reverse();
            }
            le
        })
    }

    /// Integer values as they are (None for floats).
    fn integers(&self, data: &[u8]) -> Option<Vec<i64>> {
        let (bytes, signed) = match self.element {
            Element::Float { .. } => return None,
            Element::Unsigned { bytes } => (bytes, false),
            Element::Signed { bytes } => (bytes, true),
        };
        let shift = 64 - 8 * bytes as u32;
        let integer = move |w: [u8; 8]| match signed {
            // Sign-extended from `bytes`.
            true => (i64::from_le_bytes(w) << shift) >> shift,
            false => i64::try_from(u64::from_le_bytes(w)).unwrap_or(i64::MAX),
        };
        Some(self.words(data).map(integer).collect())
    }
}

/// Reads a `.npy` file's header (format 1.0, 2.0 or 3.0) and finds its values: the header
/// and exactly the bytes its shape needs; `source` names the file in errors.
fn parse<'b>(bytes: &'b [u8], source: &Path) -> Result<(Header, &'b [u8])> {
    let bad = |why: String| Error::bad_file(source, why);
    let body = bytes
        .strip_prefix(b"\x93NUMPY")
        .ok_or_else(|| bad("not a .npy file (no \\x93NUMPY magic)".into()))?;
    let (header_len, rest) = match body {
        [1, _, a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        [2 | 3, _, a, b, c, d, rest @ ..] => (u32::from_le_bytes([*a, *b, *c, *d]) as usize, rest),
        [major, ..] => return Err(bad(format!(".npy format version {major} is not one of 1–3"))),
        [] => return Err(bad("a .npy file cut off in its header".into())),
    };
    let header =
        rest.get(..header_len).ok_or_else(|| bad("a .npy file cut off in its header".into()))?;
    let header =
        std::str::from_utf8(header).map_err(|_| bad("a .npy header that is not text".into()))?;
    let data = &rest[header_len..];

    let field = |key: &str| {
        header_value(header, key).ok_or_else(|| bad(format!("the .npy header has no '{key}'")))
    };
    let descr = field("descr")?.trim_matches(|c| c == '\'' || c == '"');
    let (element, big_endian) = Element::parse(descr).map_err(&bad)?;
    let fortran = match field("fortran_order")? {
        "True" => true,
        "False" => false,
        other => return Err(bad(format!("fortran_order is '{other}', not True or False"))),
    };
    let shape_text = field("shape")?;
    let shape = shape_text
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| bad(format!("a shape '{shape_text}' that is not a tuple")))?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|d| {
            d.parse::<usize>().map_err(|_| bad(format!("a shape '{shape_text}' of non-numbers")))
        })
        .collect::<Result<Vec<usize>>>()?;

    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad(format!("a shape {shape:?} too large to hold")))?;
    let needed =
        count.checked_mul(element.bytes()).filter(|&n| n <= data.len()).ok_or_else(|| {
            bad(format!(
                "cut off: its shape {shape:?} needs {count} values, the file holds {}",
                data.len() / element.bytes()
            ))
        })?;
    Ok((Header { shape, element, big_endian, fortran }, &data[..needed]))
}

/// Decodes a `.npy` file's bytes (format 1.0, 2.0 or 3.0; C or Fortran order; either byte
/// order); `source` names the file in errors.
pub fn decode(bytes: &[u8], source: &Path) -> Result<Array> {
    let (header, data) = parse(bytes, source)?;
    let values = match (header.element, header.integers(data)) {
        (Element::Float { bytes: 2 }, _) => Values::Float(
            header.words(data).map(|w| half::f16::from_le_bytes([w[0], w[1]]).to_f64()).collect(),
        ),
        (Element::Float { bytes: 4 }, _) => Values::Float(
            header
                .words(data)
                .map(|w| f64::from(f32::from_le_bytes([w[0], w[1], w[2], w[3]])))
                .collect(),
        ),
        (_, None) => Values::Float(header.words(data).map(f64::from_le_bytes).collect()),
        (element, Some(integers)) => {
            let sixteen_bits = matches!(element, Element::Unsigned { bytes: 2 });
            let full: u16 = if sixteen_bits { u16::MAX } else { u8::MAX.into() };
            let values = integers
                .into_iter()
                .map(|wide| {
                    u16::try_from(wide).ok().filter(|&v| v <= full).ok_or_else(|| {
                        Error::bad_file(
                            source,
                            format!(
                                "holds the integer {wide}: integer inputs are pixels from 0 to \
                                 {full} (save the model's input values as float32)"
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<u16>>>()?;
            Values::Pixels { values, full }
        }
    };
    let mut array = Array { shape: header.shape, values };
    if header.fortran {
        array.reorder_from_fortran();
    }
    Ok(array)
}

impl Array {
    /// Reorders values stored in Fortran order (the first index varying fastest) to C order.
    fn reorder_from_fortran(&mut self) {
        let shape = self.shape.clone();
        let reorder = |values: &mut dyn FnMut(usize, usize)| {
            let mut index = vec![0usize; shape.len()];
            let count: usize = shape.iter().product();
            for c_at in 0..count {
                let f_at = index.iter().zip(&shape).rev().fold(0, |at, (&i, &d)| at * d + i);
                values(c_at, f_at);
                // The next C-order index: the last axis fastest.
                for axis in (0..shape.len()).rev() {
                    index[axis] += 1;
                    if index[axis] < shape[axis] {
                        break;
                    }
                    index[axis] = 0;
                }
            }
        };
        match &mut self.values {
            Values::Float(v) => {
                let stored = v.clone();
                reorder(&mut |c_at, f_at| v[c_at] = stored[f_at]);
            }
            Values::Pixels { values: v, .. } => {
                let stored = v.clone();
                reorder(&mut |c_at, f_at| v[c_at] = stored[f_at]);
            }
        }
    }

    /// The value at flat index `i` as f64: a model value, or a pixel in 0..1.
    fn value(&self, i: usize) -> f64 {
        match &self.values {
            Values::Float(v) => v[i],
            Values::Pixels { values, full } => f64::from(values[i]) / f64::from(*full),
        }
    }
}

/// How an array's axes hold a model's `[C, H, W]` inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    /// Inputs in the array.
    count: usize,
    /// Channels last (`H×W×C`), else first.
    channels_last: bool,
}

/// The layout in which `shape` holds inputs of `[c, h, w]`, if any: `C×H×W`, then `H×W×C`,
/// each alone or as a batch; `H×W` and a batch of `H×W` where `c` is 1. A signal's (`h` 1,
/// a 1-D CNN's input) also without its one row: `C×L`, then `L×C`, and `L` where `c` is 1,
/// each alone or as a batch.
fn layout(shape: &[usize], [c, h, w]: [usize; 3]) -> Option<Layout> {
    let first = |n| Layout { count: n, channels_last: false };
    let last = |n| Layout { count: n, channels_last: true };
    let signal = h == 1;
    match *shape {
        [l] if signal && c == 1 && l == w => Some(first(1)),
        [a, b] if signal && [a, b] == [c, w] => Some(first(1)),
        [a, b] if signal && [a, b] == [w, c] => Some(last(1)),
        [n, l] if signal && c == 1 && l == w => Some(first(n)),
        [n, a, b] if signal && [a, b] == [c, w] => Some(first(n)),
        [n, a, b] if signal && [a, b] == [w, c] => Some(last(n)),
        [a, b] if c == 1 && [a, b] == [h, w] => Some(first(1)),
        [n, a, b] if c == 1 && [a, b] == [h, w] => Some(first(n)),
        [a, b, d] if [a, b, d] == [c, h, w] => Some(first(1)),
        [a, b, d] if [a, b, d] == [h, w, c] => Some(last(1)),
        [n, a, b, d] if [a, b, d] == [c, h, w] => Some(first(n)),
        [n, a, b, d] if [a, b, d] == [h, w, c] => Some(last(n)),
        _ => None,
    }
}

/// The height and width a numpy file's inputs have, for a model that leaves its size
/// open: the last two axes of `H×W` and of a channels-first array, the two before the last
/// of a channels-last one (told apart by the channels being the shorter end), `1×L` of a
/// one-channel signal `L` (a signal `C×L`'s width is its length); of a `.npz`, its first
/// array of two axes or more.
pub fn spatial_size(path: &Path) -> Result<[usize; 2]> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.into(), source })?;
    let shape = if has_extension(path, "npz") {
        let members = npz_members(&bytes, path)?;
        let shapes = members.iter().filter_map(|(_, b)| parse(b, path).ok().map(|(h, _)| h.shape));
        shapes.into_iter().find(|s| s.len() >= 2).unwrap_or_default()
    } else {
        parse(&bytes, path)?.0.shape
    };
    match *shape.as_slice() {
        // A signal of one channel: its length.
        [l] => Ok([1, l]),
        [h, w] => Ok([h, w]),
        [.., a, h, w] if a <= w => Ok([h, w]),
        [.., h, w, _] => Ok([h, w]),
        _ => Err(Error::bad_file(path, format!("an array of shape {shape:?} is no image"))),
    }
}

/// Reads the inputs a numpy file holds for `model`: each image of an array's batch, named
/// `<file>[i]` when there are several; of a `.npz`, see the module's description.
pub fn load(model: &Model, path: &Path) -> Result<FileInputs> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.into(), source })?;
    if has_extension(path, "npz") {
        return load_npz(model, &bytes, path);
    }
    let (inputs, layout) = inputs_of(model, &decode(&bytes, path)?, path, path.as_os_str())?;
    Ok(FileInputs { labels: vec![None; inputs.len()], inputs, note: layout })
}

/// The inputs in `array`, read from `file`, each named `name` (`name[i]` of a batch), and
/// a note where the layout was channels-last.
fn inputs_of(
    model: &Model,
    array: &Array,
    file: &Path,
    name: &std::ffi::OsStr,
) -> Result<(Vec<Prepared>, Option<String>)> {
    let [c, h, w] = model.input_chw()?;
    let Some(Layout { count, channels_last }) = layout(&array.shape, [c, h, w]) else {
        return Err(Error::bad_file(
            file,
            format!(
                "an array of shape {:?} holds no input of this model: {}",
                array.shape,
                no_input(model)?
            ),
        ));
    };
    if count == 0 {
        return Err(Error::bad_file(file, "an empty batch: it holds no input"));
    }
    let plane = h * w;
    let each = c * plane;
    let note = (channels_last && c > 1).then(|| match model.takes_signals() {
        true => "read as length × channels".to_string(),
        false => "read as height × width × channels".to_string(),
    });
    let inputs = (0..count)
        .map(|n| {
            // Planar `[C, H, W]` values of input `n`.
            let chw: Vec<f64> = (0..each)
                .map(|i| {
                    let (ch, p) = (i / plane, i % plane);
                    let at = if channels_last { p * c + ch } else { i };
                    array.value(n * each + at)
                })
                .collect();
            let mut source = name.to_owned();
            if count > 1 {
                source.push(format!("[{n}]"));
            }
            prepared(model, &array.values, chw, source.into())
        })
        .collect::<Result<Vec<Prepared>>>()?;
    Ok((inputs, note))
}

/// What the model takes, for an array that does not fit: the shapes that would.
fn no_input(model: &Model) -> Result<String> {
    let [c, h, w] = model.input_chw()?;
    if model.takes_signals() {
        let one = if c == 1 { format!(", {w}") } else { String::new() };
        return Ok(format!(
            "it takes signals of {c}×{w} (or {w}×{c}{one}, or a batch of those; numpy inputs \
             are not resized)"
        ));
    }
    let one = if c == 1 { format!(", {h}×{w}") } else { String::new() };
    Ok(format!(
        "it takes {c}×{h}×{w} (or {h}×{w}×{c}{one}, or a batch of those; numpy inputs are not \
         resized)"
    ))
}

/// The arrays of a `.npz` file (a zip of `.npy` files), by name (`x_test` for
/// `x_test.npy`), their bytes not yet decoded.
fn npz_members(bytes: &[u8], path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let bad =
        |e: &dyn std::fmt::Display| Error::bad_file(path, format!("not a readable .npz: {e}"));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| bad(&e))?;
    let budget = crate::runtime::memory_budget();
    (0..archive.len())
        .map(|i| {
            let file = archive.by_index(i).map_err(|e| bad(&e))?;
            // Shown to the user: control characters escaped.
            let name = file.name().map_err(|e| bad(&e))?.trim_end_matches(".npy").to_string();
            let name = crate::model::printable(&name);
            // Read up to the size it declares, which the memory budget bounds.
            let declared = file.size();
            if declared > budget {
                return Err(bad(&format!(
                    "'{name}' declares {}, more than the memory budget of {} (--max-memory)",
                    crate::runtime::human_size(declared.into()),
                    crate::runtime::human_size(budget.into())
                )));
            }
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(file, declared), &mut data)
                .map_err(|e| bad(&e))?;
            Ok((name, data))
        })
        .collect()
}

/// The inputs of a `.npz`: its array that holds the model's inputs (where several do, the
/// one named for the test set, else for validation, else the first), and their labels from
/// the integer array of one value per input beside it (the one named as the inputs are
/// with `y` for `x`, else the only one).
fn load_npz(model: &Model, bytes: &[u8], path: &Path) -> Result<FileInputs> {
    let members = npz_members(bytes, path)?;
    let [c, h, w] = model.input_chw()?;
    let parsed: Vec<Option<(Header, &[u8])>> =
        members.iter().map(|(_, b)| parse(b, path).ok()).collect();
    let headers: Vec<Option<&Header>> = parsed.iter().map(|p| p.as_ref().map(|(h, _)| h)).collect();
    let fits = |i: usize| headers[i].and_then(|hd| layout(&hd.shape, [c, h, w]));
    let fitting: Vec<usize> = (0..members.len()).filter(|&i| fits(i).is_some()).collect();
    let named =
        |part: &str| fitting.iter().copied().find(|&i| members[i].0.to_lowercase().contains(part));
    let Some(chosen) = named("test").or_else(|| named("val")).or(fitting.first().copied()) else {
        let listed: Vec<String> = members
            .iter()
            .zip(&headers)
            .map(|((name, _), header)| match header {
                Some(header) => format!("'{name}' {:?}", header.shape),
                None => format!("'{name}' (not an array)"),
            })
            .collect();
        let why = format!(
            "none of its arrays ({}) holds inputs of this model: {}",
            listed.join(", "),
            no_input(model)?
        );
        return Err(Error::bad_file(path, why));
    };
    let (name, data) = &members[chosen];
    // Named as a file in a folder (the zip's): the explorer's list shows `x_test[3]`.
    let source = path.join(name);
    let (inputs, layout) = inputs_of(model, &decode(data, path)?, path, source.as_os_str())?;
    let mut notes: Vec<String> = layout.into_iter().collect();
    if fitting.len() > 1 {
        let all: Vec<&str> = fitting.iter().map(|&i| members[i].0.as_str()).collect();
        notes.push(format!(
            "inputs from '{name}', of the arrays that fit the model ({})",
            all.join(", ")
        ));
    }
    // Integer arrays of one value per input.
    let count = inputs.len();
    let candidates: Vec<usize> = (0..members.len())
        .filter(|&i| {
            headers[i].is_some_and(|hd| {
                !matches!(hd.element, Element::Float { .. })
                    && (hd.shape == [count] || hd.shape == [count, 1])
            })
        })
        .collect();
    let paired = name.strip_prefix(['x', 'X']).map(|rest| format!("y{rest}"));
    let label_array = candidates
        .iter()
        .copied()
        .find(|&i| paired.as_deref() == Some(members[i].0.as_str()))
        .or((candidates.len() == 1).then(|| candidates[0]));
    let mut labels = vec![None; count];
    if let Some((label_name, Some((header, data)))) =
        label_array.map(|i| (&members[i].0, &parsed[i]))
    {
        let classes = model.num_classes();
        let values = header.integers(data).unwrap_or_default();
        match values.iter().all(|&v| usize::try_from(v).is_ok_and(|v| v < classes)) {
            true => {
                labels = values.iter().map(|&v| usize::try_from(v).ok()).collect();
                notes.push(format!("true classes from '{label_name}'"));
            }
            false => notes.push(format!(
                "'{label_name}' holds values that are no class of the model's {classes}: not read as the true classes"
            )),
        }
    }
    let note = (!notes.is_empty()).then(|| notes.join("; "));
    Ok(FileInputs { inputs, labels, note })
}
/// One input from its planar values: pixels are prepared as an image's; model values are
/// taken as they are, and drawn through the model's preparation undone.
fn prepared(
    model: &Model,
    values: &Values,
    chw: Vec<f64>,
    source: std::path::PathBuf,
) -> Result<Prepared> {
    let [c, h, w] = model.input_chw()?;
    if chw.iter().any(|v| !v.is_finite()) {
        return Err(Error::bad_file(&source, "holds NaN or infinite values"));
    }
    let (tensor, pixels) = match values {
        Values::Pixels { .. } => {
            let pixels: Vec<f32> = chw.iter().map(|&v| v as f32).collect();
            (input::normalise(model, &pixels)?, pixels)
        }
        Values::Float(_) => {
            let as_f32: Vec<f32> = chw.iter().map(|&v| v as f32).collect();
            // f64 values reach an f64 model whole.
            let tensor =
                Tensor::from_vec(chw, (1, c, h, w), &Device::Cpu)?.to_dtype(model.dtype())?;
            (tensor, drawable(model, &as_f32, h * w))
        }
    };
    Ok(Prepared { source, tensor, pixels, adjusted: None })
}

/// Pixels in 0..1 to draw model values with: the model's preparation undone, or where that
/// leaves them well outside 0..1 (the values were prepared otherwise, or the preparation is
/// not known), their own range stretched over it.
fn drawable(model: &Model, values: &[f32], plane: usize) -> Vec<f32> {
    let spec = &model.input;
    let [lo, hi] = spec.range;
    let undone: Vec<f32> = values
        .chunks(plane)
        .enumerate()
        .flat_map(|(ch, plane)| {
            let (mean, std) = spec.normalisation(ch);
            plane.iter().map(move |&v| ((v * std + mean) - lo) / (hi - lo))
        })
        .collect();
    // A little slack: resizing overshoots and rounding leave values just outside.
    const SLACK: f32 = 0.05;
    if undone.iter().all(|p| (-SLACK..=1.0 + SLACK).contains(p)) {
        return undone;
    }
    let (min, max) = values.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let span = if max > min { max - min } else { 1.0 };
    values.iter().map(|&v| (v - min) / span).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `.npy` bytes of format `version` with the header dict's `descr`, `fortran_order` and
    /// `shape` as given (unpadded: readers must not rely on the padding), then `data`.
    fn npy(version: u8, descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let order = if fortran { "True" } else { "False" };
        let header =
            format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}\n");
        let mut out = b"\x93NUMPY".to_vec();
        out.extend([version, 0]);
        if version == 1 {
            out.extend((header.len() as u16).to_le_bytes());
        } else {
            out.extend((header.len() as u32).to_le_bytes());
        }
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    fn floats(array: &Array) -> &[f64] {
        match &array.values {
            Values::Float(v) => v,
            Values::Pixels { .. } => panic!("pixels, not floats"),
        }
    }

    fn path() -> &'static Path {
        Path::new("x.npy")
    }

    #[test]
    fn reads_both_header_versions() {
        let values = [1.5f32, -2.0, 0.25, 8.0, 3.0, -0.5];
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let written = npy(1, "<f4", false, "(2, 3)", &data);
        let array = decode(&written, path()).unwrap();
        assert_eq!(array.shape, [2, 3]);
        assert_eq!(floats(&array), values.map(f64::from));

        // Half floats: 1.5 and −0.25.
        let array =
            decode(&npy(1, "<f2", false, "(2,)", &[0x00, 0x3E, 0x00, 0xB4]), path()).unwrap();
        assert_eq!(floats(&array), [1.5, -0.25]);

        let data: Vec<u8> = [0.5f64, 7.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let array = decode(&npy(2, "<f8", false, "(2,)", &data), path()).unwrap();
        assert_eq!((array.shape.as_slice(), floats(&array)), (&[2][..], &[0.5, 7.0][..]));
    }

    #[test]
    fn fortran_order_and_big_endian_values_come_out_in_c_order() {
        // [[0, 1, 2], [3, 4, 5]] stored column by column.
        let data: Vec<u8> =
            [0f32, 3.0, 1.0, 4.0, 2.0, 5.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let array = decode(&npy(1, ">f4", true, "(2, 3)", &data), path()).unwrap();
        assert_eq!(floats(&array), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        // Three axes: element (i, j, k) of a 2×3×2 array at i + 2j + 6k in the file.
        let stored: Vec<f32> = (0..12)
            .map(|f| {
                let (i, j, k) = (f % 2, f / 2 % 3, f / 6);
                (i * 100 + j * 10 + k) as f32
            })
            .collect();
        let data: Vec<u8> = stored.iter().flat_map(|v| v.to_le_bytes()).collect();
        let array = decode(&npy(1, "<f4", true, "(2, 3, 2)", &data), path()).unwrap();
        let c_order: Vec<f64> =
            (0..12).map(|c| f64::from((c / 6 * 100 + c / 2 % 3 * 10 + c % 2) as u16)).collect();
        assert_eq!(floats(&array), c_order);
    }

    #[test]
    fn integers_are_pixels_of_their_depth() {
        let array = decode(&npy(1, "|u1", false, "(3,)", &[0, 128, 255]), path()).unwrap();
        assert_eq!(array.values, Values::Pixels { values: vec![0, 128, 255], full: 255 });
        assert_eq!(array.value(2), 1.0);
        let data: Vec<u8> = [0u16, 65535].iter().flat_map(|v| v.to_le_bytes()).collect();
        let array = decode(&npy(1, "<u2", false, "(2,)", &data), path()).unwrap();
        assert_eq!(array.value(1), 1.0);
        let data: Vec<u8> = [7i64, 255].iter().flat_map(|v| v.to_le_bytes()).collect();
        let array = decode(&npy(1, "<i8", false, "(2,)", &data), path()).unwrap();
        assert_eq!(array.values, Values::Pixels { values: vec![7, 255], full: 255 });
        // -1 is sign-extended, not read as 255; 256 is no 8-bit pixel.
        let negative = decode(&npy(1, "|i1", false, "(1,)", &[0xFF]), path()).unwrap_err();
        assert!(negative.to_string().contains("holds the integer -1"), "{negative}");
        let data: Vec<u8> = 256i32.to_le_bytes().to_vec();
        let wide = decode(&npy(1, "<i4", false, "(1,)", &data), path()).unwrap_err();
        assert!(wide.to_string().contains("holds the integer 256"), "{wide}");
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let error = |bytes: &[u8]| decode(bytes, path()).unwrap_err().to_string();
        assert!(error(b"PK\x03\x04").contains("not a .npy file"));
        assert!(error(&npy(1, "<f4", false, "(2,)", &[])[..12]).contains("cut off in its header"));
        let cut = error(&npy(1, "<f4", false, "(2, 2)", &[0; 12]));
        assert!(cut.contains("needs 4 values, the file holds 3"), "{cut}");
        assert!(error(&npy(1, "|b1", false, "(1,)", &[1])).contains("save the input as float32"));
        assert!(error(&npy(1, "<f2", false, "(2,)", &[0; 3])).contains("needs 2 values"));
        assert!(error(&npy(1, "<c8", false, "(1,)", &[0; 8])).contains("'<c8'"));
        assert!(error(&npy(9, "<f4", false, "(1,)", &[0; 4])).contains("version 9"));
        let huge = error(&npy(1, "<f4", false, "(4294967296, 4294967296, 16)", &[]));
        assert!(huge.contains("too large"), "{huge}");
    }

    #[test]
    fn layouts_are_told_apart_by_the_models_shape() {
        let first = |count| Some(Layout { count, channels_last: false });
        let last = |count| Some(Layout { count, channels_last: true });
        assert_eq!(layout(&[3, 8, 6], [3, 8, 6]), first(1));
        assert_eq!(layout(&[8, 6, 3], [3, 8, 6]), last(1));
        assert_eq!(layout(&[5, 3, 8, 6], [3, 8, 6]), first(5));
        assert_eq!(layout(&[5, 8, 6, 3], [3, 8, 6]), last(5));
        assert_eq!(layout(&[8, 6], [1, 8, 6]), first(1));
        assert_eq!(layout(&[7, 8, 6], [1, 8, 6]), first(7));
        assert_eq!(layout(&[7, 8, 6, 1], [1, 8, 6]), last(7));
        // A square map of as many channels as pixels across reads channels first.
        assert_eq!(layout(&[4, 4, 4], [4, 4, 4]), first(1));
        assert_eq!(layout(&[8, 6], [3, 8, 6]), None);
        // Signals (maps one row high), with or without the row.
        assert_eq!(layout(&[40], [1, 1, 40]), first(1));
        assert_eq!(layout(&[1, 40], [1, 1, 40]), first(1));
        assert_eq!(layout(&[9, 40], [1, 1, 40]), first(9));
        assert_eq!(layout(&[2, 40], [2, 1, 40]), first(1));
        assert_eq!(layout(&[40, 2], [2, 1, 40]), last(1));
        assert_eq!(layout(&[2, 1, 40], [2, 1, 40]), first(1));
        assert_eq!(layout(&[9, 2, 40], [2, 1, 40]), first(9));
        assert_eq!(layout(&[9, 40, 2], [2, 1, 40]), last(9));
        assert_eq!(layout(&[40], [2, 1, 40]), None);
        assert_eq!(layout(&[3, 40], [2, 1, 40]), None);
        assert_eq!(layout(&[3, 6, 8], [3, 8, 6]), None);
        assert_eq!(layout(&[1, 1, 3, 8, 6], [3, 8, 6]), None);
    }
}
