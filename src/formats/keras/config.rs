//! The architecture from a Keras model config (the `model_config` attribute of a `.h5`, or
//! `config.json` of a `.keras`): Sequential and Functional models, nested models flattened
//! into one list of layers named `outer/inner`, each naming the layers it reads.
//!
//! Keras 2 writes a Functional layer's inputs as `[[["conv2d", 0, 0, {}], …]]`; Keras 3 as
//! `[{"args": [<keras tensors>], "kwargs": {…}}]`, a keras tensor naming its layer in
//! `config.keras_history`. Both are read.
//!
//! A layer may also be a function called on values and constants: Keras 3 writes `x + 3.0`
//! as an ops layer (class `Add` of module `keras.src.ops.numpy`, args `[<keras tensor>,
//! 3.0]`; the legacy `.h5` drops the module), tf-keras as a `TFOpLambda` whose inbound
//! entry is `[x, 0, 0, {"y": 3.0}]` (`["_CONSTANT_VALUE", -1, 3.0, {"y": [x, 0, 0]}]` for
//! `3.0 - x`). Such a layer keeps its [`Operand`]s in call order.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::{Error, Result};

/// One layer of the flattened model.
#[derive(Clone, Debug)]
pub(super) struct Layer {
    /// Flattened name: `outer/inner` for a layer inside the nested model `outer`.
    pub name: String,
    /// The nested models above it, outermost first (for finding its weights).
    pub scope: Vec<String>,
    /// Its own Keras name.
    pub keras_name: String,
    /// Keras class name (`Conv2D`).
    pub class: String,
    /// The package a class from outside Keras comes from (`keras_hub`, or `Custom` for a
    /// user's own layer): its computation is Python code the file does not hold.
    pub package: Option<String>,
    /// Its `config` object.
    pub config: Value,
    /// Flattened names of the layers it reads, or the input's name.
    pub inputs: Vec<String>,
    /// Its positional operands where it is called as a function on values and constants
    /// (`x + 3.0`, `x * y`); `None` for a layer called on its input or on one list of
    /// inputs (as a merge layer `Add()([x, y])` is).
    pub operands: Option<Vec<Operand>>,
}

/// An operand of a layer called as a function.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Operand {
    /// A value it reads: the flattened name of a layer or the input.
    Value(String),
    /// A number or nested list of numbers as written (Keras 3 wraps arrays as
    /// `{"class_name": "__numpy__", "config": {"value": …}}`).
    Constant(Value),
}

/// What the one call of a layer reads: layers named as in its model, in argument order.
struct Call {
    reads: Vec<String>,
    operands: Option<Vec<Operand>>,
}

/// The flattened model.
#[derive(Clone, Debug)]
pub(super) struct Architecture {
    /// The model's name.
    pub name: String,
    /// Name of the input layer.
    pub input_name: String,
    /// Input shape as Keras gives it, batch axis first (`null` for a free size).
    pub input_shape: Vec<Option<usize>>,
    /// Layers in an order where each reads only the input or layers before it.
    pub layers: Vec<Layer>,
    /// The layer (or input) whose output is the model's output.
    pub output: String,
    /// Written by Keras 3 (a `.keras` file, or an `.h5` whose `keras_version` is 3.x).
    pub keras3: bool,
}

impl Architecture {
    /// Where a layer computes in another float type than float32 (mixed precision's
    /// `mixed_float16` policy, a `float16` or `float64` layer): its name and policy.
    /// tf-keras writes the policy as a string or as `{"class_name": "Policy", "config":
    /// {"name": …}}`, Keras 3 as a `DTypePolicy` of the same form.
    pub fn other_precision(&self) -> Option<String> {
        self.layers.iter().find_map(|layer| {
            let dtype = layer.config.get("dtype")?;
            let policy = dtype.as_str().or_else(|| dtype.get("config")?.get("name")?.as_str())?;
            (policy != "float32")
                .then(|| format!("layer '{}' has the dtype policy {policy}", layer.name))
        })
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::Invalid(format!("model config: {}", message.into()))
}

/// Field `key` of a JSON object, an error naming `what` if missing.
fn field<'a>(v: &'a Value, key: &str, what: &str) -> Result<&'a Value> {
    v.get(key).ok_or_else(|| invalid(format!("{what} has no '{key}'")))
}

