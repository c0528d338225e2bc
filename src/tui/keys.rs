//! Every key binding in one table. The same table answers key presses, draws the `?` help
//! and the status line, so a key and its description can never drift apart.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Leave.
    Quit,
    /// Next tab.
    NextTab,
    /// Previous tab.
    PrevTab,
    /// The tab numbered by the key (F1–F7, Alt+1–7, or 1–7 when digits are not classes).
    TabByNumber,
    /// Next class.
    NextClass,
    /// Previous class.
    PrevClass,
    /// The class numbered by the digit key (models with at most 10 classes).
    ClassByDigit,
    /// Open the class search box.
    FindClass,
    /// Next input.
    NextInput,
    /// Previous input.
    PrevInput,
    /// Next input the model misclassifies.
    NextMistake,
    /// Previous input the model misclassifies.
    PrevMistake,
    /// vanilla → guided → relu.
    NextModifier,
    /// Next layer.
    NextLayer,
    /// Previous layer.
    PrevLayer,
    /// Next colour scale.
    NextColormap,
    /// Heatmap over the input, or beside it.
    ToggleOverlay,
    /// Stop the running job.
    Cancel,
    /// Write the current view as PNG.
    Export,
    /// Scroll the summary down.
    ScrollDown,
    /// Scroll the summary up.
    ScrollUp,
    /// Show or hide the help.
    Help,
    /// Next tile of a grid.
    NextTile,
    /// Previous tile of a grid.
    PrevTile,
    /// Next page of a grid.
    NextPage,
    /// Previous page of a grid.
    PrevPage,
    /// One tile over the whole panel, or the grid again.
    Zoom,
    /// One colour scale for every tile, or one per tile.
    TileScale,
    /// One of the current tab's own actions, numbered by the tab.
    Own(u8),
}

/// What of the shared state a tab's view depends on; the shared keys that change the rest
/// do nothing there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uses {
    /// The current input.
    pub input: bool,
    /// The current class.
    pub class: bool,
    /// The backprop modifier (ReLU rule).
    pub modifier: bool,
    /// A layer, chosen with `[` `]`.
    pub layer: bool,
    /// The colour scale.
    pub colormap: bool,
    /// Heatmaps that can be laid over the input.
    pub overlay: bool,
    /// The view can hold a picture per class: for a model of few classes every class is
    /// computed in one batch, so a class change is a lookup.
    pub per_class: bool,
    /// The view is text (it scrolls).
    pub text: bool,
    /// The view is a grid of tiles (pages, a selected tile, zoom).
    pub grid: bool,
}

impl Uses {
    /// The tiles are the classes (a per-class grid): picking a tile picks the class.
    pub fn tiles_are_classes(self) -> bool {
        self.grid && self.per_class
    }
}

/// Which tabs a shared binding works on: those whose view uses what it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Every tab.
    Always,
    /// Tabs that show a class.
    Class,
    /// Tabs that apply a modifier.
    Modifier,
    /// Tabs with a layer choice.
    Layer,
    /// Tabs with a colour scale.
    Colormap,
    /// Heatmap tabs (overlay).
    Overlay,
    /// Tabs that show text (scrolling).
    Text,
    /// Tabs that show a grid of tiles.
    Grid,
    /// Grid tabs whose tiles are not classes (there ← → pick a tile, not a class).
    Tiles,
    /// Tabs that show a class where ← → do not pick a tile.
    ClassByArrows,
}

impl Need {
    /// Whether a tab that uses `uses` takes the binding.
    fn met(self, uses: Uses) -> bool {
        match self {
            Need::Always => true,
            Need::Class => uses.class,
            Need::Modifier => uses.modifier,
            Need::Layer => uses.layer,
            Need::Colormap => uses.colormap,
            Need::Overlay => uses.overlay,
            Need::Text => uses.text,
            Need::Grid => uses.grid,
            Need::Tiles => uses.grid && !uses.tiles_are_classes(),
            Need::ClassByArrows => uses.class && !Need::Tiles.met(uses),
        }
    }
}

/// One binding: the keys, how the help shows them, what they do and where.
#[derive(Clone, Copy, Debug)]
pub struct Binding {
    /// The keys, with the modifiers they need.
    pub keys: &'static [(KeyCode, KeyModifiers)],
    /// How the keys are written in the help and the status line.
    pub label: &'static str,
    /// What they do, in a few words.
    pub help: &'static str,
    /// The action.
    pub action: Action,
    /// Where a shared binding works (a tab's own bindings work on that tab).
    pub need: Need,
    /// Keys and name in the status line (`None`: only in the help).
    pub status: Option<(&'static str, &'static str)>,
}

