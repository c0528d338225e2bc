//! The files the commands write: PNG and JPEG images and float32 `.npy` arrays, the format
//! chosen by the file's extension.

use crate::error::{Error, Result};

/// Saves `img` as a PNG at `path`. Errors name the path: [`Error::Io`] when the file cannot be
/// created or written, [`Error::Invalid`] when the image cannot be encoded (an empty image).
pub fn save_png(img: &image::RgbImage, path: &std::path::Path) -> Result<()> {
    // PNG cannot hold a 0×0 image; checking first avoids leaving an empty file behind.
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::Invalid(format!(
            "{}: cannot write an empty {}×{} image as PNG",
            path.display(),
            img.width(),
            img.height()
        )));
    }
    // Encoded first, so an encoding failure is not an I/O error and nothing is written.
    let mut png = Vec::new();
    img.write_with_encoder(image::codecs::png::PngEncoder::new(&mut png))
        .map_err(|e| Error::Invalid(format!("{}: cannot write PNG: {e}", path.display())))?;
    crate::files::write_bytes(path, &png)
}

/// What `-o` writes, by the file's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// `.png`: the figure, lossless.
    Png,
    /// `.jpg` / `.jpeg`: the figure as JPEG.
    Jpeg,
    /// `.npy`: the values behind the picture.
    Npy,
}

impl OutputFormat {
    /// The format `path`'s extension names (case-insensitive); any other extension, or none,
    /// is an error naming the ones there are.
    pub fn of(path: &std::path::Path) -> Result<OutputFormat> {
        let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase());
        match ext.as_deref() {
            Some("png") => Ok(OutputFormat::Png),
            Some("jpg" | "jpeg") => Ok(OutputFormat::Jpeg),
            Some("npy") => Ok(OutputFormat::Npy),
            _ => Err(Error::Invalid(format!(
                "{}: cannot tell the format from the name: end it in .png, .jpg, .jpeg or .npy",
                path.display()
            ))),
        }
    }
}

/// JPEG quality of written figures: high enough that thin text and colour-bar ticks stay
/// sharp.
const JPEG_QUALITY: u8 = 92;

/// Saves `img` at `path` as PNG or JPEG, as its extension says ([`OutputFormat::of`]; `.npy`
/// is an error here: it holds values, not pixels).
pub fn save_image(img: &image::RgbImage, path: &std::path::Path) -> Result<()> {
    match OutputFormat::of(path)? {
        OutputFormat::Png => save_png(img, path),
        OutputFormat::Jpeg => {
            if img.width() == 0 || img.height() == 0 {
                return Err(Error::Invalid(format!(
                    "{}: cannot write an empty image as JPEG",
                    path.display()
                )));
            }
            let mut jpeg = Vec::new();
            let encoder =
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY);
            img.write_with_encoder(encoder).map_err(|e| {
                Error::Invalid(format!("{}: cannot write JPEG: {e}", path.display()))
            })?;
            crate::files::write_bytes(path, &jpeg)
        }
        OutputFormat::Npy => Err(Error::Invalid(format!(
            "{}: a .npy file holds values, not a picture",
            path.display()
        ))),
    }
}

/// Writes a float32 little-endian `.npy` file (format 1.0) of the given `shape`, readable by
/// `numpy.load`; see [`npy_bytes`] for the layout and the errors.
pub fn write_npy(path: &std::path::Path, shape: &[usize], data: &[f32]) -> Result<()> {
    crate::files::write_bytes(path, &npy_bytes(shape, data)?)
}

