//! The methods that explain one class of one input by a map over its pixels, in one table:
//! what faithfulness scores, the sanity check randomises under, and the explorer's Compare
//! tab shows side by side. A method (or a variant of one) is one entry here; each runs with
//! its defaults (grad-CAM at its default layer, occlusion's square for the input's size,
//! 50 steps or samples for Integrated Gradients and SmoothGrad).

use candle_core::Tensor;

use crate::engine::ReluRule::{self, Guided, Rectified, Vanilla};
use crate::error::Result;
use crate::methods::attribution::{self, IntegratedConfig, SmoothConfig};
use crate::methods::gradcam::{CamConfig, CamVariant};
use crate::methods::occlusion::{self, OcclusionConfig};
use crate::methods::registry::MethodInfo;
use crate::methods::{Map, gradcam, saliency};
use crate::model::Model;

/// A map of one class of one input (`[1, C, H, W]`), at the input's size.
pub type MapFn = fn(&Model, &Tensor, usize) -> Result<Map>;

/// One method, or one variant of one, as a map maker.
#[derive(Clone, Copy, Debug)]
pub struct Explainer {
    /// Its name in tables ("saliency guided").
    pub name: &'static str,
    /// At most four letters, for a label under a small tile ("salG").
    pub short: &'static str,
    /// The registry's method, whose view shows it.
    pub method: &'static MethodInfo,
    /// The ReLU rule it runs under, where the method has rules.
    pub rule: Option<ReluRule>,
    /// Its map is signed (negative: evidence against the class); the sanity check compares
    /// magnitudes, as Adebayo et al. do.
    pub signed: bool,
    /// Makes the map.
    pub map: MapFn,
}

/// Every method, each with its map for faithfulness, the sanity check and the Compare tab.
#[rustfmt::skip]
pub const EXPLAINERS: &[Explainer] = &[
    Explainer { name: "saliency", short: "sal", method: &saliency::INFO, rule: Some(Vanilla), signed: false, map: |m, x, c| Ok(saliency::saliency(m, x, c, Vanilla)?.map) },
    Explainer { name: "saliency guided", short: "salG", method: &saliency::INFO, rule: Some(Guided), signed: false, map: |m, x, c| Ok(saliency::saliency(m, x, c, Guided)?.map) },
    Explainer { name: "saliency relu", short: "salR", method: &saliency::INFO, rule: Some(Rectified), signed: false, map: |m, x, c| Ok(saliency::saliency(m, x, c, Rectified)?.map) },
    Explainer { name: "grad-CAM", short: "cam", method: &gradcam::INFO, rule: Some(Vanilla), signed: false, map: |m, x, c| Ok(gradcam::grad_cam(m, x, c, Vanilla, None)?.map) },
    Explainer { name: "grad-CAM guided", short: "camG", method: &gradcam::INFO, rule: Some(Guided), signed: false, map: |m, x, c| Ok(gradcam::grad_cam(m, x, c, Guided, None)?.map) },
    Explainer { name: "grad-CAM relu", short: "camR", method: &gradcam::INFO, rule: Some(Rectified), signed: false, map: |m, x, c| Ok(gradcam::grad_cam(m, x, c, Rectified, None)?.map) },
    Explainer { name: "grad-CAM++", short: "cam+", method: &gradcam::VARIANT_INFOS[1], rule: Some(Vanilla), signed: false, map: |m, x, c| cam(m, x, c, CamVariant::GradCamPlusPlus) },
    Explainer { name: "XGrad-CAM", short: "camX", method: &gradcam::VARIANT_INFOS[2], rule: Some(Vanilla), signed: false, map: |m, x, c| cam(m, x, c, CamVariant::XGradCam) },
    Explainer { name: "HiResCAM", short: "camH", method: &gradcam::VARIANT_INFOS[3], rule: Some(Vanilla), signed: false, map: |m, x, c| cam(m, x, c, CamVariant::HiResCam) },
    Explainer { name: "LayerCAM", short: "camL", method: &gradcam::VARIANT_INFOS[4], rule: Some(Vanilla), signed: false, map: |m, x, c| cam(m, x, c, CamVariant::LayerCam) },
    Explainer { name: "Score-CAM", short: "camS", method: &gradcam::VARIANT_INFOS[5], rule: None, signed: false, map: |m, x, c| cam(m, x, c, CamVariant::ScoreCam) },
    Explainer { name: "Ablation-CAM", short: "camA", method: &gradcam::VARIANT_INFOS[6], rule: None, signed: false, map: |m, x, c| cam(m, x, c, CamVariant::AblationCam) },
    Explainer { name: "Eigen-CAM", short: "camE", method: &gradcam::VARIANT_INFOS[7], rule: None, signed: false, map: |m, x, c| cam(m, x, c, CamVariant::EigenCam) },
    Explainer { name: "guided grad-CAM", short: "gcam", method: &gradcam::GUIDED_INFO, rule: None, signed: false, map: |m, x, c| Ok(gradcam::guided_grad_cam(m, x, c, None)?.0) },
    Explainer { name: "occlusion", short: "occ", method: &occlusion::INFO, rule: None, signed: true, map: |m, x, c| Ok(occlusion::occlusion(m, x, c, &occlusion_config(m)?)?.drop) },
    Explainer { name: "input×gradient", short: "ixg", method: &attribution::INPUT_X_GRADIENT_INFO, rule: Some(Vanilla), signed: true, map: |m, x, c| attribution::input_x_gradient(m, x, c, Vanilla)?.channel_sum() },
    Explainer { name: "integrated gradients", short: "ig", method: &attribution::INTEGRATED_INFO, rule: Some(Vanilla), signed: true, map: |m, x, c| attribution::integrated_gradients(m, x, c, Vanilla, &IntegratedConfig::default())?.attribution.channel_sum() },
    Explainer { name: "smoothgrad", short: "sg", method: &attribution::SMOOTHGRAD_INFO, rule: Some(Vanilla), signed: false, map: |m, x, c| Ok(attribution::smoothgrad(m, x, c, Vanilla, &SmoothConfig::default())?.map) },
];