impl Binding {
    /// A tab's own binding.
    pub const fn new(
        keys: &'static [(KeyCode, KeyModifiers)],
        label: &'static str,
        help: &'static str,
        action: Action,
        status: Option<(&'static str, &'static str)>,
    ) -> Binding {
        Binding { keys, label, help, action, need: Need::Always, status }
    }
}

/// No modifier key.
pub const NONE: KeyModifiers = KeyModifiers::NONE;
const SHIFT: KeyModifiers = KeyModifiers::SHIFT;
const ALT: KeyModifiers = KeyModifiers::ALT;
/// A plain character key.
pub const fn ch(c: char) -> (KeyCode, KeyModifiers) {
    (KeyCode::Char(c), NONE)
}

/// The table.
pub const BINDINGS: &[Binding] = &[
    Binding {
        keys: &[ch('q'), (KeyCode::Esc, NONE)],
        label: "q",
        help: "quit (Esc: cancel a job first)",
        action: Action::Quit,
        need: Need::Always,
        status: Some(("q", "quit")),
    },
    Binding {
        keys: &[(KeyCode::Tab, NONE)],
        label: "Tab",
        help: "next tab",
        action: Action::NextTab,
        need: Need::Always,
        status: None,
    },
    Binding {
        keys: &[(KeyCode::BackTab, SHIFT), (KeyCode::BackTab, NONE)],
        label: "S-Tab",
        help: "previous tab",
        action: Action::PrevTab,
        need: Need::Always,
        status: None,
    },
    Binding {
        keys: &[
            (KeyCode::F(1), NONE),
            (KeyCode::F(2), NONE),
            (KeyCode::F(3), NONE),
            (KeyCode::F(4), NONE),
            (KeyCode::F(5), NONE),
            (KeyCode::F(6), NONE),
            (KeyCode::F(7), NONE),
            (KeyCode::F(8), NONE),
            (KeyCode::F(9), NONE),
            (KeyCode::Char('1'), ALT),
            (KeyCode::Char('2'), ALT),
            (KeyCode::Char('3'), ALT),
            (KeyCode::Char('4'), ALT),
            (KeyCode::Char('5'), ALT),
            (KeyCode::Char('6'), ALT),
            (KeyCode::Char('7'), ALT),
            (KeyCode::Char('8'), ALT),
            (KeyCode::Char('9'), ALT),
        ],
        label: "F1…",
        help: "tab by number (also Alt+1…; plain 1… when digits are not classes)",
        action: Action::TabByNumber,
        need: Need::Always,
        status: None,
    },
    Binding {
        keys: &[(KeyCode::Right, NONE), ch('l')],
        label: "→ l",
        help: "next tile",
        action: Action::NextTile,
        need: Need::Tiles,
        status: Some(("←/→", "tile")),
    },
    Binding {
        keys: &[(KeyCode::Left, NONE), ch('h')],
        label: "← h",
        help: "previous tile",
        action: Action::PrevTile,
        need: Need::Tiles,
        status: None,
    },
    Binding {
        keys: &[(KeyCode::Right, NONE), ch('l')],
        label: "→ l",
        help: "next class",
        action: Action::NextClass,
        need: Need::ClassByArrows,
        status: Some(("←/→", "class")),
    },
    Binding {
        keys: &[(KeyCode::Left, NONE), ch('h')],
        label: "← h",
        help: "previous class",
        action: Action::PrevClass,
        need: Need::ClassByArrows,
        status: None,
    },
    Binding {
        keys: &[
            ch('0'),
            ch('1'),
            ch('2'),
            ch('3'),
            ch('4'),
            ch('5'),
            ch('6'),
            ch('7'),
            ch('8'),
            ch('9'),
        ],
        label: "0-9",
        help: "class by digit (models with ≤ 10 classes; else digits pick tabs)",
        action: Action::ClassByDigit,
        need: Need::Always,
        status: None,
    },
    Binding {
        keys: &[ch('/')],
        label: "/",
        help: "find a class by name (type, ↑↓, Enter; Esc)",
        action: Action::FindClass,
        need: Need::Class,
        status: Some(("/", "find")),
    },
    Binding {
        keys: &[(KeyCode::Down, NONE), ch('j')],
        label: "↓ j",
        help: "next input",
        action: Action::NextInput,
        need: Need::Always,
        status: Some(("↑/↓", "input")),
    },
    Binding {
        keys: &[(KeyCode::Up, NONE), ch('k')],
        label: "↑ k",
        help: "previous input",
        action: Action::PrevInput,
        need: Need::Always,
        status: None,
    },
    Binding {
        keys: &[ch('n')],
        label: "n",
        help: "next misclassified input",
        action: Action::NextMistake,
        need: Need::Always,
        status: None,
    },
    Binding {
        keys: &[ch('N')],
        label: "N",
        help: "previous misclassified input",
        action: Action::PrevMistake,
        need: Need::Always,
        status: None,
    },
    Binding {
        keys: &[ch('m')],
        label: "m",
        help: "modifier vanilla → guided → relu",
        action: Action::NextModifier,
        need: Need::Modifier,
        status: Some(("m", "modifier")),
    },
    Binding {
        keys: &[ch(']')],
        label: "]",
        help: "next layer",
        action: Action::NextLayer,
        need: Need::Layer,
        status: Some(("[/]", "layer")),
    },
    Binding {
        keys: &[ch('[')],
        label: "[",
        help: "previous layer",
        action: Action::PrevLayer,
        need: Need::Layer,
        status: None,
    },
    Binding {
        keys: &[ch('x')],
        label: "x",
        help: "cancel the running job",
        action: Action::Cancel,
        need: Need::Always,
        status: None,
    },
    Binding {
        keys: &[ch('c')],
        label: "c",
        help: "colour scale",
        action: Action::NextColormap,
        need: Need::Colormap,
        status: Some(("c", "colours")),
    },
    Binding {
        keys: &[ch('o')],
        label: "o",
        help: "overlay heatmap on the input",
        action: Action::ToggleOverlay,
        need: Need::Overlay,
        status: Some(("o", "overlay")),
    },
    Binding {
        keys: &[(KeyCode::PageDown, NONE), ch(' ')],
        label: "PgDn",
        help: "scroll the summary down",
        action: Action::ScrollDown,
        need: Need::Text,
        status: Some(("PgDn/PgUp", "scroll")),
    },
    Binding {
        keys: &[(KeyCode::PageUp, NONE)],
        label: "PgUp",
        help: "scroll the summary up",
        action: Action::ScrollUp,
        need: Need::Text,
        status: None,
    },
    Binding {
        keys: &[(KeyCode::PageDown, NONE), ch(' ')],
        label: "PgDn",
        help: "next page of tiles",
        action: Action::NextPage,
        need: Need::Grid,
        status: Some(("PgDn/PgUp", "page")),
    },
    Binding {
        keys: &[(KeyCode::PageUp, NONE)],
        label: "PgUp",
        help: "previous page of tiles",
        action: Action::PrevPage,
        need: Need::Grid,
        status: None,
    },
    Binding {
        keys: &[(KeyCode::Enter, NONE)],
        label: "Enter",
        help: "zoom: the selected tile over the panel, or the grid",
        action: Action::Zoom,
        need: Need::Grid,
        status: Some(("Enter", "zoom")),
    },
    Binding {
        keys: &[ch('t')],
        label: "t",
        help: "tiles: one colour scale for all, or one each",
        action: Action::TileScale,
        need: Need::Grid,
        status: Some(("t", "scale")),
    },
    Binding {
        keys: &[ch('e')],
        label: "e",
        help: "export the view as PNG",
        action: Action::Export,
        need: Need::Always,
        status: Some(("e", "export")),
    },
    Binding {
        keys: &[ch('?')],
        label: "?",
        help: "help",
        action: Action::Help,
        need: Need::Always,
        status: Some(("?", "help")),
    },
];