fn string(v: &Value, key: &str, what: &str) -> Result<String> {
    field(v, key, what)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| invalid(format!("'{key}' of {what} is not text")))
}

const MODEL_CLASSES: [&str; 3] = ["Sequential", "Functional", "Model"];

/// The package of a class from outside Keras, as the file records it: Keras 3's
/// `registered_name` (`keras_hub>ResNetBackbone`) or `module`, tf-keras's `Custom>Class`.
fn package(object: &Value) -> Option<String> {
    let text = |key| object.get(key).and_then(Value::as_str);
    let registered = [text("registered_name"), text("class_name")]
        .into_iter()
        .flatten()
        .find_map(|name| name.split_once('>').map(|(package, _)| package));
    let module = text("module").and_then(|m| m.split('.').next());
    let package = registered.or(module)?;
    (!["keras", "tf_keras", "tensorflow"].contains(&package)).then(|| package.to_string())
}

/// What to do with a model whose classes come from `package`, not Keras.
pub(super) fn python_only(package: &str) -> String {
    let class = match package {
        "Custom" | "__main__" => "a custom class".to_string(),
        package => format!("a class from {package}"),
    };
    format!(
        "{class}, which the file records by its name and arguments, its computation left in Python: {CONVERT}"
    )
}

/// The way out for a computation the file leaves in Python.
pub(super) const CONVERT: &str = "convert the model to ONNX with tf2onnx \
     (tf2onnx.convert.from_keras(model, output_path=\"model.onnx\")) and open that";

impl Architecture {
    /// Reads the JSON text of a model config.
    pub fn parse(json: &str) -> Result<Architecture> {
        let root: Value =
            serde_json::from_str(json).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        let class = string(&root, "class_name", "the model")?;
        if !MODEL_CLASSES.contains(&class.as_str()) {
            let what = format!("the top object is a {class}, not a Sequential or Functional model");
            return Err(invalid(match package(&root) {
                Some(package) => format!("{what}: {}", python_only(&package)),
                None => what,
            }));
        }
        let mut flattener = Flattener { layers: Vec::new(), input: None };
        let output = flattener.model(&root, &[], None)?;
        let (input_name, input_shape) =
            flattener.input.ok_or_else(|| invalid("the model has no input layer"))?;
        let config = field(&root, "config", "the model")?;
        Ok(Architecture {
            name: config.get("name").and_then(Value::as_str).unwrap_or("model").to_string(),
            input_name,
            input_shape,
            layers: flattener.layers,
            output,
            keras3: false,
        })
    }
}

struct Flattener {
    layers: Vec<Layer>,
    input: Option<(String, Vec<Option<usize>>)>,
}

