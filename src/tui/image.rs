//! Pictures in the terminal: at the terminal's own pixel resolution where it speaks a
//! graphics protocol (kitty, sixel, iTerm2 inline images, encoded by `ratatui-image`), else
//! as half-block cells (`▀`: foreground = upper pixel, background = lower pixel). Either
//! way scaled nearest-neighbour (a heatmap's cells stay crisp) to the space there is, with
//! the aspect kept. [`Graphics`] is the user's choice, [`Pixels`] what was found and a cache
//! of the last encoded picture, [`PictureWidget`] the widget, [`inline`] the same for a
//! command's output.

use std::cell::RefCell;
use std::hash::{Hash, Hasher};

use image::RgbImage;
use ratatui::buffer::{Buffer, CellDiffOption};
use ratatui::layout::{Rect, Size};
use ratatui::style::Color;
use ratatui::widgets::Widget;
use ratatui_image::FontSize;
use ratatui_image::picker::ProtocolType;
use ratatui_image::protocol::Protocol;
use ratatui_image::protocol::iterm2::Iterm2;
use ratatui_image::protocol::kitty::Kitty;
use ratatui_image::protocol::sixel::Sixel;

use crate::present::ansi::{self, ColorMode};
use crate::present::pixels;

/// How pictures reach the terminal (`--graphics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Graphics {
    /// What the terminal's environment says it speaks ([`from_environment`]), else half
    /// blocks.
    Auto,
    /// The kitty graphics protocol (kitty, Ghostty, recent WezTerm and Konsole).
    Kitty,
    /// Sixel (xterm -ti vt340, foot, mlterm, Windows Terminal).
    Sixel,
    /// iTerm2's inline images (iTerm2, WezTerm).
    Iterm2,
    /// Half-block cells: every terminal, tmux and plain SSH included.
    Halfblocks,
}

impl Graphics {
    /// Every choice, in `--help`'s order.
    pub const ALL: [Graphics; 5] =
        [Graphics::Auto, Graphics::Kitty, Graphics::Sixel, Graphics::Iterm2, Graphics::Halfblocks];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Graphics::Auto => "auto",
            Graphics::Kitty => "kitty",
            Graphics::Sixel => "sixel",
            Graphics::Iterm2 => "iterm2",
            Graphics::Halfblocks => "halfblocks",
        }
    }

    /// The choice called `name` (case-insensitive).
    pub fn parse(name: &str) -> Option<Graphics> {
        Graphics::ALL.into_iter().find(|g| g.name().eq_ignore_ascii_case(name.trim()))
    }

    fn protocol(self) -> Option<ProtocolType> {
        match self {
            Graphics::Kitty => Some(ProtocolType::Kitty),
            Graphics::Sixel => Some(ProtocolType::Sixel),
            Graphics::Iterm2 => Some(ProtocolType::Iterm2),
            Graphics::Auto | Graphics::Halfblocks => None,
        }
    }
}

/// The terminal's pixel protocol as found (none: half blocks) and the last picture encoded
/// for it (encoding a picture costs far more than drawing a frame, and the kitty protocol
/// sends the pixels only once per picture).
#[derive(Clone, Default)]
pub struct Pixels {
    protocol: Option<Found>,
    last: RefCell<Option<(u64, Protocol)>>,
}

/// A protocol and how to speak it.
#[derive(Clone, Copy)]
struct Found {
    protocol: ProtocolType,
    /// A cell's size in pixels.
    cell: FontSize,
    /// Inside tmux: sequences are wrapped for its passthrough.
    tmux: bool,
    /// kitty pictures are sent zlib-compressed (`o=z`): only where the terminal is known
    /// to inflate them (kitty, Ghostty), as one that cannot drops the picture.
    compress: bool,
}

impl std::fmt::Debug for Pixels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Pixels {
    /// Half-block cells only: nothing is asked of the terminal.
    pub fn halfblocks() -> Pixels {
        Pixels::default()
    }

    /// A protocol with a known cell size in pixels (tests; a terminal already asked), kitty
    /// pictures compressed as kitty itself takes them.
    pub fn with(protocol: Graphics, cell: (u16, u16)) -> Pixels {
        Pixels {
            protocol: protocol.protocol().map(|protocol| Found {
                protocol,
                cell: FontSize::new(cell.0, cell.1),
                tmux: false,
                compress: true,
            }),
            last: RefCell::default(),
        }
    }

