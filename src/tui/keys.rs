//! Every key binding in one table. The same table answers key presses, draws the `?` help
//! and the status line, so a key and its description can never drift apart.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::tui::app::Tab;

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
    /// Larger occlusion square.
    Bigger,
    /// Smaller occlusion square.
    Smaller,
    /// Occlusion stride 1 (fine) or = size.
    ToggleStride,
    /// Occlusion: p or its drop.
    ToggleDrop,
    /// Grad-CAM or guided grad-CAM.
    ToggleGuided,
    /// Start the tab's background job again (new seed for activation maximisation).
    Rerun,
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
    /// Tabs where it works; empty means everywhere.
    pub tabs: &'static [Tab],
    /// Keys and name in the status line (`None`: only in the help).
    pub status: Option<(&'static str, &'static str)>,
}

const NONE: KeyModifiers = KeyModifiers::NONE;
const SHIFT: KeyModifiers = KeyModifiers::SHIFT;
const ALT: KeyModifiers = KeyModifiers::ALT;
const CLASS_TABS: &[Tab] = &[Tab::Occlusion, Tab::Saliency, Tab::GradCam];
const HEATMAP_TABS: &[Tab] = &[Tab::Occlusion, Tab::Saliency, Tab::GradCam];
const LAYER_TABS: &[Tab] = &[Tab::Filters, Tab::Features, Tab::GradCam];
const fn ch(c: char) -> (KeyCode, KeyModifiers) {
    (KeyCode::Char(c), NONE)
}

/// The table.
pub const BINDINGS: &[Binding] = &[
    Binding {
        keys: &[ch('q'), (KeyCode::Esc, NONE)],
        label: "q",
        help: "quit (Esc: cancel a job first)",
        action: Action::Quit,
        tabs: &[],
        status: Some(("q", "quit")),
    },
    Binding {
        keys: &[(KeyCode::Tab, NONE)],
        label: "Tab",
        help: "next tab",
        action: Action::NextTab,
        tabs: &[],
        status: None,
    },
    Binding {
        keys: &[(KeyCode::BackTab, SHIFT), (KeyCode::BackTab, NONE)],
        label: "S-Tab",
        help: "previous tab",
        action: Action::PrevTab,
        tabs: &[],
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
            (KeyCode::Char('1'), ALT),
            (KeyCode::Char('2'), ALT),
            (KeyCode::Char('3'), ALT),
            (KeyCode::Char('4'), ALT),
            (KeyCode::Char('5'), ALT),
            (KeyCode::Char('6'), ALT),
            (KeyCode::Char('7'), ALT),
        ],
        label: "F1-F7",
        help: "tab by number (also Alt+1-7; plain 1-7 when digits are not classes)",
        action: Action::TabByNumber,
        tabs: &[],
        status: None,
    },
    Binding {
        keys: &[(KeyCode::Right, NONE), ch('l')],
        label: "→ l",
        help: "next class",
        action: Action::NextClass,
        tabs: CLASS_TABS,
        status: Some(("←/→", "class")),
    },
    Binding {
        keys: &[(KeyCode::Left, NONE), ch('h')],
        label: "← h",
        help: "previous class",
        action: Action::PrevClass,
        tabs: CLASS_TABS,
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
        help: "class by digit (models with ≤ 10 classes; else 1-7 pick tabs)",
        action: Action::ClassByDigit,
        tabs: &[],
        status: None,
    },
    Binding {
        keys: &[(KeyCode::Down, NONE), ch('j')],
        label: "↓ j",
        help: "next input",
        action: Action::NextInput,
        tabs: &[],
        status: Some(("↑/↓", "input")),
    },
    Binding {
        keys: &[(KeyCode::Up, NONE), ch('k')],
        label: "↑ k",
        help: "previous input",
        action: Action::PrevInput,
        tabs: &[],
        status: None,
    },
    Binding {
        keys: &[ch('n')],
        label: "n",
        help: "next misclassified input",
        action: Action::NextMistake,
        tabs: &[],
        status: None,
    },
    Binding {
        keys: &[ch('N')],
        label: "N",
        help: "previous misclassified input",
        action: Action::PrevMistake,
        tabs: &[],
        status: None,
    },
    Binding {
        keys: &[ch('m')],
        label: "m",
        help: "modifier vanilla → guided → relu",
        action: Action::NextModifier,
        tabs: &[Tab::Saliency, Tab::GradCam],
        status: Some(("m", "modifier")),
    },
    Binding {
        keys: &[ch(']')],
        label: "]",
        help: "next layer",
        action: Action::NextLayer,
        tabs: LAYER_TABS,
        status: Some(("[/]", "layer")),
    },
    Binding {
        keys: &[ch('[')],
        label: "[",
        help: "previous layer",
        action: Action::PrevLayer,
        tabs: LAYER_TABS,
        status: None,
    },
    Binding {
        keys: &[ch('g')],
        label: "g",
        help: "grad-CAM / guided grad-CAM",
        action: Action::ToggleGuided,
        tabs: &[Tab::GradCam],
        status: Some(("g", "guided")),
    },
    Binding {
        keys: &[ch('+'), ch('=')],
        label: "+",
        help: "occlusion square bigger",
        action: Action::Bigger,
        tabs: &[Tab::Occlusion],
        status: Some(("+/-", "size")),
    },
    Binding {
        keys: &[ch('-')],
        label: "-",
        help: "occlusion square smaller",
        action: Action::Smaller,
        tabs: &[Tab::Occlusion],
        status: None,
    },
    Binding {
        keys: &[ch('s')],
        label: "s",
        help: "occlusion stride 1 (fine) / = size",
        action: Action::ToggleStride,
        tabs: &[Tab::Occlusion],
        status: Some(("s", "stride")),
    },
    Binding {
        keys: &[ch('d')],
        label: "d",
        help: "occlusion: p / drop in p",
        action: Action::ToggleDrop,
        tabs: &[Tab::Occlusion],
        status: None,
    },
    Binding {
        keys: &[ch('r')],
        label: "r",
        help: "run again (new seed)",
        action: Action::Rerun,
        tabs: &[Tab::MaxAct],
        status: Some(("r", "rerun")),
    },
    Binding {
        keys: &[ch('x')],
        label: "x",
        help: "cancel the running job",
        action: Action::Cancel,
        tabs: &[],
        status: None,
    },
    Binding {
        keys: &[ch('c')],
        label: "c",
        help: "colour scale",
        action: Action::NextColormap,
        tabs: &[Tab::Features, Tab::Occlusion, Tab::Saliency, Tab::GradCam],
        status: Some(("c", "colours")),
    },
    Binding {
        keys: &[ch('o')],
        label: "o",
        help: "overlay heatmap on the input",
        action: Action::ToggleOverlay,
        tabs: HEATMAP_TABS,
        status: Some(("o", "overlay")),
    },
    Binding {
        keys: &[(KeyCode::PageDown, NONE), ch(' ')],
        label: "PgDn",
        help: "scroll the summary down",
        action: Action::ScrollDown,
        tabs: &[Tab::Summary],
        status: Some(("PgDn/PgUp", "scroll")),
    },
    Binding {
        keys: &[(KeyCode::PageUp, NONE)],
        label: "PgUp",
        help: "scroll the summary up",
        action: Action::ScrollUp,
        tabs: &[Tab::Summary],
        status: None,
    },
    Binding {
        keys: &[ch('e')],
        label: "e",
        help: "export the view as PNG",
        action: Action::Export,
        tabs: &[],
        status: Some(("e", "export")),
    },
    Binding {
        keys: &[ch('?')],
        label: "?",
        help: "help",
        action: Action::Help,
        tabs: &[],
        status: Some(("?", "help")),
    },
];

