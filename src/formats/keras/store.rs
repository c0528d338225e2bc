//! Where a Keras file keeps each layer's variables.
//!
//! - Legacy `.h5` (Keras 2, and Keras 3's `save("x.h5")`): `model_weights/<top layer>/`
//!   lists its variables in the `weight_names` attribute (`conv2d/kernel:0`, or with the
//!   model name in front in Keras 3, `sequential/conv2d/kernel`); a nested model's layers
//!   all sit under the nested model's group. Variables are found by layer and variable name.
//! - Keras 3 `model.weights.h5` (inside `.keras`): `layers/<slot>/vars/0..n` in the
//!   layer's own variable order, nested models as `layers/<slot>/layers/…`. Slots are
//!   named after the class (`conv2d_1`), so layers are found by the `name` attribute
//!   Keras writes on each `vars` group.

use std::collections::HashMap;

use super::hdf5::{Array, H5};
use crate::error::{Error, Result};

/// A layer's place in the file: the nested models above it (outermost first) and its own
/// Keras name.
pub(super) struct LayerPath<'a> {
    /// Names of the enclosing nested models, empty for a top-level layer.
    pub scope: &'a [String],
    /// The layer's Keras name.
    pub name: &'a str,
}

impl LayerPath<'_> {
    /// The flattened name the graph uses, `outer/inner`.
    pub fn flat(&self) -> String {
        self.scope.iter().map(String::as_str).chain([self.name]).collect::<Vec<_>>().join("/")
    }
}

/// The weights part of a Keras file.
pub(super) enum Store {
    /// `model_weights/…` of a legacy `.h5`.
    Legacy(H5),
    /// `model.weights.h5` of a `.keras`, with its layer groups indexed by name path.
    V3 {
        /// The file.
        h5: H5,
        /// `[outer model, …, layer]` → group path.
        groups: HashMap<Vec<String>, String>,
    },
}

/// Containers a Keras 3 model keeps its layers in (`_layer_checkpoint_dependencies` in
/// early 3.x releases).
const V3_CONTAINERS: [&str; 2] = ["layers", "_layer_checkpoint_dependencies"];

impl Store {
    /// Indexes a Keras 3 weights file.
    pub fn v3(h5: H5) -> Result<Store> {
        let mut groups = HashMap::new();
        index_v3(&h5, "", &[], &mut groups, &mut 0)?;
        Ok(Store::V3 { h5, groups })
    }

    /// The variables of `layer`, in the order of `vars` (Keras's variable names, in the
    /// order Keras creates them).
    pub fn fetch(&self, layer: &LayerPath, vars: &[&str]) -> Result<Vec<Array>> {
        match self {
            Store::Legacy(h5) => fetch_legacy(h5, layer, vars),
            Store::V3 { h5, groups } => {
                let key: Vec<String> =
                    layer.scope.iter().cloned().chain([layer.name.to_string()]).collect();
                let Some(group) = groups.get(&key) else {
                    return if vars.is_empty() {
                        Ok(Vec::new())
                    } else {
                        Err(Error::graph(layer.flat(), "its weights are not in the file"))
                    };
                };
                let vars_group = format!("{group}/vars");
                let stored =
                    if h5.has_group(&vars_group) { h5.datasets(&vars_group)?.len() } else { 0 };
                if stored != vars.len() {
                    return Err(Error::graph(
                        layer.flat(),
                        format!(
                            "the file holds {stored} variables, the config implies {} ({})",
                            vars.len(),
                            vars.join(", ")
                        ),
                    ));
                }
                (0..vars.len()).map(|i| h5.array(&format!("{vars_group}/{i}"))).collect()
            }
        }
    }
}

/// Keras nests models a few levels deep; a file that goes deeper, or names more layer groups
/// than this, has links that loop (HDF5 allows a group to contain its own parent).
const MAX_NESTING: usize = 32;
const MAX_GROUPS: usize = 100_000;

