//! Colour scales: [`Colormap`] and its tables (matplotlib's jet, viridis, inferno, turbo and
//! reversed RdBu, plus grey), mapping a value in [0, 1] to an RGB colour.

/// Colour scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Colormap {
    /// matplotlib's `jet`: dark blue, blue, cyan, yellow, red, dark red (keras-vis' default).
    #[default]
    Jet,
    /// matplotlib's `viridis`: perceptually uniform, dark purple to yellow.
    Viridis,
    /// matplotlib's `inferno`: perceptually uniform, black through red to pale yellow.
    Inferno,
    /// matplotlib's `turbo`: a smoother rainbow than jet.
    Turbo,
    /// Black to white.
    Gray,
    /// Blue, white, red (matplotlib's `RdBu_r`), for signed values centred on zero.
    Diverging,
}

impl Colormap {
    /// Every colormap, in the order the explorer cycles them.
    pub const ALL: [Colormap; 6] = [
        Colormap::Jet,
        Colormap::Viridis,
        Colormap::Inferno,
        Colormap::Turbo,
        Colormap::Gray,
        Colormap::Diverging,
    ];

    /// The lower-case name used on the command line and in the explorer.
    pub fn name(self) -> &'static str {
        match self {
            Colormap::Jet => "jet",
            Colormap::Viridis => "viridis",
            Colormap::Inferno => "inferno",
            Colormap::Turbo => "turbo",
            Colormap::Gray => "gray",
            Colormap::Diverging => "diverging",
        }
    }

    /// The colormap called `name` (case-insensitive; the inverse of [`Colormap::name`]).
    pub fn parse(name: &str) -> Option<Colormap> {
        let name = name.trim();
        Colormap::ALL.into_iter().find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// The colormap after this one in [`Colormap::ALL`], wrapping round.
    pub fn next(self) -> Colormap {
        let i = Colormap::ALL.iter().position(|&c| c == self).unwrap_or(0);
        Colormap::ALL[(i + 1) % Colormap::ALL.len()]
    }

    /// The colour at `t` in [0, 1]; `t` is clamped, and NaN counts as 0.
    pub fn rgb(self, t: f32) -> [u8; 3] {
        // `clamp` passes NaN through, so NaN is caught first: a NaN in a heatmap must draw
        // as the low end rather than poison the interpolation below.
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        match self {
            Colormap::Jet => [
                to_byte(piecewise(&JET_RED, t)),
                to_byte(piecewise(&JET_GREEN, t)),
                to_byte(piecewise(&JET_BLUE, t)),
            ],
            Colormap::Viridis => from_table(&VIRIDIS, t),
            Colormap::Inferno => from_table(&INFERNO, t),
            Colormap::Turbo => from_table(&TURBO, t),
            Colormap::Gray => {
                let v = to_byte(t);
                [v, v, v]
            }
            Colormap::Diverging => from_table(&RDBU_R, t),
        }
    }
}