/// What a key means on a tab with its `own` bindings that `uses` what it uses: the
/// binding's action and, for numbered keys, the number. `digits_are_classes` says whether
/// plain digits pick classes (≤ 10 classes) or tabs (of which there are `tab_count`).
pub fn lookup(
    key: &KeyEvent,
    (own, uses): (&'static [Binding], Uses),
    digits_are_classes: bool,
    tab_count: usize,
) -> Option<(Action, usize)> {
    // Shifted characters ('?', '+') arrive with SHIFT on some terminals: compare without it.
    let mods =
        if matches!(key.code, KeyCode::Char(_)) { key.modifiers - SHIFT } else { key.modifiers };
    let number = match key.code {
        KeyCode::F(n) => usize::from(n),
        KeyCode::Char(c) => c.to_digit(10).map_or(0, |d| d as usize),
        _ => 0,
    };
    if !digits_are_classes
        && mods == NONE
        && (1..=tab_count).contains(&number)
        && matches!(key.code, KeyCode::Char(_))
    {
        return Some((Action::TabByNumber, number));
    }
    // A tab's own keys first: they may reuse a key the tab has no shared use for.
    own.iter()
        .chain(BINDINGS.iter().filter(|b| b.need.met(uses)))
        .find(|b| b.keys.iter().any(|&(code, m)| code == key.code && m == mods))
        .map(|b| (b.action, number))
}

/// The status line's key hints on a tab (its `own` bindings, what it `uses`): `(keys,
/// name)`. Hints are cut from the end when the line is short, so the order is by
/// importance: quitting and moving between inputs and classes, the tab's own keys, the
/// other shared ones, then export and help. The class search box is hinted only where
/// digits do not pick classes (a model of more than ten).
pub fn status_hints(
    (own, uses): (&'static [Binding], Uses),
    digits_are_classes: bool,
) -> Vec<(&'static str, &'static str)> {
    let last = |b: &&Binding| matches!(b.action, Action::Export | Action::Help);
    let first = |b: &&Binding| {
        !last(b) && matches!(b.need, Need::Always | Need::Class | Need::ClassByArrows)
    };
    let hinted = move |b: &&Binding| !(digits_are_classes && b.action == Action::FindClass);
    let shared = || BINDINGS.iter().filter(move |b| b.need.met(uses)).filter(hinted);
    shared()
        .filter(first)
        .chain(own)
        .chain(shared().filter(|b| !first(b) && !last(b)))
        .chain(shared().filter(last))
        .filter_map(|b| b.status)
        .collect()
}

/// Every binding, for the help: the shared ones, then each tab's own (`own`, once each).
pub fn help_entries(own: &[&'static [Binding]]) -> Vec<&'static Binding> {
    let mut entries: Vec<&'static Binding> = BINDINGS.iter().collect();
    for bindings in own {
        for binding in bindings.iter() {
            if !entries.iter().any(|e| e.label == binding.label && e.help == binding.help) {
                entries.push(binding);
            }
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::tabs;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, NONE)
    }

    /// The own bindings and uses of the tab titled `title`.
    fn tab(title: &str) -> (&'static [Binding], Uses) {
        let tab = tabs::all().into_iter().find(|t| t.title() == title).unwrap();
        (tab.bindings(), tab.uses())
    }

    #[test]
    fn digits_pick_classes_or_tabs() {
        let saliency = tab("Saliency");
        let summary = tab("Summary");
        assert_eq!(
            lookup(&key(KeyCode::Char('3')), saliency, true, 7),
            Some((Action::ClassByDigit, 3))
        );
        assert_eq!(
            lookup(&key(KeyCode::Char('3')), saliency, false, 7),
            Some((Action::TabByNumber, 3))
        );
        assert_eq!(
            lookup(&key(KeyCode::Char('8')), saliency, false, 7),
            Some((Action::ClassByDigit, 8)),
            "no eighth tab"
        );
        assert_eq!(lookup(&key(KeyCode::F(6)), summary, true, 7), Some((Action::TabByNumber, 6)));
        let alt = KeyEvent::new(KeyCode::Char('2'), ALT);
        assert_eq!(lookup(&alt, summary, true, 7), Some((Action::TabByNumber, 2)));
    }

    #[test]
    fn keys_only_work_where_they_mean_something() {
        let (saliency, filters, gradcam) = (tab("Saliency"), tab("Filters"), tab("Grad-CAM"));
        assert_eq!(
            lookup(&key(KeyCode::Char('m')), saliency, true, 7),
            Some((Action::NextModifier, 0))
        );
        assert_eq!(lookup(&key(KeyCode::Char('m')), filters, true, 7), None);
        let question = KeyEvent::new(KeyCode::Char('?'), SHIFT);
        assert_eq!(lookup(&question, filters, true, 7), Some((Action::Help, 0)));
        // A tab's own key works on it and nowhere else.
        assert!(matches!(
            lookup(&key(KeyCode::Char('g')), gradcam, true, 7),
            Some((Action::Own(_), 0))
        ));
        assert_eq!(lookup(&key(KeyCode::Char('g')), saliency, true, 7), None);
    }

    #[test]
    fn every_tab_has_hints_and_quit_and_every_key_is_in_the_help() {
        let all = tabs::all();
        for tab in &all {
            let hints = status_hints((tab.bindings(), tab.uses()), true);
            assert!(hints.iter().any(|h| h.0 == "q"), "{}", tab.title());
        }
        assert!(status_hints(tab("Saliency"), true).contains(&("m", "modifier")));
        assert!(!status_hints(tab("Saliency"), true).contains(&("/", "find")));
        assert!(status_hints(tab("Saliency"), false).contains(&("/", "find")));
        let own: Vec<_> = all.iter().map(|t| t.bindings()).collect();
        let help = help_entries(&own);
        for tab in &all {
            for binding in tab.bindings() {
                assert!(help.iter().any(|h| h.label == binding.label), "{}", binding.label);
            }
        }
    }
}
