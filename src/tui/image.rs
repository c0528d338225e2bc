//! A ratatui widget that draws an image as half-block cells (`▀`: foreground = upper
//! pixel, background = lower pixel), scaled nearest-neighbour to the space it is given.

use image::RgbImage;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::widgets::Widget;

use crate::present::ansi::{self, ColorMode};
use crate::present::pixels;

/// An image to draw, centred in its area, as large as fits with its aspect kept.
pub struct HalfBlockImage<'a> {
    image: &'a RgbImage,
    mode: ColorMode,
}

impl<'a> HalfBlockImage<'a> {
    /// The widget for `image` in colour `mode`.
    pub fn new(image: &'a RgbImage, mode: ColorMode) -> Self {
        HalfBlockImage { image, mode }
    }

    /// The size in cells the image takes in an area of `width` × `height` cells.
    pub fn fitted_size(image: &RgbImage, width: u16, height: u16) -> (u16, u16) {
        let (w, h) = (image.width().max(1) as f32, image.height().max(1) as f32);
        // Each cell is one pixel wide and two pixels tall.
        let scale = (f32::from(width) / w).min(f32::from(height) * 2.0 / h);
        let cols = ((w * scale).floor() as u16).clamp(1, width.max(1));
        let rows = ((h * scale / 2.0).ceil() as u16).clamp(1, height.max(1));
        (cols, rows)
    }
}

/// A terminal colour for a pixel in the given mode.
pub fn color(rgb: [u8; 3], mode: ColorMode) -> Color {
    match mode {
        ColorMode::TrueColor => Color::Rgb(rgb[0], rgb[1], rgb[2]),
        ColorMode::Ansi256 => Color::Indexed(ansi::ansi256(rgb)),
    }
}

impl Widget for HalfBlockImage<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.is_empty() || self.image.width() == 0 || self.image.height() == 0 {
            return;
        }
        let (cols, rows) = HalfBlockImage::fitted_size(self.image, area.width, area.height);
        let scaled = pixels::scale_nearest(self.image, u32::from(cols), u32::from(rows) * 2);
        let left = area.x + (area.width - cols) / 2;
        let top = area.y + (area.height - rows) / 2;
        for (dy, row) in ansi::half_blocks(&scaled).iter().enumerate() {
            for (dx, cell) in row.iter().enumerate() {
                let (x, y) = (left + dx as u16, top + dy as u16);
                if let Some(c) = buf.cell_mut((x, y)) {
                    c.set_char('▀')
                        .set_fg(color(cell.top, self.mode))
                        .set_bg(color(cell.bottom, self.mode));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_pixels_per_cell_with_exact_colours() {
        // 2×2 image: red, green / blue, white. In a 2×1 area: two cells, each '▀' with the
        // upper pixel as foreground and the lower as background.
        let mut img = RgbImage::new(2, 2);
        img.put_pixel(0, 0, image::Rgb([255, 0, 0]));
        img.put_pixel(1, 0, image::Rgb([0, 255, 0]));
        img.put_pixel(0, 1, image::Rgb([0, 0, 255]));
        img.put_pixel(1, 1, image::Rgb([255, 255, 255]));
        let mut buf = Buffer::empty(Rect::new(0, 0, 2, 1));
        HalfBlockImage::new(&img, ColorMode::TrueColor).render(buf.area, &mut buf);
        assert_eq!(buf[(0, 0)].symbol(), "▀");
        assert_eq!(buf[(0, 0)].fg, Color::Rgb(255, 0, 0));
        assert_eq!(buf[(0, 0)].bg, Color::Rgb(0, 0, 255));
        assert_eq!(buf[(1, 0)].fg, Color::Rgb(0, 255, 0));
        assert_eq!(buf[(1, 0)].bg, Color::Rgb(255, 255, 255));
    }

    #[test]
    fn scales_up_and_centres() {
        // A 2×2 image in a 10×3 area: scale min(10/2, 6/2) = 3 → 6×6 pixels = 6 cols × 3 rows,
        // starting at column 2. 256-colour mode uses palette indices.
        let img = RgbImage::from_pixel(2, 2, image::Rgb([255, 0, 0]));
        let mut buf = Buffer::empty(Rect::new(0, 0, 10, 3));
        HalfBlockImage::new(&img, ColorMode::Ansi256).render(buf.area, &mut buf);
        assert_eq!(buf[(1, 1)].symbol(), " ");
        assert_eq!(buf[(2, 0)].symbol(), "▀");
        assert_eq!(buf[(7, 2)].symbol(), "▀");
        assert_eq!(buf[(8, 2)].symbol(), " ");
        assert_eq!(buf[(4, 1)].fg, Color::Indexed(196));
    }
}
