//! What an ONNX file's metadata (`metadata_props`) says beyond its graph: the class names
//! and, for Ultralytics' files, how the input is prepared.
//!
//! Ultralytics writes its classifiers' names as a Python dict (`{0: 'tench', 1:
//! 'goldfish', …}` under `names`) and prepares images as RGB in 0..1 without a mean or std
//! (`classify_transforms`). Other tools put a JSON or Python list of names under `classes`,
//! `labels` or `class_names`. Names are taken only when there is one per output of the
//! explained head; otherwise a note says why they were not.

use super::proto::StringStringEntryProto;
use crate::model::{Model, printable};

/// Keys whose value may be the class names.
const NAME_KEYS: [&str; 4] = ["names", "classes", "labels", "class_names"];

/// `model` with what `props` says about its classes and input.
pub(super) fn apply(mut model: Model, props: &[StringStringEntryProto]) -> Model {
    let value = |key: &str| props.iter().find(|p| p.key == key).map(|p| p.value.as_str());
    if value("author") == Some("Ultralytics") && model.input.assumed {
        // RGB pixels to [0, 1], nothing subtracted or divided: the input description's
        // defaults, now said by the file.
        model.input.assumed = false;
    }
    let Some((key, names)) = NAME_KEYS.iter().find_map(|&key| Some((key, value(key)?))) else {
        return model;
    };
    match parse_names(names) {
        Some(names) if names.len() == model.num_classes() => {
            model.classes = names.iter().map(|n| printable(n)).collect();
        }
        Some(names) => model.notes.push(format!(
            "the file's '{key}' lists {} class names for {} outputs: classes are numbered",
            names.len(),
            model.num_classes()
        )),
        None => model.notes.push(format!(
            "the file's '{key}' is not a list of class names convscope reads (a JSON or \
             Python list of strings, or a dict from 0, 1, 2 … to strings): classes are \
             numbered"
        )),
    }
    model
}

/// The strings of a JSON or Python list (`["a", 'b']`), or of a dict whose keys are the
/// integers 0..n in any order, as numbers or strings (`{0: 'a', "1": "b"}`), in key order.
fn parse_names(text: &str) -> Option<Vec<String>> {
    let mut reader = Reader { rest: text.trim() };
    let dict = match reader.next()? {
        '[' => false,
        '{' => true,
        _ => return None,
    };
    let close = if dict { '}' } else { ']' };
    let mut entries: Vec<(usize, String)> = Vec::new();
    loop {
        reader.skip_space();
        if reader.eat(close) {
            break;
        }
        let key = match dict {
            true => {
                let key = match reader.peek()? {
                    '"' | '\'' => reader.string()?.parse().ok()?,
                    _ => reader.integer()?,
                };
                reader.skip_space();
                reader.eat(':').then_some(())?;
                reader.skip_space();
                key
            }
            false => entries.len(),
        };
        entries.push((key, reader.string()?));
        reader.skip_space();
        if !reader.eat(',') {
            reader.skip_space();
            reader.eat(close).then_some(())?;
            break;
        }
    }
    reader.rest.trim().is_empty().then_some(())?;
    entries.sort_by_key(|(key, _)| *key);
    let numbered = entries.iter().enumerate().all(|(i, (key, _))| *key == i);
    numbered.then(|| entries.into_iter().map(|(_, name)| name).collect())
}

/// A cursor over a Python or JSON literal.
struct Reader<'a> {
    rest: &'a str,
}

impl Reader<'_> {
    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.rest = &self.rest[c.len_utf8()..];
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        let found = self.peek() == Some(c);
        if found {
            self.next();
        }
        found
    }

    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn integer(&mut self) -> Option<usize> {
        let digits = self.rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(self.rest.len());
        let (number, rest) = self.rest.split_at(digits);
        self.rest = rest;
        number.parse().ok()
    }

    /// A quoted string, in single or double quotes, with the escapes Python's `repr` and
    /// JSON write (`\\`, `\'`, `\"`, `\n`, `\t`, `\r`, `\xNN`, `\uNNNN`).
    fn string(&mut self) -> Option<String> {
        let quote = self.next().filter(|&q| q == '"' || q == '\'')?;
        let mut out = String::new();
        loop {
            match self.next()? {
                c if c == quote => return Some(out),
                '\\' => {
                    let escaped = match self.next()? {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        'x' => self.hex(2)?,
                        'u' => self.hex(4)?,
                        other => other,
                    };
                    out.push(escaped);
                }
                c => out.push(c),
            }
        }
    }

    fn hex(&mut self, digits: usize) -> Option<char> {
        let code = self.rest.get(..digits)?;
        self.rest = &self.rest[digits..];
        char::from_u32(u32::from_str_radix(code, 16).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_python_and_json_lists_and_dicts() {
        let names = |text: &str| parse_names(text);
        let abc = Some(vec!["a".to_string(), "b c".to_string(), "it's".to_string()]);
        // Ultralytics' Python dict, out of order, then JSON's.
        assert_eq!(names(r#"{1: 'b c', 0: 'a', 2: "it's"}"#), abc);
        assert_eq!(names(r#"{"0": "a", "1": "b c", "2": "it's"}"#), abc);
        assert_eq!(names(r#"["a", 'b c', 'it\'s',]"#), abc);
        assert_eq!(names(r#" [ "a" , "b\u0020c" , "it\x27s" ] "#), abc);
        assert_eq!(names("[]"), Some(vec![]));
        // Not names: a key missing or repeated, not strings, unclosed, text after the end.
        for bad in [
            "{0: 'a', 2: 'b'}",
            "{0: 'a', 0: 'b'}",
            "[1, 2]",
            "['a', 'b'",
            "['a'] x",
            "'a', 'b'",
            "{0 'a'}",
            "['a\\x4']",
        ] {
            assert_eq!(names(bad), None, "{bad}");
        }
    }
}