/// A shape list with `null` for free sizes.
fn shape_list(shape: &Value) -> Result<Vec<Option<usize>>> {
    let dims = shape.as_array().ok_or_else(|| invalid(format!("shape {shape} is not a list")))?;
    Ok(dims.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
}

/// The declared batch shape of a layer: `batch_shape` in Keras 3, `batch_input_shape` in
/// Keras 2.
fn batch_shape(config: &Value) -> Option<&Value> {
    config.get("batch_shape").or_else(|| config.get("batch_input_shape"))
}

impl Flattener {
    /// Declares the top-level input; a second one is an error.
    fn declare_input(&mut self, name: &str, shape: Vec<Option<usize>>) -> Result<String> {
        if self.input.is_some() {
            return Err(invalid("models with more than one input are not supported"));
        }
        self.input = Some((name.to_string(), shape));
        Ok(name.to_string())
    }

    /// Flattens the model `model` (`{class_name, config}`) found inside the nested models
    /// `scope`, reading `inputs` (flattened names; `None` for the top-level model).
    /// Returns the flattened name of its output.
    fn model(
        &mut self,
        model: &Value,
        scope: &[String],
        inputs: Option<&[String]>,
    ) -> Result<String> {
        let class = string(model, "class_name", "a model")?;
        let config = field(model, "config", "a model")?;
        let layers = field(config, "layers", "a model's config")?
            .as_array()
            .ok_or_else(|| invalid("'layers' is not a list"))?;
        if class == "Sequential" {
            self.sequential(config, layers, scope, inputs)
        } else {
            self.functional(config, layers, scope, inputs)
        }
    }

    fn flat_name(scope: &[String], name: &str) -> String {
        scope.iter().map(String::as_str).chain([name]).collect::<Vec<_>>().join("/")
    }

    /// Adds a layer (or, for a nested model, its layers); returns its output's name.
    fn add(
        &mut self,
        layer: &Value,
        scope: &[String],
        inputs: Vec<String>,
        operands: Option<Vec<Operand>>,
    ) -> Result<String> {
        let class = string(layer, "class_name", "a layer")?;
        let package = package(layer);
        // tf-keras names a registered custom layer `package>Class`, as in
        // `Custom>CustomScaleLayer`; its summary shows the class alone.
        let class = match class.rsplit_once('>') {
            Some((_, bare)) => bare.to_string(),
            None => class,
        };
        let config = field(layer, "config", &format!("a {class} layer"))?;
        let name = match layer.get("name").and_then(Value::as_str) {
            Some(name) => name.to_string(),
            None => string(config, "name", &format!("a {class} layer"))?,
        };
        if MODEL_CLASSES.contains(&class.as_str()) {
            let mut inner = scope.to_vec();
            inner.push(name);
            return self.model(layer, &inner, Some(&inputs));
        }
        let flat = Self::flat_name(scope, &name);
        self.layers.push(Layer {
            name: flat.clone(),
            scope: scope.to_vec(),
            keras_name: name,
            class,
            package,
            config: config.clone(),
            inputs,
            operands,
        });
        Ok(flat)
    }

    fn sequential(
        &mut self,
        config: &Value,
        layers: &[Value],
        scope: &[String],
        inputs: Option<&[String]>,
    ) -> Result<String> {
        let mut current = match inputs {
            Some([one]) => Some(one.clone()),
            Some(more) => {
                return Err(invalid(format!("a Sequential model called on {} inputs", more.len())));
            }
            None => None,
        };
        for layer in layers {
            let class = string(layer, "class_name", "a layer")?;
            let layer_config = field(layer, "config", &format!("a {class} layer"))?;
            if current.is_none() {
                // The top-level input: an InputLayer, the first layer's declared input
                // shape (Keras 2), or the model's build shape.
                let declared = batch_shape(layer_config)
                    .or_else(|| config.get("build_input_shape"))
                    .ok_or_else(|| invalid("the Sequential model declares no input shape"))?;
                let declared = shape_list(declared)?;
                let name = if class == "InputLayer" {
                    string(layer_config, "name", "the input layer")?
                } else {
                    "input_layer".to_string()
                };
                current = Some(self.declare_input(&name, declared)?);
            }
            if class == "InputLayer" {
                continue;
            }
            let input = current.take().into_iter().collect();
            current = Some(self.add(layer, scope, input, None)?);
        }
        current.ok_or_else(|| invalid("a Sequential model has no layers"))
    }

    fn functional(
        &mut self,
        config: &Value,
        layers: &[Value],
        scope: &[String],
        inputs: Option<&[String]>,
    ) -> Result<String> {
        let input_layers = endpoints(field(config, "input_layers", "a Functional model")?)?;
        let output_layers = endpoints(field(config, "output_layers", "a Functional model")?)?;
        if let Some(inputs) = inputs
            && inputs.len() != input_layers.len()
        {
            return Err(invalid(format!(
                "a nested model with {} inputs is called on {}",
                input_layers.len(),
                inputs.len()
            )));
        }
        // Keras name in this model → flattened name of the value it produces.
        let mut produced: HashMap<String, String> = HashMap::new();
        for layer in layers {
            let class = string(layer, "class_name", "a layer")?;
            let layer_config = field(layer, "config", &format!("a {class} layer"))?;
            let name = match layer.get("name").and_then(Value::as_str) {
                Some(name) => name.to_string(),
                None => string(layer_config, "name", &format!("a {class} layer"))?,
            };
            let value = if class == "InputLayer" {
                let position = input_layers.iter().position(|n| *n == name);
                match (inputs, position) {
                    (Some(outer), Some(i)) => outer[i].clone(),
                    (None, Some(_)) => {
                        let shape = batch_shape(layer_config)
                            .ok_or_else(|| invalid(format!("input layer '{name}' has no shape")))?;
                        let shape = shape_list(shape)?;
                        self.declare_input(&name, shape)?
                    }
                    (_, None) => continue,
                }
            } else {
                let ops_module = layer
                    .get("module")
                    .and_then(Value::as_str)
                    .is_some_and(|m| m.starts_with("keras.src.ops"));
                let call =
                    inbound(field(layer, "inbound_nodes", &format!("layer '{name}'"))?, ops_module)
                        .map_err(|e| Error::graph(Self::flat_name(scope, &name), e))?;
                let resolve = |source: &str| {
                    produced.get(source).cloned().ok_or_else(|| {
                        Error::graph(
                            Self::flat_name(scope, &name),
                            format!("reads '{source}', which comes later or does not exist"),
                        )
                    })
                };
                let reads = call.reads.iter().map(|s| resolve(s)).collect::<Result<Vec<_>>>()?;
                let operands = call
                    .operands
                    .map(|operands| {
                        operands
                            .into_iter()
                            .map(|operand| match operand {
                                Operand::Value(source) => resolve(&source).map(Operand::Value),
                                constant => Ok(constant),
                            })
                            .collect::<Result<Vec<_>>>()
                    })
                    .transpose()?;
                self.add(layer, scope, reads, operands)?
            };
            produced.insert(name, value);
        }
        match output_layers.as_slice() {
            [one] => produced
                .get(one)
                .cloned()
                .ok_or_else(|| invalid(format!("the output layer '{one}' is not in the model"))),
            more => Err(invalid(format!(
                "models with {} outputs are not supported (one output only)",
                more.len()
            ))),
        }
    }
}

/// `input_layers` / `output_layers`: `[name, node, tensor]` or a list of them.
fn endpoints(v: &Value) -> Result<Vec<String>> {
    let list = v.as_array().ok_or_else(|| invalid("input/output layers are not a list"))?;
    if let Some(Value::String(name)) = list.first() {
        return Ok(vec![name.clone()]);
    }
    list.iter()
        .map(|entry| {
            entry
                .get(0)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| invalid(format!("bad input/output entry {entry}")))
        })
        .collect()
}