    /// What `choice` means on this terminal. `Halfblocks` asks nothing; `Auto` reads the
    /// environment ([`from_environment`]); a protocol, named or found, takes the cell size
    /// in pixels from the terminal's window size (10×20 where it does not say). Nothing is
    /// written to the terminal or read from it: no query can eat a key or race the
    /// explorer's raw mode. kitty pictures are compressed where the environment names kitty
    /// or Ghostty (a named `kitty` elsewhere may be a terminal that cannot inflate them).
    pub fn detect(choice: Graphics) -> Pixels {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let protocol = match choice {
            Graphics::Halfblocks => None,
            Graphics::Auto => from_environment(var),
            named => named.protocol(),
        };
        let cell = crossterm::terminal::window_size()
            .ok()
            .filter(|s| s.width > 0 && s.height > 0 && s.columns > 0 && s.rows > 0)
            .map_or((10, 20), |s| (s.width / s.columns, s.height / s.rows));
        Pixels {
            protocol: protocol.map(|protocol| Found {
                protocol,
                cell: FontSize::new(cell.0, cell.1),
                tmux: var("TMUX").is_some(),
                compress: is_kitty(&var),
            }),
            last: RefCell::default(),
        }
    }

    /// The protocol's name, for the status line.
    pub fn name(&self) -> &'static str {
        match self.protocol.map(|f| f.protocol) {
            None | Some(ProtocolType::Halfblocks) => "half blocks",
            Some(ProtocolType::Kitty) => "kitty graphics",
            Some(ProtocolType::Sixel) => "sixel",
            Some(ProtocolType::Iterm2) => "iTerm2 images",
        }
    }

    /// `image` encoded for the protocol, as large as fits in `width` × `height` cells with
    /// its aspect kept; `None` with half blocks, or when it cannot be encoded.
    fn encode(&self, image: &RgbImage, width: u16, height: u16) -> Option<Protocol> {
        let Found { protocol, cell: font, tmux, compress } = self.protocol?;
        let (cw, ch) = (f32::from(font.width.max(1)), f32::from(font.height.max(1)));
        let (w, h) = (image.width().max(1) as f32, image.height().max(1) as f32);
        let scale = (f32::from(width) * cw / w).min(f32::from(height) * ch / h);
        let cols = ((w * scale / cw).floor() as u16).clamp(1, width.max(1));
        let rows = ((h * scale / ch).floor() as u16).clamp(1, height.max(1));
        let scaled = pixels::scale_nearest(
            image,
            u32::from(cols) * u32::from(font.width),
            u32::from(rows) * u32::from(font.height),
        );
        let size = Size::new(cols, rows);
        let dynamic = image::DynamicImage::ImageRgb8(scaled);
        let encoded = match protocol {
            ProtocolType::Kitty => {
                // The id names the picture to the terminal: the same picture, the same id.
                let id = (hash_of(image, width, height) as u32).max(1);
                Kitty::new(dynamic, size, id, tmux, compress).map(Protocol::Kitty)
            }
            ProtocolType::Sixel => Sixel::new(dynamic, size, tmux).map(Protocol::Sixel),
            ProtocolType::Iterm2 => Iterm2::new(dynamic, size, tmux).map(Protocol::ITerm2),
            ProtocolType::Halfblocks => return None,
        };
        encoded.ok()
    }

    /// [`Pixels::encode`], reusing the last picture's encoding when it is asked again.
    fn encoded(&self, image: &RgbImage, width: u16, height: u16) -> Option<Protocol> {
        self.protocol?;
        let key = hash_of(image, width, height);
        let mut last = self.last.borrow_mut();
        if let Some((k, protocol)) = last.as_ref()
            && *k == key
        {
            return Some(protocol.clone());
        }
        let protocol = self.encode(image, width, height)?;
        *last = Some((key, protocol.clone()));
        Some(protocol)
    }
}

