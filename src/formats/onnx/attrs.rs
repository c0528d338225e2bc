//! Node attributes: ONNX attributes carry their type, checked on every read so that a
//! mistyped attribute is an error rather than a default.

use super::Fallible;
use super::proto::{AttributeProto, attribute_type};

/// An integer attribute, for a node an op's mapping makes.
pub(super) fn int_attribute(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i,
        ..AttributeProto::default()
    }
}

/// An attribute of integers, for a node an op's mapping makes.
pub(super) fn ints_attribute(name: &str, ints: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints,
        ..AttributeProto::default()
    }
}

/// A node's attributes by name, each read with its declared type checked.
pub(super) struct Attrs<'a>(pub(super) &'a [AttributeProto]);

impl<'a> Attrs<'a> {
    pub(super) fn get(&self, name: &str, kind: i32) -> Fallible<Option<&'a AttributeProto>> {
        match self.0.iter().find(|a| a.name == name) {
            Some(a) if a.r#type == kind => Ok(Some(a)),
            Some(a) => Err(format!("attribute '{name}' has type {}, expected {kind}", a.r#type)),
            None => Ok(None),
        }
    }

    pub(super) fn int(&self, name: &str, default: i64) -> Fallible<i64> {
        Ok(self.get(name, attribute_type::INT)?.map_or(default, |a| a.i))
    }

    pub(super) fn float(&self, name: &str, default: f32) -> Fallible<f32> {
        Ok(self.get(name, attribute_type::FLOAT)?.map_or(default, |a| a.f))
    }

    pub(super) fn ints(&self, name: &str) -> Fallible<Option<Vec<i64>>> {
        Ok(self.get(name, attribute_type::INTS)?.map(|a| a.ints.clone()))
    }

    pub(super) fn floats(&self, name: &str) -> Fallible<Option<Vec<f32>>> {
        Ok(self.get(name, attribute_type::FLOATS)?.map(|a| a.floats.clone()))
    }

    pub(super) fn string(&self, name: &str) -> Fallible<Option<String>> {
        Ok(self.get(name, attribute_type::STRING)?.map(|a| String::from_utf8_lossy(&a.s).into()))
    }

    /// A pair like `strides` for the two spatial axes.
    pub(super) fn pair(&self, name: &str, default: usize) -> Fallible<[usize; 2]> {
        match self.ints(name)? {
            None => Ok([default; 2]),
            Some(v) => match v.as_slice() {
                &[a, b] if a > 0 && b > 0 => Ok([a as usize, b as usize]),
                _ => Err(format!("'{name}' {v:?} is not two positive sizes (2-D only)")),
            },
        }
    }
}