/// A fraction in [0, 1] as a byte, rounded.
pub(super) fn to_byte(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Linear interpolation through `(t, value)` breakpoints sorted by `t`, the way matplotlib
/// reads a `LinearSegmentedColormap`'s segment data (both sides of each break are equal for
/// jet, so one value per break suffices).
fn piecewise(points: &[(f32, f32)], t: f32) -> f32 {
    let mut prev = match points.first() {
        Some(&p) => p,
        None => return 0.0,
    };
    for &(x, v) in points {
        if t <= x {
            let span = x - prev.0;
            if span <= 0.0 {
                return v;
            }
            return prev.1 + (v - prev.1) * (t - prev.0) / span;
        }
        prev = (x, v);
    }
    prev.1
}

/// Linear interpolation in a table of colours spaced evenly over [0, 1].
fn from_table(table: &[[u8; 3]], t: f32) -> [u8; 3] {
    let last = table.len().saturating_sub(1);
    if last == 0 {
        return table.first().copied().unwrap_or([0, 0, 0]);
    }
    let x = t * last as f32;
    // `t` is already clamped, so `x` is in [0, last]; stopping at `last - 1` makes t = 1 the
    // end of the final segment rather than an index past it.
    let i = (x.floor() as usize).min(last - 1);
    let f = x - i as f32;
    let (a, b) = (table[i], table[i + 1]);
    let mix = |c: usize| (f32::from(a[c]) + (f32::from(b[c]) - f32::from(a[c])) * f).round() as u8;
    [mix(0), mix(1), mix(2)]
}

// matplotlib's `jet` segment data (`matplotlib/_cm.py`, `_jet_data`), per channel.
const JET_RED: [(f32, f32); 5] = [(0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)];
const JET_GREEN: [(f32, f32); 6] =
    [(0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)];
const JET_BLUE: [(f32, f32); 5] = [(0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)];

// viridis, inferno and turbo: matplotlib 3.11's 256-entry tables (`matplotlib/_cm_listed.py`)
// sampled at t = k/32, k = 0..=32, and rounded to bytes. Interpolating these 33 anchors
// linearly stays within 2/255 of the full tables everywhere.
const VIRIDIS: [[u8; 3]; 33] = [
    [68, 1, 84],
    [71, 13, 96],
    [72, 24, 106],
    [72, 35, 116],
    [71, 45, 123],
    [69, 54, 129],
    [66, 64, 134],
    [63, 73, 137],
    [59, 82, 139],
    [55, 90, 141],
    [51, 99, 141],
    [47, 106, 142],
    [44, 114, 142],
    [41, 122, 142],
    [38, 129, 142],
    [35, 137, 142],
    [33, 144, 140],
    [31, 152, 139],
    [31, 159, 136],
    [33, 166, 133],
    [40, 174, 128],
    [49, 181, 123],
    [62, 188, 116],
    [76, 194, 108],
    [93, 201, 99],
    [110, 206, 88],
    [130, 211, 76],
    [150, 216, 63],
    [171, 220, 50],
    [192, 223, 36],
    [213, 226, 26],
    [234, 229, 26],
    [253, 231, 37],
];
const INFERNO: [[u8; 3]; 33] = [
    [0, 0, 4],
    [4, 3, 18],
    [11, 7, 36],
    [21, 11, 55],
    [33, 12, 74],
    [46, 10, 90],
    [60, 9, 101],
    [74, 12, 107],
    [87, 16, 109],
    [99, 20, 110],
    [112, 25, 110],
    [125, 30, 109],
    [137, 34, 106],
    [150, 39, 102],
    [163, 43, 97],
    [175, 49, 92],
    [187, 55, 85],
    [198, 62, 77],
    [209, 70, 68],
    [219, 79, 59],
    [227, 89, 50],
    [235, 101, 40],
    [241, 113, 30],
    [246, 127, 20],
    [249, 141, 10],
    [251, 156, 6],
    [252, 171, 15],
    [251, 186, 31],
    [249, 202, 50],
    [245, 217, 73],
    [242, 232, 101],
    [243, 245, 134],
    [252, 255, 164],
];
const TURBO: [[u8; 3]; 33] = [
    [48, 18, 59],
    [57, 42, 115],
    [64, 64, 161],
    [68, 86, 199],
    [70, 107, 227],
    [70, 127, 246],
    [66, 147, 255],
    [55, 167, 250],
    [41, 187, 236],
    [29, 205, 216],
    [24, 220, 195],
    [30, 232, 176],
    [49, 242, 153],
    [76, 249, 126],
    [107, 253, 100],
    [138, 255, 77],
    [163, 253, 60],
    [184, 247, 53],
    [204, 237, 52],
    [222, 224, 55],
    [237, 208, 58],
    [248, 192, 58],
    [253, 174, 53],
    [254, 152, 44],
    [251, 128, 34],
    [245, 104, 23],
    [236, 82, 15],
    [224, 64, 9],
    [210, 49, 5],
    [192, 35, 2],
    [172, 23, 1],
    [149, 13, 1],
    [122, 4, 3],
];

// matplotlib's `RdBu` (ColorBrewer, `matplotlib/_cm.py`, `_RdBu_data`) reversed, as `RdBu_r`:
// blue for low, near-white (247, 247, 247) at t = 0.5, red for high.
const RDBU_R: [[u8; 3]; 11] = [
    [5, 48, 97],
    [33, 102, 172],
    [67, 147, 195],
    [146, 197, 222],
    [209, 229, 240],
    [247, 247, 247],
    [253, 219, 199],
    [244, 165, 130],
    [214, 96, 77],
    [178, 24, 43],
    [103, 0, 31],
];

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: [u8; 3], b: [u8; 3], tol: u8) -> bool {
        a.iter().zip(b).all(|(&x, y)| x.abs_diff(y) <= tol)
    }

    #[test]
    fn jet_runs_dark_blue_to_dark_red_through_green() {
        assert_eq!(Colormap::Jet.rgb(0.0), [0, 0, 128]);
        assert_eq!(Colormap::Jet.rgb(1.0), [128, 0, 0]);
        let [r, g, b] = Colormap::Jet.rgb(0.5);
        assert_eq!(g, 255);
        assert!(r < 160 && b < 160, "jet(0.5) = {:?}", [r, g, b]);
        // Pure blue and pure red plateaus of matplotlib's segment data.
        assert_eq!(Colormap::Jet.rgb(0.225), [0, 102, 255]);
        assert_eq!(Colormap::Jet.rgb(0.8), [255, 104, 0]);
    }

    #[test]
    fn listed_colormaps_match_matplotlib_at_ends_and_middle() {
        assert_eq!(Colormap::Viridis.rgb(0.0), [68, 1, 84]);
        assert_eq!(Colormap::Viridis.rgb(1.0), [253, 231, 37]);
        // viridis(0.5) is matplotlib's #21918c.
        assert!(close(Colormap::Viridis.rgb(0.5), [33, 145, 140], 2));
        assert_eq!(Colormap::Inferno.rgb(0.0), [0, 0, 4]);
        assert_eq!(Colormap::Inferno.rgb(1.0), [252, 255, 164]);
        assert_eq!(Colormap::Turbo.rgb(0.0), [48, 18, 59]);
        assert_eq!(Colormap::Turbo.rgb(1.0), [122, 4, 3]);
    }

    #[test]
    fn gray_and_diverging() {
        assert_eq!(Colormap::Gray.rgb(0.0), [0, 0, 0]);
        assert_eq!(Colormap::Gray.rgb(1.0), [255, 255, 255]);
        assert_eq!(Colormap::Gray.rgb(0.5), [128, 128, 128]);
        assert!(close(Colormap::Diverging.rgb(0.5), [255, 255, 255], 10));
        let [r, _, b] = Colormap::Diverging.rgb(0.0);
        assert!(b > r, "diverging(0) should be blue");
        let [r, _, b] = Colormap::Diverging.rgb(1.0);
        assert!(r > b, "diverging(1) should be red");
    }

    #[test]
    fn rgb_clamps_and_treats_nan_as_zero() {
        for c in Colormap::ALL {
            assert_eq!(c.rgb(f32::NAN), c.rgb(0.0), "{}", c.name());
            assert_eq!(c.rgb(-3.0), c.rgb(0.0), "{}", c.name());
            assert_eq!(c.rgb(7.0), c.rgb(1.0), "{}", c.name());
            assert_eq!(c.rgb(f32::INFINITY), c.rgb(1.0), "{}", c.name());
        }
    }

    #[test]
    fn colormap_names_parse_and_cycle() {
        for c in Colormap::ALL {
            assert_eq!(Colormap::parse(c.name()), Some(c));
            assert_eq!(Colormap::parse(&c.name().to_uppercase()), Some(c));
        }
        assert_eq!(Colormap::parse("rainbow"), None);
        assert_eq!(Colormap::default(), Colormap::Jet);
        let mut c = Colormap::Jet;
        let mut seen = Vec::new();
        for _ in 0..Colormap::ALL.len() {
            seen.push(c);
            c = c.next();
        }
        assert_eq!(c, Colormap::Jet);
        assert_eq!(seen, Colormap::ALL.to_vec());
    }
}