/// What a Functional layer's one call reads. `ops_module`: Keras 3 says the layer is an
/// ops function (`keras.src.ops.numpy.Add`).
fn inbound(nodes: &Value, ops_module: bool) -> std::result::Result<Call, String> {
    let nodes = nodes.as_array().ok_or("'inbound_nodes' is not a list")?;
    match nodes.as_slice() {
        [] => Err("the layer reads nothing".into()),
        [node] => match (node.get("args"), node.as_array()) {
            (Some(args), _) => keras3_call(args, ops_module),
            // tf-keras: one entry for a function called on a value (a TFOpLambda).
            (None, Some(entry)) if entry.first().is_some_and(Value::is_string) => {
                function_entry(entry)
            }
            // Keras 2: `[[layer, node, tensor, kwargs], …]`.
            (None, Some(entries)) => {
                let reads = entries.iter().map(reference).collect::<Result<_, _>>()?;
                Ok(Call { reads, operands: None })
            }
            (None, None) => Err("an inbound node is not a list".into()),
        },
        more => Err(format!(
            "the layer is called {} times; shared layers are not supported",
            more.len()
        )),
    }
}

/// Keras 3's call: keras tensors anywhere in the positional arguments. A layer takes one
/// (a tensor, or a list for a merge layer); more, or an ops module, make it a function
/// whose arguments are its operands.
fn keras3_call(args: &Value, ops_module: bool) -> std::result::Result<Call, String> {
    let mut reads = Vec::new();
    keras_tensors(args, &mut reads)?;
    let positional = args.as_array().ok_or("'args' is not a list")?;
    let operands = if ops_module || positional.len() > 1 {
        let operand = |arg: &Value| {
            Ok::<_, String>(match keras_tensor(arg)? {
                Some(name) => Operand::Value(name),
                None => Operand::Constant(arg.clone()),
            })
        };
        Some(positional.iter().map(operand).collect::<Result<_, _>>()?)
    } else {
        None
    };
    Ok(Call { reads, operands })
}

