//! The class picker (`/`): a search box over the model's class names, for models with more
//! classes than keys (an ImageNet model's 1,000). Case-insensitive substring search as the
//! user types; an exact name first, then names that start with the text, then the rest, each
//! in class order.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// The search box's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassPicker {
    /// What the user has typed.
    pub query: String,
    /// The highlighted match, an index into [`ClassPicker::matches`].
    pub selected: usize,
}

/// What a key did to the picker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Picked {
    /// Still choosing.
    Open,
    /// This class was chosen.
    Class(usize),
    /// Closed without a choice.
    Cancelled,
}

impl ClassPicker {
    /// The classes whose names contain the query, best first.
    pub fn matches(&self, classes: &[String]) -> Vec<usize> {
        let query = self.query.to_lowercase();
        let mut found: Vec<(u8, usize)> = classes
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let name = name.to_lowercase();
                let rank = if name == query {
                    0
                } else if name.starts_with(&query) {
                    1
                } else if name.contains(&query) {
                    2
                } else {
                    return None;
                };
                Some((rank, i))
            })
            .collect();
        found.sort_unstable();
        found.into_iter().map(|(_, i)| i).collect()
    }

    /// Handles a key: typing narrows the search, ↑ ↓ move, Enter chooses, Esc cancels.
    pub fn handle(&mut self, key: &KeyEvent, classes: &[String]) -> Picked {
        let matches = self.matches(classes);
        match key.code {
            KeyCode::Esc => return Picked::Cancelled,
            KeyCode::Enter => {
                return matches.get(self.selected).map_or(Picked::Open, |&c| Picked::Class(c));
            }
            KeyCode::Up => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down => {
                self.selected = (self.selected + 1).min(matches.len().saturating_sub(1))
            }
            KeyCode::Backspace => {
                self.query.pop();
                self.selected = 0;
            }
            KeyCode::Char(c)
                if !key.modifiers.intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) =>
            {
                self.query.push(c);
                self.selected = 0;
            }
            _ => {}
        }
        Picked::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn typed(picker: &mut ClassPicker, text: &str, classes: &[String]) {
        for c in text.chars() {
            let key = KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
            assert_eq!(picker.handle(&key, classes), Picked::Open);
        }
    }

    #[test]
    fn exact_then_prefix_then_substring_case_insensitive() {
        let classes = names(&["wildcat", "Tabby cat", "cat", "dog", "catamaran"]);
        let picker = ClassPicker { query: "CAT".into(), selected: 0 };
        assert_eq!(picker.matches(&classes), [2, 4, 0, 1]);
        let none = ClassPicker { query: "zebra".into(), selected: 0 };
        assert!(none.matches(&classes).is_empty());
    }

    #[test]
    fn keys_type_move_choose_and_cancel() {
        let classes = names(&["tabby cat", "tiger cat", "tiger", "dog"]);
        let mut picker = ClassPicker::default();
        typed(&mut picker, "tigx", &classes);
        let key = |code| KeyEvent::new(code, KeyModifiers::NONE);
        assert_eq!(picker.handle(&key(KeyCode::Enter), &classes), Picked::Open, "no match");
        picker.handle(&key(KeyCode::Backspace), &classes);
        assert_eq!(picker.matches(&classes), [1, 2]);
        picker.handle(&key(KeyCode::Down), &classes);
        picker.handle(&key(KeyCode::Down), &classes);
        assert_eq!(picker.selected, 1, "stops at the last match");
        assert_eq!(picker.handle(&key(KeyCode::Enter), &classes), Picked::Class(2));
        picker.handle(&key(KeyCode::Up), &classes);
        assert_eq!(picker.handle(&key(KeyCode::Enter), &classes), Picked::Class(1));
        assert_eq!(picker.handle(&key(KeyCode::Esc), &classes), Picked::Cancelled);
    }
}