/// Indexes the layer groups under `prefix`; `visited` counts the groups walked so far, so
/// a group linked into itself several times (whose walk grows exponentially with depth)
/// stops after [`MAX_GROUPS`] visits however deep it has got.
fn index_v3(
    h5: &H5,
    prefix: &str,
    names: &[String],
    groups: &mut HashMap<Vec<String>, String>,
    visited: &mut usize,
) -> Result<()> {
    *visited += 1;
    if names.len() > MAX_NESTING || *visited > MAX_GROUPS {
        return Err(Error::bad_file(
            h5.path(),
            format!(
                "the weights nest layers more than {MAX_NESTING} deep or hold more than \
                 {MAX_GROUPS} layer groups (a group linked into itself?)"
            ),
        ));
    }
    for container in V3_CONTAINERS {
        let container = format!("{prefix}{container}");
        if !h5.has_group(&container) {
            continue;
        }
        for slot in h5.groups(&container)? {
            let path = format!("{container}/{slot}");
            let vars = format!("{path}/vars");
            let name = if h5.has_group(&vars) { h5.attr_string(&vars, "name")? } else { None };
            let mut key = names.to_vec();
            key.push(name.unwrap_or(slot));
            index_v3(h5, &format!("{path}/"), &key, groups, visited)?;
            groups.insert(key, path);
        }
    }
    Ok(())
}

/// Other names a variable has had: Keras 3 calls a depthwise kernel `kernel`.
fn aliases(var: &str) -> &[&str] {
    match var {
        "depthwise_kernel" => &["depthwise_kernel", "kernel"],
        _ => &[],
    }
}

fn fetch_legacy(h5: &H5, layer: &LayerPath, vars: &[&str]) -> Result<Vec<Array>> {
    let top = layer.scope.first().map_or(layer.name, String::as_str);
    let group = format!("model_weights/{top}");
    if vars.is_empty() {
        return Ok(Vec::new());
    }
    if !h5.has_group(&group) {
        return Err(Error::graph(layer.flat(), "its weights are not in the file"));
    }
    let names = h5.attr_strings(&group, "weight_names")?;
    // `…/<layer>/<variable>:0` → (layer, variable).
    let split = |full: &str| {
        let full = full.split_once(':').map_or(full, |(n, _)| n);
        let mut parts = full.rsplit('/');
        let var = parts.next().unwrap_or_default().to_string();
        (parts.next().map(str::to_string), var)
    };
    vars.iter()
        .map(|&var| {
            // A weight made without a name (ConvNeXt's LayerScale) is `variable` or
            // `variable_<n>` in Keras 3's legacy .h5: the one weight of a one-weight layer.
            let unnamed = |v: &str| {
                vars.len() == 1
                    && v.strip_prefix("variable").is_some_and(|n| {
                        n.is_empty()
                            || n.strip_prefix('_').is_some_and(|n| n.parse::<u32>().is_ok())
                    })
            };
            let wanted = |v: &str| v == var || aliases(var).contains(&v) || unnamed(v);
            let by_layer: Vec<&String> = names
                .iter()
                .filter(|n| {
                    let (owner, v) = split(n);
                    owner.as_deref() == Some(layer.name) && wanted(&v)
                })
                .collect();
            // A top-level layer owns everything in its group, whatever its variables
            // were called when they were made.
            let found = if by_layer.is_empty() && layer.scope.is_empty() {
                names.iter().filter(|n| wanted(&split(n).1)).collect()
            } else {
                by_layer
            };
            match found.as_slice() {
                [one] => h5.array(&format!("{group}/{one}")),
                [] => Err(Error::graph(
                    layer.flat(),
                    format!("weight '{var}' is not in the file (it has: {})", names.join(", ")),
                )),
                _ => Err(Error::graph(layer.flat(), format!("weight '{var}' is ambiguous"))),
            }
        })
        .collect()
}