/// tf-keras's `[x, node, tensor, kwargs]` of a function: `x` a layer, or
/// `"_CONSTANT_VALUE", -1, <value>` for a constant first argument; `kwargs.y` the second
/// operand, a constant or `[layer, node, tensor]`.
fn function_entry(entry: &[Value]) -> std::result::Result<Call, String> {
    let whole = Value::Array(entry.to_vec());
    let first = match (entry[0].as_str(), entry.get(1).and_then(Value::as_i64)) {
        (Some("_CONSTANT_VALUE"), Some(-1)) => {
            Operand::Constant(entry.get(2).cloned().unwrap_or(Value::Null))
        }
        _ => Operand::Value(reference(&whole)?),
    };
    let mut operands = vec![first];
    if let Some(y) = entry.get(3).and_then(|kwargs| kwargs.get("y")) {
        operands.push(match y.get(0) {
            Some(Value::String(_)) => Operand::Value(reference(y)?),
            _ => Operand::Constant(y.clone()),
        });
    }
    let reads = operands
        .iter()
        .filter_map(|operand| match operand {
            Operand::Value(name) => Some(name.clone()),
            Operand::Constant(_) => None,
        })
        .collect();
    Ok(Call { reads, operands: Some(operands) })
}

/// The layer a Keras 2 `[layer, node, tensor, …]` reference reads (its first output).
fn reference(entry: &Value) -> std::result::Result<String, String> {
    let name = entry.get(0).and_then(Value::as_str);
    match (name, entry.get(2).and_then(Value::as_u64)) {
        (Some(name), Some(0)) => Ok(name.to_string()),
        (Some(name), Some(_)) => Err(format!(
            "reads a second output of '{name}'; layers with several outputs are not supported"
        )),
        _ => Err(format!("bad inbound entry {entry}")),
    }
}

/// The layer a Keras 3 keras tensor comes from; `None` for anything else.
fn keras_tensor(v: &Value) -> std::result::Result<Option<String>, String> {
    if v.get("class_name").and_then(Value::as_str) != Some("__keras_tensor__") {
        return Ok(None);
    }
    let history = v
        .get("config")
        .and_then(|c| c.get("keras_history"))
        .ok_or("a keras tensor without 'keras_history'")?;
    match (history.get(0).and_then(Value::as_str), history.get(2).and_then(Value::as_u64)) {
        (Some(name), Some(0)) => Ok(Some(name.to_string())),
        (Some(name), Some(_)) => Err(format!(
            "reads a second output of '{name}'; layers with several outputs are not supported"
        )),
        _ => Err(format!("bad keras_history {history}")),
    }
}

