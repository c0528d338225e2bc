//! Grids of tiles (filters, feature maps, act-max images) laid out to the panel: each tile
//! as large as lets every tile fit on one page, never smaller than can be read (pages
//! then), a label under each, one blank column between tiles, the selected tile's label
//! highlighted; or one tile zoomed to the whole panel.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::widgets::Widget;
use unicode_width::UnicodeWidthStr;

use crate::present::ansi::ColorMode;
use crate::present::figures::Tile;
use crate::tui::image::HalfBlockImage;

/// Tiles narrower than this many cells are scaled up to it (a 3×3 kernel to 6×6 pixels),
/// so a label fits and the pixels show.
const MIN_SMALL_TILE: u32 = 6;

/// How a grid's tiles sit in an area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GridLayout {
    /// A tile's image size in cells (width, rows).
    pub tile: (u16, u16),
    /// Tiles per row.
    pub columns: usize,
    /// Rows of tiles on a page.
    pub rows: usize,
}

impl GridLayout {
    /// Tiles on one page.
    pub fn per_page(&self) -> usize {
        (self.columns * self.rows).max(1)
    }

    /// Pages for `count` tiles.
    pub fn pages(&self, count: usize) -> usize {
        count.div_ceil(self.per_page()).max(1)
    }
}

/// Lays out `count` tiles of `size` pixels (width, height) in `area` cells (width, rows):
/// the widest tile that lets all fit on one page, scaled by whole steps when tiles are
/// small (so every pixel is the same size); if none does, the smallest legible tile (not
/// narrower than `smallest` pixels) and as many as fit per page. A cell is one pixel wide
/// and two tall; each tile has a label row.
pub fn layout(size: (u32, u32), smallest: u32, count: usize, area: (u16, u16)) -> GridLayout {
    let (tw, th) = (size.0.max(1), size.1.max(1));
    let (aw, ah) = (u32::from(area.0), u32::from(area.1));
    let fit = |cw: u32| {
        let rows_of_tile = (th * cw).div_ceil(tw * 2).max(1);
        let columns = (aw + 1) / (cw + 1);
        let rows = ah / (rows_of_tile + 1);
        (rows_of_tile, columns as usize, rows as usize)
    };
    let small = tw < MIN_SMALL_TILE;
    let smallest = if small { tw * MIN_SMALL_TILE.div_ceil(tw) } else { tw.min(smallest.max(1)) };
    let widths = (smallest..=aw.max(smallest)).rev().filter(|cw| !small || cw % tw == 0);
    let mut chosen = None;
    for cw in widths {
        let (rows_of_tile, columns, rows) = fit(cw);
        if columns * rows >= count.max(1) {
            chosen = Some((cw, rows_of_tile, columns, rows));
            break;
        }
    }
    let (cw, rows_of_tile, columns, rows) = chosen.unwrap_or_else(|| {
        let (rows_of_tile, columns, rows) = fit(smallest);
        (smallest, rows_of_tile, columns, rows)
    });
    if columns == 0 || rows == 0 {
        // Not even one legible tile: one per page, as large as the area allows.
        return GridLayout { tile: (area.0, area.1.saturating_sub(1)), columns: 1, rows: 1 };
    }
    let cells = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    GridLayout { tile: (cells(cw), cells(rows_of_tile)), columns, rows }
}

/// One page of tiles, the selected one's label highlighted.
pub struct TileGrid<'a> {
    /// The tiles (all of them: the page is picked from `selected`).
    pub tiles: &'a [Tile],
    /// The selected tile.
    pub selected: usize,
    /// Each tile on its own scale, where it has one.
    pub own_scale: bool,
    /// Colour mode.
    pub mode: ColorMode,
    /// The highlight colour of the selected label.
    pub accent: Color,
}

impl TileGrid<'_> {
    /// The layout of these tiles in `area`.
    pub fn layout_in(&self, area: Rect) -> GridLayout {
        let (size, smallest) =
            self.tiles.first().map_or(((1, 1), 1), |t| (t.image.dimensions(), t.smallest));
        layout(size, smallest, self.tiles.len(), (area.width, area.height))
    }
}

/// The image of a tile on the chosen scale.
pub fn tile_image(tile: &Tile, own_scale: bool) -> &image::RgbImage {
    match (&tile.own, own_scale) {
        (Some((own, _)), true) => own,
        _ => &tile.image,
    }
}

impl Widget for TileGrid<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if self.tiles.is_empty() || area.is_empty() {
            return;
        }
        let grid = self.layout_in(area);
        let per_page = grid.per_page();
        let selected = self.selected.min(self.tiles.len() - 1);
        let first = selected / per_page * per_page;
        let (tw, th) = grid.tile;
        let used_width = (grid.columns as u16) * (tw + 1) - 1;
        let left = area.x + area.width.saturating_sub(used_width) / 2;
        for (slot, (i, tile)) in
            self.tiles.iter().enumerate().skip(first).take(per_page).enumerate()
        {
            let (col, row) = ((slot % grid.columns) as u16, (slot / grid.columns) as u16);
            let x = left + col * (tw + 1);
            let y = area.y + row * (th + 1);
            let image_area = Rect::new(x, y, tw, th).intersection(area);
            HalfBlockImage::new(tile_image(tile, self.own_scale), self.mode)
                .render(image_area, buf);
            let style = if i == selected {
                Style::new().fg(Color::Black).bg(self.accent)
            } else {
                Style::new().fg(Color::Gray)
            };
            let label = crate::tui::ui::cut_to_cells(&tile.label, usize::from(tw));
            let label_x = x + (tw - label.width() as u16) / 2;
            if y + th < area.bottom() {
                buf.set_string(label_x, y + th, label, style);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_kernels_scale_by_whole_steps_and_fit_one_page() {
        // 32 kernels of 3×3 in 54×16 cells: 6 cells (2×) each, 3 rows of tile + label.
        let g = layout((3, 3), 3, 32, (54, 16));
        assert_eq!(g.tile, (6, 3));
        assert_eq!((g.columns, g.rows), (7, 4));
        assert_eq!(g.pages(32), 2);
        // With room for all, tiles grow in whole steps.
        let g = layout((3, 3), 3, 4, (54, 16));
        assert_eq!(g.tile.0 % 3, 0);
        assert!(g.per_page() >= 4 && g.tile.0 > 6);
    }

    #[test]
    fn large_maps_shrink_to_fit_then_page() {
        // Ten 28×28 images in 54×16: the widest that fits all ten.
        let g = layout((28, 28), 10, 10, (54, 16));
        assert!(g.per_page() >= 10, "{g:?}");
        assert!(g.tile.0 >= 10);
        // 64 maps of 26×26 cannot fit at a legible size: pages, each tile ≥ 10 cells.
        let g = layout((26, 26), 10, 64, (54, 16));
        assert_eq!(g.tile.0, 10);
        assert!(g.pages(64) > 1);
        // A block of kernels keeps every pixel: 23 pixels across stay 23 cells.
        let g = layout((23, 23), 23, 64, (54, 16));
        assert_eq!(g.tile.0, 23);
        // A tile larger than the area: one per page.
        let g = layout((28, 28), 10, 3, (8, 3));
        assert_eq!(g.per_page(), 1);
    }
}