/// The protocol a terminal speaks, from what it puts in the environment (`var` reads a
/// variable): kitty's (kitty, Ghostty), iTerm2's (iTerm2, WezTerm) or sixel (foot,
/// mlterm); none inside tmux, which passes none of them through by default, or anywhere
/// else (plain SSH keeps `TERM` only).
pub fn from_environment(var: impl Fn(&str) -> Option<String>) -> Option<ProtocolType> {
    if var("TMUX").is_some() {
        return None;
    }
    let program = var("TERM_PROGRAM").unwrap_or_default();
    let term = var("TERM").unwrap_or_default();
    if is_kitty(&var) {
        Some(ProtocolType::Kitty)
    } else if program == "iTerm.app"
        || program == "WezTerm"
        || var("LC_TERMINAL").as_deref() == Some("iTerm2")
    {
        Some(ProtocolType::Iterm2)
    } else if term.starts_with("foot") || term.starts_with("mlterm") {
        Some(ProtocolType::Sixel)
    } else {
        None
    }
}

/// Whether the environment names kitty or Ghostty (inside tmux too: `KITTY_WINDOW_ID`
/// survives there).
fn is_kitty(var: &impl Fn(&str) -> Option<String>) -> bool {
    let term = var("TERM").unwrap_or_default();
    term.contains("kitty") || term.contains("ghostty") || var("KITTY_WINDOW_ID").is_some()
}

fn hash_of(image: &RgbImage, width: u16, height: u16) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (image.dimensions(), image.as_raw(), width, height).hash(&mut hasher);
    hasher.finish()
}

/// A picture, centred in its area and as large as fits: true pixels when [`Pixels`] has a
/// protocol, half blocks otherwise.
pub struct PictureWidget<'a> {
    image: &'a RgbImage,
    pixels: &'a Pixels,
    mode: ColorMode,
}

impl<'a> PictureWidget<'a> {
    /// The widget for `image`, drawn as `pixels` says, half blocks in colour `mode`.
    pub fn new(image: &'a RgbImage, pixels: &'a Pixels, mode: ColorMode) -> Self {
        PictureWidget { image, pixels, mode }
    }
}

impl Widget for PictureWidget<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.is_empty() {
            return;
        }
        match self.pixels.encoded(self.image, area.width, area.height) {
            Some(protocol) => {
                let size = protocol.size();
                let (w, h) = (size.width.min(area.width), size.height.min(area.height));
                let at =
                    Rect::new(area.x + (area.width - w) / 2, area.y + (area.height - h) / 2, w, h);
                ratatui_image::Image::new(&protocol).render(at, buf);
            }
            None => HalfBlockImage::new(self.image, self.mode).render(area, buf),
        }
    }
}