/// What a key means on `tab`: the binding's action and, for numbered keys, the number.
/// `digits_are_classes` says whether plain digits pick classes (≤ 10 classes) or tabs.
pub fn lookup(key: &KeyEvent, tab: Tab, digits_are_classes: bool) -> Option<(Action, usize)> {
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
        && (1..=7).contains(&number)
        && matches!(key.code, KeyCode::Char(_))
    {
        return Some((Action::TabByNumber, number));
    }
    BINDINGS
        .iter()
        .filter(|b| b.tabs.is_empty() || b.tabs.contains(&tab))
        .find(|b| b.keys.iter().any(|&(code, m)| code == key.code && m == mods))
        .map(|b| (b.action, number))
}

/// The status line's key hints for `tab`: `(keys, name)`.
pub fn status_hints(tab: Tab) -> Vec<(&'static str, &'static str)> {
    BINDINGS
        .iter()
        .filter(|b| b.tabs.is_empty() || b.tabs.contains(&tab))
        .filter_map(|b| b.status)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, NONE)
    }

    #[test]
    fn digits_pick_classes_or_tabs() {
        assert_eq!(
            lookup(&key(KeyCode::Char('3')), Tab::Saliency, true),
            Some((Action::ClassByDigit, 3))
        );
        assert_eq!(
            lookup(&key(KeyCode::Char('3')), Tab::Saliency, false),
            Some((Action::TabByNumber, 3))
        );
        assert_eq!(lookup(&key(KeyCode::F(6)), Tab::Summary, true), Some((Action::TabByNumber, 6)));
        let alt = KeyEvent::new(KeyCode::Char('2'), ALT);
        assert_eq!(lookup(&alt, Tab::Summary, true), Some((Action::TabByNumber, 2)));
    }

    #[test]
    fn keys_only_work_where_they_mean_something() {
        assert_eq!(
            lookup(&key(KeyCode::Char('m')), Tab::Saliency, true),
            Some((Action::NextModifier, 0))
        );
        assert_eq!(lookup(&key(KeyCode::Char('m')), Tab::Filters, true), None);
        let question = KeyEvent::new(KeyCode::Char('?'), SHIFT);
        assert_eq!(lookup(&question, Tab::Filters, true), Some((Action::Help, 0)));
    }

    #[test]
    fn every_tab_has_hints_and_quit() {
        for tab in Tab::ALL {
            let hints = status_hints(tab);
            assert!(hints.iter().any(|h| h.0 == "q"), "{tab:?}");
        }
        assert!(status_hints(Tab::Saliency).contains(&("m", "modifier")));
    }
}
