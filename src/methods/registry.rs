//! Every method in one list, with what it needs: an input image, a class, the backprop
//! modifiers, which kind of layer. The commands take their help and their `--layer`
//! checks from here and the explorer its layer lists, so a method is described once.

use crate::error::{Error, Result};
use crate::methods::{actmax, attribution, features, filters, gradcam, occlusion, saliency};
use crate::model::{Model, ValueId};

/// The methods, in the order the article shows them, then those that go past it.
pub const METHODS: &[MethodInfo] = &[
    filters::INFO,
    features::INFO,
    actmax::INFO,
    occlusion::INFO,
    saliency::INFO,
    gradcam::INFO,
    gradcam::GUIDED_INFO,
    attribution::INPUT_X_GRADIENT_INFO,
    attribution::INTEGRATED_INFO,
    attribution::SMOOTHGRAD_INFO,
];

/// `gradcam --variant`'s variants, in the order the explorer cycles them.
pub const CAM_VARIANTS: &[MethodInfo] = &gradcam::VARIANT_INFOS;

/// What a method is and needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodInfo {
    /// Its command (`convscope NAME`).
    pub name: &'static str,
    /// One line of help.
    pub about: &'static str,
    /// It explains an input image.
    pub input: bool,
    /// It explains one class at a time.
    pub class: bool,
    /// The backprop modifiers (ReLU rules) change it.
    pub modifiers: bool,
    /// The layers it can work on.
    pub layers: Layers,
}

/// The method named `name`.
pub fn find(name: &str) -> Option<&'static MethodInfo> {
    METHODS.iter().find(|m| m.name == name)
}

/// Which layers a method works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layers {
    /// None: it reads the model's input and output only (or every layer, as act-max's
    /// optional `--layer`, which takes any).
    None,
    /// Convolutions (their weights are filters).
    Conv,
    /// Layers whose output is a map larger than 1×1, where a location means something.
    Spatial,
    /// Any layer.
    Any,
}

impl Layers {
    /// The model's layers of this kind, in graph order.
    pub fn of(self, model: &Model) -> Vec<usize> {
        let graph = model.graph();
        (0..graph.nodes().len())
            .filter(|&i| match self {
                Layers::None => false,
                Layers::Conv => graph.nodes()[i].op.is_conv(),
                // A 1×1 map (a global pool kept as [C, 1, 1]) has nothing to localise.
                Layers::Spatial => {
                    matches!(graph.shape(ValueId::of_node(i)), [_, h, w] if h * w > 1)
                }
                Layers::Any => true,
            })
            .collect()
    }

    /// The layer a method starts on: the first convolution (where filters and feature
    /// maps are easiest to read) or, for spatial methods, the last feature map computed
    /// from a convolution (grad-CAM's choice); a segmentation's feature maps start on its
    /// map of class scores, the segmentation itself.
    pub fn default_in(self, model: &Model) -> Result<usize> {
        let found = match self {
            Layers::None => None,
            Layers::Conv => first_conv(model),
            Layers::Spatial => model.graph().last_feature_map_node(),
            Layers::Any => segmentation_map(model).or_else(|| first_conv(model)).or((!model
                .graph()
                .nodes()
                .is_empty())
            .then_some(0)),
        };
        found.ok_or_else(|| {
            Error::Invalid(match self {
                Layers::Spatial => {
                    "grad-CAM needs a convolutional layer and this model has none".into()
                }
                _ => "this model has no convolutional layer".into(),
            })
        })
    }

    /// `layer` if it is of this kind, else an error naming those that are.
    pub fn check(self, model: &Model, layer: usize) -> Result<usize> {
        let candidates = self.of(model);
        if candidates.contains(&layer) {
            return Ok(layer);
        }
        let names = |ids: &[usize]| {
            let nodes = model.graph().nodes();
            ids.iter().take(12).map(|&i| nodes[i].name.as_str()).collect::<Vec<_>>().join(", ")
        };
        let name = &model.graph().nodes()[layer].name;
        Err(Error::Invalid(match self {
            Layers::Conv => {
                format!(
                    "layer '{name}' is not a convolution (convolutions: {})",
                    names(&candidates)
                )
            }
            Layers::Spatial => format!(
                "layer '{name}' has no spatial map to localise on (layers with one: {})",
                names(&candidates)
            ),
            Layers::None | Layers::Any => format!("layer '{name}' cannot be used here"),
        }))
    }
}

/// The first convolution.
fn first_conv(model: &Model) -> Option<usize> {
    model.graph().nodes().iter().position(|n| n.op.is_conv())
}

/// A segmentation's map of class scores: where the file's output was that map, not class
/// scores computed from it (as a fully convolutional classifier's are).
fn segmentation_map(model: &Model) -> Option<usize> {
    let reads_a_map = model.file_output() != model.graph().output_node();
    model.score_map().filter(|_| reads_a_map).map(|map| map.node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample;

    #[test]
    fn names_are_unique_and_found() {
        for (i, m) in METHODS.iter().enumerate() {
            assert_eq!(find(m.name), Some(m));
            assert!(METHODS[..i].iter().all(|o| o.name != m.name), "{}", m.name);
        }
        assert_eq!(find("nope"), None);
        for (i, v) in CAM_VARIANTS.iter().enumerate() {
            assert!(CAM_VARIANTS[..i].iter().all(|o| o.name != v.name), "{}", v.name);
            assert_eq!(gradcam::CamVariant::ALL[i].info(), v);
        }
    }

    #[test]
    fn layer_kinds_on_the_sample_model() {
        let model = sample::model().expect("sample model");
        let name = |ids: Vec<usize>| -> Vec<String> {
            ids.iter().map(|&i| model.graph().nodes()[i].name.clone()).collect()
        };
        assert_eq!(name(Layers::Conv.of(&model)), ["conv2d_1", "conv2d_2"]);
        assert_eq!(
            name(Layers::Spatial.of(&model)),
            ["conv2d_1", "conv2d_2", "max_pooling2d_1", "dropout_1"]
        );
        assert_eq!(Layers::Any.of(&model).len(), model.graph().nodes().len());
        assert_eq!(name(vec![Layers::Conv.default_in(&model).expect("conv")]), ["conv2d_1"]);
        assert_eq!(name(vec![Layers::Spatial.default_in(&model).expect("cam")]), ["conv2d_2"]);
        let dense = model.graph().node_index("dense_1").expect("dense_1");
        let err = Layers::Spatial.check(&model, dense).expect_err("dense is not spatial");
        assert!(err.to_string().contains("layers with one: conv2d_1, conv2d_2"), "{err}");
        assert_eq!(Layers::Any.check(&model, dense).expect("any"), dense);
    }
}