/// `image` as text for a command's output, at most `width` × `height` cells: the protocol's
/// escape sequences (kitty's placeholder cells coloured with the picture's id), or
/// half-block cells.
pub fn inline(
    image: &RgbImage,
    pixels: &Pixels,
    mode: ColorMode,
    width: u16,
    height: u16,
) -> String {
    let Some(protocol) = pixels.encode(image, width, height) else {
        return ansi::to_ansi(
            &ansi::fit_to_cells(image, u32::from(width), u32::from(height)),
            mode,
        );
    };
    let size = protocol.size();
    let area = Rect::new(0, 0, size.width, size.height);
    let mut buf = Buffer::empty(area);
    ratatui_image::Image::new(&protocol).render(area, &mut buf);
    let mut out = String::new();
    for y in 0..area.height {
        let mut wrote = false;
        for x in 0..area.width {
            let cell = &buf[(x, y)];
            if cell.diff_option == CellDiffOption::Skip {
                continue;
            }
            wrote = true;
            if let Color::Rgb(r, g, b) = cell.fg {
                out.push_str(&format!("\x1b[38;2;{r};{g};{b}m"));
            }
            out.push_str(cell.symbol());
        }
        // A sixel or iTerm2 picture is one sequence in its first cell. Sixel leaves the
        // cursor on the picture's last row; iTerm2's sequence (`doNotMoveCursor`) at its
        // first, so every row needs its line.
        if wrote || matches!(protocol, Protocol::ITerm2(_)) {
            out.push_str("\x1b[0m\n");
        }
    }
    out
}

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
    fn the_protocol_comes_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(from_environment(env(&[("TERM", "xterm-kitty")])), Some(ProtocolType::Kitty));
        assert_eq!(from_environment(env(&[("KITTY_WINDOW_ID", "1")])), Some(ProtocolType::Kitty));
        assert_eq!(
            from_environment(env(&[("TERM_PROGRAM", "iTerm.app")])),
            Some(ProtocolType::Iterm2)
        );
        assert_eq!(from_environment(env(&[("TERM", "foot")])), Some(ProtocolType::Sixel));
        assert_eq!(from_environment(env(&[("TERM", "xterm-256color")])), None);
        assert_eq!(from_environment(env(&[("TERM", "xterm-kitty"), ("TMUX", "/tmp/t")])), None);
        assert_eq!(Pixels::detect(Graphics::Halfblocks).name(), "half blocks");
        assert_eq!(Graphics::parse("KITTY"), Some(Graphics::Kitty));
        assert_eq!(Graphics::parse("png"), None);
    }

    #[test]
    fn inline_kitty_output_is_the_transmission_then_placeholder_rows() {
        let img = RgbImage::from_pixel(8, 8, image::Rgb([10, 200, 30]));
        let pixels = Pixels::with(Graphics::Kitty, (2, 4));
        let out = inline(&img, &pixels, ColorMode::TrueColor, 10, 10);
        // 8×8 pixels scaled 2.5× to fill 10×10 cells of 2×4: 5 rows of 10, a line each.
        assert!(out.starts_with("\x1b[38;2;"), "{out:?}");
        assert!(out.contains("\x1b_Gq=2,i=") && out.contains(",a=T,U=1,f=32,"));
        assert_eq!(out.matches('\u{10EEEE}').count(), 50);
        assert_eq!(out.matches('\n').count(), 5);
        // Half blocks: no escapes of a protocol.
        let plain = inline(&img, &Pixels::halfblocks(), ColorMode::TrueColor, 10, 10);
        assert!(plain.contains('▀') && !plain.contains("\x1b_G"));
    }

    /// Bytes of a 224×224 heatmap sent with the kitty protocol in the explorer's picture
    /// area at 80×24 (54×14 cells of 10×20 pixels), raw and zlib-compressed: a smooth map
    /// (grad-CAM's, upsampled) and a noisy one (a vanilla gradient's).
    #[test]
    fn kitty_pictures_are_sent_compressed_where_the_terminal_inflates_them() {
        use crate::present::colormap::Colormap;
        let heatmap = |value: &dyn Fn(f32, f32) -> f32| {
            RgbImage::from_fn(224, 224, |x, y| {
                image::Rgb(Colormap::Jet.rgb(value(x as f32, y as f32).clamp(0.0, 1.0)))
            })
        };
        let smooth = heatmap(&|x, y| {
            // grad-CAM of a 7×7 layer: blocks of 32 pixels, a blob in the middle.
            let (bx, by) = ((x / 32.0).floor() - 3.0, (y / 32.0).floor() - 3.0);
            (-(bx * bx + by * by) / 4.0).exp()
        });
        let noisy = heatmap(&|x, y| {
            let h = (x * 12.9898 + y * 78.233).sin() * 43758.545;
            (h - h.floor()) * (-((x - 112.0).powi(2) + (y - 112.0).powi(2)) / 5000.0).exp()
        });
        let kitty = |compress| Pixels {
            protocol: Some(Found {
                protocol: ProtocolType::Kitty,
                cell: FontSize::new(10, 20),
                tmux: false,
                compress,
            }),
            last: RefCell::default(),
        };
        let sent = |image: &RgbImage, compress| {
            inline(image, &kitty(compress), ColorMode::TrueColor, 54, 14).len()
        };
        for (name, image, most) in [("grad-CAM-like", &smooth, 0.05), ("noisy", &noisy, 0.9)] {
            let (raw, compressed) = (sent(image, false), sent(image, true));
            println!(
                "kitty bytes for a 224×224 {name} heatmap at 54×14 cells: {raw} → {compressed}"
            );
            assert!((compressed as f64) < most * raw as f64, "{name}: {raw} → {compressed}");
        }
        let out = inline(&smooth, &kitty(true), ColorMode::TrueColor, 54, 14);
        assert!(out.contains(",f=32,o=z,t=d,s=280,v=280,"), "{}", &out[..80]);
    }

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
