//! Results as people see them: colour maps ([`colormap`]), images of maps and inputs, grids
//! and overlays ([`pixels`]), half-block cells and escapes for the terminal ([`ansi`]) and
//! PNG / `.npy` files ([`files`]); a method's result as a captioned picture ([`figures`]);
//! the layer table ([`summary`]) and the architecture diagram ([`diagram`]). Plain data in,
//! pixels or text out: the explorer and the commands show the same pixels from the same
//! numbers.

pub mod ansi;
pub mod colormap;
pub mod diagram;
pub mod figures;
pub mod files;
pub mod pixels;
pub mod summary;

/// Helpers shared by the tests of the picture files.
#[cfg(test)]
mod testing {
    /// A `w`×`h` image of row-major `pixels`.
    pub(super) fn img(w: u32, h: u32, pixels: &[[u8; 3]]) -> image::RgbImage {
        assert_eq!(pixels.len(), (w * h) as usize);
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb(pixels[(y * w + x) as usize]))
    }
}