fn keras_tensors(v: &Value, names: &mut Vec<String>) -> std::result::Result<(), String> {
    if let Some(name) = keras_tensor(v)? {
        names.push(name);
    } else if let Value::Array(items) = v {
        items.iter().try_for_each(|item| keras_tensors(item, names))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_sequential_takes_its_input_shape_from_the_first_layer() {
        let arch = Architecture::parse(
            r#"{"class_name": "Sequential", "config": {"name": "old", "layers": [
                {"class_name": "Conv2D", "config": {"name": "c", "batch_input_shape": [null, 8, 8, 1]}},
                {"class_name": "Flatten", "config": {"name": "f"}}]}}"#,
        )
        .unwrap();
        assert_eq!((arch.input_name.as_str(), arch.output.as_str()), ("input_layer", "f"));
        assert_eq!(arch.input_shape, [None, Some(8), Some(8), Some(1)]);
        assert_eq!(arch.layers[0].inputs, ["input_layer"]);
        assert_eq!(arch.layers[1].inputs, ["c"]);
    }

    #[test]
    fn a_layer_computing_in_another_float_type_is_found_in_either_policy_form() {
        let sequential = |dtypes: [&str; 2]| {
            Architecture::parse(&format!(
                r#"{{"class_name": "Sequential", "config": {{"name": "s", "layers": [
                    {{"class_name": "Conv2D", "config": {{"name": "c", "dtype": {},
                      "batch_input_shape": [null, 8, 8, 1]}}}},
                    {{"class_name": "Flatten", "config": {{"name": "f", "dtype": {}}}}}]}}}}"#,
                dtypes[0], dtypes[1]
            ))
            .unwrap()
            .other_precision()
        };
        let policy = |name: &str| {
            format!(r#"{{"class_name": "DTypePolicy", "config": {{"name": "{name}"}}}}"#)
        };
        assert_eq!(sequential([r#""float32""#, &policy("float32")]), None);
        assert_eq!(
            sequential([r#""float32""#, &policy("mixed_float16")]).unwrap(),
            "layer 'f' has the dtype policy mixed_float16"
        );
        assert_eq!(
            sequential([r#""float64""#, "null"]).unwrap(),
            "layer 'c' has the dtype policy float64"
        );
    }

    fn functional(inbound_of_b: &str, outputs: &str) -> Result<Architecture> {
        Architecture::parse(&format!(
            r#"{{"class_name": "Functional", "config": {{"name": "m",
                "input_layers": [["x", 0, 0]], "output_layers": {outputs},
                "layers": [
                  {{"class_name": "InputLayer", "name": "x", "inbound_nodes": [],
                    "config": {{"name": "x", "batch_input_shape": [null, 4]}}}},
                  {{"class_name": "Dense", "name": "a", "config": {{"name": "a"}},
                    "inbound_nodes": [[["x", 0, 0, {{}}]]]}},
                  {{"class_name": "Dense", "name": "b", "config": {{"name": "b"}},
                    "inbound_nodes": {inbound_of_b}}}]}}}}"#
        ))
    }

    #[test]
    fn functional_graphs_and_what_they_may_not_do() {
        let arch = functional(r#"[[["a", 0, 0, {}]]]"#, r#"[["b", 0, 0]]"#).unwrap();
        assert_eq!(arch.layers[1].inputs, ["a"]);
        let err = |inbound, outputs| functional(inbound, outputs).unwrap_err().to_string();
        assert!(
            err(r#"[[["a", 0, 0, {}]], [["x", 0, 0, {}]]]"#, r#"[["b", 0, 0]]"#).contains(
                "layer 'b': the layer is called 2 times; shared layers are not supported"
            )
        );
        assert!(
            err(r#"[[["a", 0, 1, {}]]]"#, r#"[["b", 0, 0]]"#)
                .contains("reads a second output of 'a'")
        );
        assert!(
            err(r#"[[["nowhere", 0, 0, {}]]]"#, r#"[["b", 0, 0]]"#)
                .contains("reads 'nowhere', which comes later or does not exist")
        );
        assert!(
            err(r#"[[["a", 0, 0, {}]]]"#, r#"[["a", 0, 0], ["b", 0, 0]]"#)
                .contains("models with 2 outputs are not supported")
        );
    }

    #[test]
    fn classes_from_outside_keras_are_named_with_their_package() {
        // keras_hub's classifiers and backbones record their constructor's arguments, not
        // their layers: the error says where they come from and what to do.
        let top = Architecture::parse(
            r#"{"module": "keras_hub.src.models.resnet.resnet_image_classifier",
                "class_name": "ResNetImageClassifier",
                "registered_name": "keras_hub>ResNetImageClassifier", "config": {}}"#,
        );
        let top = top.unwrap_err().to_string();
        assert!(top.contains("ResNetImageClassifier") && top.contains("keras_hub"), "{top}");
        assert!(top.contains("tf2onnx"), "{top}");
        let plain = Architecture::parse(r#"{"class_name": "Bidirectional", "config": {}}"#);
        assert!(!plain.unwrap_err().to_string().contains("tf2onnx"));
        let with_layer = |layer: &str| {
            let arch = Architecture::parse(&format!(
                r#"{{"class_name": "Sequential", "config": {{"name": "s", "layers": [
                    {{"class_name": "InputLayer", "config": {{"name": "x",
                      "batch_input_shape": [null, 8, 8, 3]}}}}, {layer}]}}}}"#
            ));
            arch.unwrap().layers[0].package.clone()
        };
        let hub = r#"{"module": "keras_hub.src.models.resnet.resnet_backbone",
            "class_name": "ResNetBackbone", "registered_name": "keras_hub>ResNetBackbone",
            "config": {"name": "b"}}"#;
        assert_eq!(with_layer(hub).as_deref(), Some("keras_hub"));
        let custom = r#"{"class_name": "Custom>Scale", "config": {"name": "s"}}"#;
        assert_eq!(with_layer(custom).as_deref(), Some("Custom"));
        assert!(python_only("Custom").starts_with("a custom class"));
        let conv = r#"{"module": "keras.layers", "class_name": "Conv2D",
            "registered_name": null, "config": {"name": "c"}}"#;
        assert_eq!(with_layer(conv), None);
    }

    #[test]
    fn functions_keep_their_operands_in_call_order() {
        let layer =
            |inbound: &str| functional(inbound, r#"[["b", 0, 0]]"#).unwrap().layers[1].clone();
        let a = Operand::Value("a".into());
        let three = Operand::Constant(serde_json::json!(3.0));
        // tf-keras's TFOpLambda: `a + 3.0`, `3.0 - a`.
        let add = layer(r#"[["a", 0, 0, {"y": 3.0, "name": null}]]"#);
        assert_eq!(
            (add.inputs, add.operands),
            (vec!["a".into()], Some(vec![a.clone(), three.clone()]))
        );
        let sub = layer(r#"[["_CONSTANT_VALUE", -1, 3.0, {"y": ["a", 0, 0], "name": null}]]"#);
        assert_eq!(
            (sub.inputs, sub.operands),
            (vec!["a".into()], Some(vec![three.clone(), a.clone()]))
        );
        // Keras 3's ops layer, as its legacy .h5 writes it (without the module).
        let tensor =
            r#"{"class_name": "__keras_tensor__", "config": {"keras_history": ["a", 0, 0]}}"#;
        let sub = layer(&format!(r#"[{{"args": [3.0, {tensor}], "kwargs": {{}}}}]"#));
        assert_eq!(sub.operands, Some(vec![three, a]));
        // A merge layer reads one list of inputs.
        let merge = layer(&format!(r#"[{{"args": [[{tensor}, {tensor}]], "kwargs": {{}}}}]"#));
        assert_eq!((merge.inputs, merge.operands), (vec!["a".into(), "a".into()], None));
    }
}