/// The bytes of a `.npy` file (format 1.0) holding `data` as little-endian float32 in C order
/// with the given `shape`: the magic `\x93NUMPY`, version 1.0, a u16 header length, the header
/// dict `{'descr': '<f4', 'fortran_order': False, 'shape': (a, b), }` (a 1-D shape as `(n,)`,
/// 0-D as `()`) padded with spaces and a final `'\n'` so the data starts on a multiple of 64
/// bytes, then the values. Errors if the shape's product is not `data.len()`.
pub fn npy_bytes(shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
    const MAGIC: &[u8] = b"\x93NUMPY\x01\x00";
    // Magic and version (8 bytes) plus the u16 header length.
    const PREAMBLE: usize = MAGIC.len() + 2;

    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if count != Some(data.len()) {
        return Err(Error::Invalid(format!(
            "a .npy of shape {shape:?} needs {} values, got {}",
            count.map_or_else(|| "too many".to_string(), |n| n.to_string()),
            data.len()
        )));
    }
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(usize::to_string).collect();
            format!("({})", parts.join(", "))
        }
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // Pad so that preamble + header (ending in '\n') is a multiple of 64, as numpy does; the
    // data then starts aligned.
    let unpadded = PREAMBLE + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let header_len = u16::try_from(header.len()).map_err(|_| {
        Error::Invalid(format!("a .npy header for shape {shape:?} is too long for format 1.0"))
    })?;

    let mut out = Vec::with_capacity(PREAMBLE + header.len() + 4 * data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::present::testing::img;

    /// Header length and header text of `.npy` bytes.
    fn npy_header(bytes: &[u8]) -> (usize, String) {
        let len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
        (len, String::from_utf8(bytes[10..10 + len].to_vec()).unwrap())
    }

    #[test]
    fn npy_bytes_layout() {
        let data = [0.0f32, 1.5, -2.0, 3.25, f32::MAX, 1e-8];
        let bytes = npy_bytes(&[2, 3], &data).unwrap();
        assert!(bytes.starts_with(b"\x93NUMPY\x01\x00"));
        let (len, header) = npy_header(&bytes);
        assert_eq!((10 + len) % 64, 0);
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
        assert!(header.ends_with('\n'));
        assert!(header.trim_end_matches('\n').trim_end().ends_with('}'));
        let values: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(&bytes[10 + len..], &values[..]);
    }

    #[test]
    fn npy_bytes_shapes_and_errors() {
        let (_, header) = npy_header(&npy_bytes(&[4], &[0.0; 4]).unwrap());
        assert!(header.contains("'shape': (4,), }"), "{header}");
        let (_, header) = npy_header(&npy_bytes(&[], &[7.0]).unwrap());
        assert!(header.contains("'shape': (), }"), "{header}");
        let bytes = npy_bytes(&[2, 0, 3], &[]).unwrap();
        let (len, header) = npy_header(&bytes);
        assert!(header.contains("'shape': (2, 0, 3), }"), "{header}");
        assert_eq!(bytes.len(), 10 + len);
        assert!(matches!(npy_bytes(&[2, 3], &[0.0; 5]), Err(Error::Invalid(_))));
        assert!(matches!(npy_bytes(&[usize::MAX, 3], &[0.0; 3]), Err(Error::Invalid(_))));
        // Every header length keeps the data aligned.
        for n in 0..200 {
            let shape: Vec<usize> = vec![1; n % 40].into_iter().chain([n]).collect();
            let bytes = npy_bytes(&shape, &vec![0.0; n]).unwrap();
            assert_eq!((10 + npy_header(&bytes).0) % 64, 0);
        }
    }

    #[test]
    fn write_npy_writes_npy_bytes_and_names_path_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npy");
        write_npy(&path, &[1, 2], &[1.0, 2.0]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), npy_bytes(&[1, 2], &[1.0, 2.0]).unwrap());
        let missing = dir.path().join("no/such/dir/m.npy");
        match write_npy(&missing, &[1], &[1.0]) {
            Err(Error::Io { path, .. }) => assert_eq!(path, missing),
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }

    #[test]
    fn save_image_follows_the_extension() {
        let dir = tempfile::tempdir().unwrap();
        let picture = image::RgbImage::from_pixel(16, 16, image::Rgb([200, 40, 40]));
        let png = dir.path().join("a.PNG");
        save_image(&picture, &png).unwrap();
        assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
        for name in ["a.jpg", "a.jpeg"] {
            let path = dir.path().join(name);
            save_image(&picture, &path).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert!(bytes.starts_with(&[0xFF, 0xD8, 0xFF]), "{name} is not JPEG");
            let back = image::load_from_memory(&bytes).unwrap().to_rgb8();
            let p = back.get_pixel(8, 8).0;
            assert!(p.iter().zip([200, 40, 40]).all(|(&a, b)| a.abs_diff(b) < 8), "{p:?}");
        }
        for name in ["a.gif", "a", "a.npy"] {
            match save_image(&picture, &dir.path().join(name)) {
                Err(Error::Invalid(message)) => assert!(message.contains(name), "{message}"),
                other => panic!("{name}: expected Invalid, got {other:?}"),
            }
            assert!(!dir.path().join(name).exists());
        }
        assert_eq!(OutputFormat::of(std::path::Path::new("m.NPY")).unwrap(), OutputFormat::Npy);
    }

    #[test]
    fn save_png_round_trips_and_names_path_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.png");
        let picture = img(2, 1, &[[1, 2, 3], [250, 128, 0]]);
        save_png(&picture, &path).unwrap();
        assert_eq!(image::open(&path).unwrap().to_rgb8(), picture);
        let missing = dir.path().join("no/such/dir/t.png");
        match save_png(&picture, &missing) {
            Err(Error::Io { path, .. }) => assert_eq!(path, missing),
            other => panic!("expected an I/O error, got {other:?}"),
        }
        match save_png(&image::RgbImage::new(0, 0), &path) {
            Err(Error::Invalid(message)) => assert!(message.contains("t.png"), "{message}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
}
