//! The CAM family against pytorch-grad-cam (tests/fixtures/gradcam, written by
//! scripts/make_cam_refs.py): every variant on the sample model and on a small residual
//! network, at the layer's resolution (pytorch-grad-cam then resizes with OpenCV, convscope
//! upsamples with aligned corners), within 1e-4 of the map's maximum (measured: at most
//! 6e-7 of it on the sample model, 3e-7 on the residual network, 1.8e-6 for XGrad-CAM at the
//! residual sum, whose channel sums come near 0; the ONNX file holds BN-folded f32 weights;
//! references without positive evidence are all zero, and so are convscope's maps there).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use convscope::methods::gradcam::{CamConfig, CamVariant, cams, default_cam_layer};
use convscope::{Model, Op, ReluRule, data::sample};

use crate::support::read_npy;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gradcam").join(name)
}

/// The reference's file name of a variant.
fn file_name(variant: CamVariant) -> String {
    variant.name().replace("++", "pp")
}

fn f64_input(values: Vec<f32>, dims: &[usize]) -> Tensor {
    let values: Vec<f64> = values.into_iter().map(f64::from).collect();
    Tensor::from_vec(values, dims, &Device::Cpu).unwrap()
}

/// Every variant of `model` at `layer` equals the references `<case>_<variant>.npy`; those
/// of `no_evidence` are all zero (no positive evidence), every other one is not.
fn every_variant_matches(
    model: &Model,
    x: &Tensor,
    class: usize,
    layer: usize,
    case: &str,
    no_evidence: &[CamVariant],
) {
    for variant in CamVariant::ALL {
        // A batch that does not divide the channels, so the last batch is a short one.
        let config = CamConfig { variant, layer: Some(layer), batch: 5, ..CamConfig::default() };
        let cam = cams(model, x, &[class], &config, &|_| {}).unwrap().remove(0);
        let (dims, want) = read_npy(&fixture(&format!("{case}_{}.npy", file_name(variant))));
        assert_eq!(dims, cam.layer_size.to_vec(), "{case} {variant:?}");
        let scale = want.iter().fold(0f32, |m, &v| m.max(v));
        assert_eq!(scale == 0.0, no_evidence.contains(&variant), "{case} {variant:?}: {scale}");
        let worst = cam.raw.data.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-4 * scale, "{case} {variant:?}: off by {worst} of {scale}");
    }
}

#[test]
fn every_variant_equals_pytorch_grad_cam_on_the_sample_model() {
    let model = sample::model().unwrap().to_dtype(DType::F64).unwrap();
    let x = convscope::data::digits::Digits::bundled().unwrap().batch(&[8000]).unwrap();
    let x = x.to_dtype(DType::F64).unwrap();
    let layer = model.graph().node_index("conv2d_2").unwrap();
    every_variant_matches(&model, &x, 3, layer, "sample", &[]);
}

#[test]
fn every_variant_equals_pytorch_grad_cam_on_a_residual_network() {
    let path = fixture("residual.onnx");
    let model = convscope::formats::onnx::from_bytes(&std::fs::read(&path).unwrap(), &path)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let (dims, x) = read_npy(&fixture("residual_input.npy"));
    let x = f64_input(x, &dims);
    // The last ReLU (after the strided conv) is grad-CAM's default layer.
    let last = default_cam_layer(&model).unwrap();
    assert_eq!(model.graph().shape(convscope::model::ValueId::of_node(last)), [16, 8, 8]);
    every_variant_matches(&model, &x, 4, last, "residual_last", &[]);
    // The residual sum before its ReLU holds negative values: Ablation-CAM's ablation value
    // is then the smallest less 1e7.
    let sum = model.graph().nodes().iter().position(|n| matches!(n.op, Op::Add)).unwrap();
    every_variant_matches(&model, &x, 4, sum, "residual_sum", &[]);
    // Inside the block (its first conv, BN folded, and ReLU), where the network above the
    // layer reads the skip branch, which the ablated copies share.
    let inner = model.graph().node_index("/conv1/Conv").unwrap();
    let no_evidence = [CamVariant::GradCam, CamVariant::XGradCam];
    every_variant_matches(&model, &x, 0, inner, "residual_inner", &no_evidence);
}

#[test]
fn the_gradient_free_variants_refuse_a_modifier_and_every_class_equals_one_at_a_time() {
    let model = sample::model().unwrap();
    let x = convscope::data::digits::Digits::bundled().unwrap().batch(&[8000]).unwrap();
    for variant in [CamVariant::ScoreCam, CamVariant::AblationCam, CamVariant::EigenCam] {
        let config = CamConfig { variant, rule: ReluRule::Guided, ..CamConfig::default() };
        let err = cams(&model, &x, &[3], &config, &|_| {}).unwrap_err().to_string();
        assert!(err.contains("uses no gradient") && err.contains("guided"), "{err}");
        let config = CamConfig { variant, ..CamConfig::default() };
        let err = cams(&model, &x, &[3, 10], &config, &|_| {}).unwrap_err().to_string();
        assert!(err.contains("no class 10: the model has 10 classes"), "{err}");
    }
    for variant in CamVariant::ALL {
        let config = CamConfig { variant, batch: 24, ..CamConfig::default() };
        let all = cams(&model, &x, &[1, 3, 7], &config, &|_| {}).unwrap();
        for cam in &all {
            let one = cams(&model, &x, &[cam.class], &config, &|_| {}).unwrap().remove(0);
            assert_eq!(cam.raw, one.raw, "{variant:?} class {}", cam.class);
            assert_eq!(cam.variant, variant);
        }
    }
}