/// A variant of the CAM family at the default layer, under the vanilla rule.
fn cam(model: &Model, x: &Tensor, class: usize, variant: CamVariant) -> Result<Map> {
    let config = CamConfig { variant, ..CamConfig::default() };
    let mut maps = gradcam::cams(model, x, &[class], &config, &|_| {})?;
    Ok(maps.swap_remove(0).map)
}

/// Occlusion's square for the model's input size.
fn occlusion_config(model: &Model) -> Result<OcclusionConfig> {
    let [_, h, w] = model.input_chw()?;
    Ok(OcclusionConfig::for_input(h, w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample;

    #[test]
    fn names_are_unique_and_every_map_is_the_input_size() {
        let model = sample::model().expect("sample model");
        let x = Tensor::full(0.5f32, (1, 1, 28, 28), &candle_core::Device::Cpu).expect("x");
        for (i, e) in EXPLAINERS.iter().enumerate() {
            assert!(EXPLAINERS[..i].iter().all(|o| o.name != e.name && o.short != e.short));
            assert!(e.short.chars().count() <= 4, "{}", e.short);
            let map = (e.map)(&model, &x, 3).expect(e.name);
            assert_eq!((map.height, map.width), (28, 28), "{}", e.name);
            // A CAM variant opens as itself: its map is its variant's.
            if let Some(variant) = CamVariant::from_name(e.method.name) {
                if matches!(e.rule, None | Some(Vanilla)) {
                    assert_eq!(map.data, cam(&model, &x, 3, variant).unwrap().data, "{}", e.name);
                }
                assert_eq!(variant.title(), e.name.replace(" guided", "").replace(" relu", ""));
            }
        }
    }
}
