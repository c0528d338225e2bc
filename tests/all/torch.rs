//! What PyTorch's exporters write for the op patterns of torchvision's CNNs
//! (scripts/make_torch_fixtures.py): every route loads, and gives PyTorch's probabilities
//! and input gradient.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use convscope::engine::{ReluRule, Seed};
use convscope::formats;
use convscope::model::{ArithKind, ValueId};
use convscope::{Activation, Op};

use crate::support;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch").join(name)
}

/// The default export (dynamo), `dynamo=False`, and `dynamo=False` at opset 13.
const ROUTES: [&str; 3] = ["default", "legacy", "opset13"];

fn max_abs(v: impl Iterator<Item = f32>) -> f32 {
    v.fold(0.0, |m, x| m.max(x.abs()))
}

/// Each route of fixture `name` against PyTorch's probabilities (both samples) and the
/// gradient of sample 0's top class score before the softmax.
fn matches_pytorch(name: &str) {
    matches_pytorch_by(name, &ROUTES);
}

/// The fixture's files of `routes` against PyTorch's probabilities and gradient.
fn matches_pytorch_by(name: &str, routes: &[&str]) {
    let (shape, x) = support::read_npy(&fixture(&format!("{name}.input.npy")));
    let input = Tensor::from_vec(x, shape, &Device::Cpu).unwrap();
    let (_, want_probs) = support::read_npy(&fixture(&format!("{name}.probs.npy")));
    let (_, want_grad) = support::read_npy(&fixture(&format!("{name}.grad.npy")));
    let largest = max_abs(want_grad.iter().copied());
    assert!(largest > 0.0, "{name}: PyTorch's gradient is zero");
    for route in routes {
        let file = format!("{name}.{route}.onnx");
        let model = formats::load(&fixture(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        // The model's own input shape: a signal `[C, L]` is taken in one row high.
        let mut dims = vec![input.dim(0).unwrap()];
        dims.extend(model.graph().input_shape());
        let input = input.reshape(dims).unwrap();
        let got = support::values(&model.predict(&input).unwrap());
        let worst = max_abs(got.iter().zip(&want_probs).map(|(g, w)| *g as f32 - w));
        assert!(worst <= 1e-5, "{file}: probabilities off by {worst}");

        let one = input.narrow(0, 0, 1).unwrap();
        let acts = model.forward(&one).unwrap();
        let (node, point) = model.score_point();
        let scores = acts.at(node, point).unwrap();
        let class = convscope::engine::argmax(&scores.flatten_all().unwrap().to_vec1().unwrap());
        let mut seed = vec![0f32; scores.elem_count()];
        seed[class] = 1.0;
        let grad = Tensor::from_vec(seed, scores.dims(), &Device::Cpu).unwrap();
        let grads =
            model.backward(&acts, &Seed { node, point, grad }, ReluRule::Vanilla, false).unwrap();
        let got = support::values(grads.input().unwrap());
        let worst = max_abs(got.iter().zip(&want_grad).map(|(g, w)| *g as f32 - w));
        assert!(worst <= 1e-4 * largest, "{file}: gradient off by {worst} (largest {largest})");
    }
}

#[test]
fn ceil_mode_pools_match_pytorch() {
    matches_pytorch("pools");
}

#[test]
fn channel_split_and_shuffle_match_pytorch() {
    matches_pytorch("shuffle");
}

#[test]
fn nearest_and_bilinear_resizing_match_pytorch() {
    matches_pytorch("upsample");
}

#[test]
fn group_and_instance_norm_match_pytorch() {
    matches_pytorch("norms");
}

#[test]
fn transposed_convolutions_match_pytorch() {
    matches_pytorch("decoder");
}

#[test]
fn convnext_layer_norm_and_linear_match_pytorch() {
    matches_pytorch("convnext");
}

#[test]
fn cbam_attention_over_channels_matches_pytorch() {
    matches_pytorch("attention");
}

#[test]
fn a_written_out_layer_norm_imports_as_one_layer_with_its_scale_and_bias() {
    // Opset 13 has no LayerNormalization: the exporter writes each norm out, then its scale
    // (`Mul`) and bias (`Add`); `convnext_layer_norm_and_linear_match_pytorch` checks the
    // numbers of this file against PyTorch's.
    let model = formats::load(&fixture("convnext.opset13.onnx")).unwrap();
    let graph = model.graph();
    for norm in ["/stem/stem.1", "/norm", "/head_norm"] {
        let node = graph.node_index(&format!("{norm}/ReduceMean")).unwrap();
        assert!(matches!(graph.nodes()[node].op, Op::LayerNorm { .. }), "{norm}");
        for part in ["Sub", "Sqrt", "Div", "Mul", "Add_1"] {
            assert!(graph.node_index(&format!("{norm}/{part}")).is_err(), "{norm}/{part}");
        }
    }
}

#[test]
fn the_official_convnext_channels_first_layer_norm_matches_pytorch() {
    matches_pytorch("layernorm");
}

#[test]
fn l2_normalised_features_and_reductions_dropping_their_axes_match_pytorch() {
    matches_pytorch("normalised");
}

#[test]
fn efficientnet_silu_blocks_match_pytorch_with_each_silu_one_swish() {
    matches_pytorch("mbconv");
    // Each `x · Sigmoid(x)` is one swish: the SE gate's sigmoid stays, the other four SiLUs
    // fold into the conv before them, and no product but the gate's remains.
    for route in ROUTES {
        let model = formats::load(&fixture(&format!("mbconv.{route}.onnx"))).unwrap();
        let ops: Vec<_> = model.graph().nodes().iter().map(|n| &n.op).collect();
        let swish_convs = ops
            .iter()
            .filter(|op| matches!(op, Op::Conv2d { activation: Activation::Swish, .. }))
            .count();
        let products =
            ops.iter().filter(|op| matches!(op, Op::Arith { kind: ArithKind::Mul, .. })).count();
        let sigmoids = ops.iter().filter(|op| op.activation() == Activation::Sigmoid).count();
        assert_eq!((swish_convs, products, sigmoids), (4, 1, 1), "{route}: {ops:?}");
    }
}

#[test]
fn a_fourier_position_table_and_a_linear_over_tokens_match_pytorch() {
    matches_pytorch("positions");
    // The table (running sums, sines, cosines) and the conv projecting it are folded at
    // load, so the graph convolves only computed values: the features' conv and the Linear
    // over the tokens, as a 1×1 conv of the channels-first map.
    for route in ROUTES {
        let model = formats::load(&fixture(&format!("positions.{route}.onnx"))).unwrap();
        let convs: Vec<_> = model
            .graph()
            .nodes()
            .iter()
            .filter_map(|n| match n.op {
                Op::Conv2d { kernel, filters, .. } => Some((kernel, filters)),
                _ => None,
            })
            .collect();
        assert_eq!(convs, [([3, 3], 8), ([1, 1], 8)], "{route}");
    }
}

#[test]
fn attention_unbinding_q_k_and_v_and_a_class_token_match_pytorch() {
    matches_pytorch("unbind");
    // With the batch size open, the legacy exporter computes the reshape targets from it.
    matches_pytorch_by("unbind", &["dynamic"]);
    // Each of the two attention blocks multiplies computed values twice (q·kᵀ, then the
    // weights times v), on slices of its one qkv product (a 1×1 conv over the tokens); the
    // class token's `x[:, 0]` and the others' `x[:, 1:]` are two slices more. The class
    // token joins the computed tokens as a row of padding with the token added there.
    for route in ROUTES {
        let model = formats::load(&fixture(&format!("unbind.{route}.onnx"))).unwrap();
        let ops: Vec<&Op> = model.graph().nodes().iter().map(|n| &n.op).collect();
        let products = ops.iter().filter(|op| ***op == Op::MatMul).count();
        let slices = ops.iter().filter(|op| matches!(op, Op::Slice { .. })).count();
        let pads = ops.iter().filter(|op| matches!(op, Op::Pad { .. })).count();
        assert_eq!((products, slices, pads), (4, 8, 1), "{route}: {ops:?}");
    }
}

#[test]
fn attention_on_values_whose_batch_axis_folds_in_heads_or_patches_matches_pytorch() {
    // Run at a batch of two through files exported for one: the folded axes are the
    // heads and patches of each sample, not the batch's. With the batch size open, the
    // targets `[B·heads, …]` are computed from the input's shape.
    matches_pytorch("folded");
    matches_pytorch_by("folded", &["dynamic"]);
    for route in ROUTES {
        let model = formats::load(&fixture(&format!("folded.{route}.onnx"))).unwrap();
        let graph = model.graph();
        // Every value keeps its batch axis whole: the patches' attention and the pixels'
        // are per-sample products, of [patches, heads] (SDPA; written out for opset 13,
        // [patches·heads]) and [heads] matrices.
        let products: Vec<Vec<usize>> = (0..graph.nodes().len())
            .filter(|&i| graph.nodes()[i].op == Op::MatMul)
            .map(|i| graph.shape(ValueId::of_node(i)).to_vec())
            .collect();
        let patches = if route == "opset13" { vec![8, 4, 4] } else { vec![4, 2, 4, 4] };
        let pixels = vec![vec![2, 16, 16], vec![2, 16, 4]];
        assert_eq!(products, [vec![patches.clone(), patches], pixels].concat(), "{route}");
    }
}

#[test]
fn heads_pooled_as_images_in_the_batch_axis_match_pytorch() {
    matches_pytorch("pooled");
    matches_pytorch_by("pooled", &["dynamic"]);
    // Each head's map is pooled as one of the images side by side in the channels: the
    // depthwise convs' groups and the max pool's channels count both heads.
    let model = formats::load(&fixture("pooled.legacy.onnx")).unwrap();
    let pools: Vec<(String, Vec<usize>)> = model
        .graph()
        .nodes()
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match n.op {
            Op::Conv2d { groups, .. } if groups > 1 => Some((format!("conv {groups}"), i)),
            Op::MaxPool { .. } => Some(("max".into(), i)),
            _ => None,
        })
        .map(|(kind, i)| (kind, model.graph().shape(ValueId::of_node(i)).to_vec()))
        .collect();
    let expected = [("conv 8", [8, 6, 6]), ("conv 8", [8, 3, 3]), ("max", [8, 3, 3])];
    assert_eq!(pools, expected.map(|(k, s)| (k.to_string(), s.to_vec())));
}

#[test]
fn assignments_to_slices_of_computed_values_match_pytorch() {
    matches_pytorch("assigned");
}

#[test]
fn scores_stacked_in_front_of_the_batch_and_reduced_match_pytorch() {
    matches_pytorch("stacked");
}

#[test]
fn einsums_of_attention_relative_positions_sums_and_ellipses_match_pytorch() {
    matches_pytorch("einsum");
}

#[test]
fn sam_attention_with_heads_folded_while_q_k_and_v_are_unbound_matches_pytorch() {
    matches_pytorch("sam");
    matches_pytorch_by("sam", &["dynamic"]);
}

#[test]
fn local_response_normalisation_as_both_exporters_write_it_matches_pytorch() {
    // A 3-D average pool over the channels made a depth axis; the legacy exporter's `If`
    // on the channel count is decided at load.
    matches_pytorch("lrn");
}

#[test]
fn adaptive_pools_of_uneven_windows_match_pytorch() {
    // The dynamo exporter's GatherND over the spatial axes moved before the batch axis,
    // masked by Where; the legacy exporter refuses such pools.
    matches_pytorch_by("adaptive", &["default"]);
}

#[test]
fn bicubic_resizing_matches_pytorch() {
    matches_pytorch("bicubic");
}

#[test]
fn overlapping_windows_strided_slices_and_flips_match_pytorch() {
    matches_pytorch("windows");
    // The dynamo exporter takes the windows with a Gather of indices per axis (the legacy
    // one with slices, unsqueezed and joined); both slice by steps of 2 and of -1.
    for (route, windows) in [("default", 2), ("legacy", 0), ("opset13", 0)] {
        let model = formats::load(&fixture(&format!("windows.{route}.onnx"))).unwrap();
        let gathers: Vec<&Op> = model
            .graph()
            .nodes()
            .iter()
            .map(|n| &n.op)
            .filter(|op| matches!(op, Op::Gather { .. }))
            .collect();
        assert_eq!(gathers.len(), windows + 3, "{route}: {gathers:?}");
    }
}

#[test]
fn global_context_and_non_local_blocks_multiply_computed_values_as_pytorch_does() {
    matches_pytorch("context");
    // The pooling by the context weights, θᵀφ and the weights times g: three products of
    // two computed values, each by one node (the fixture runs a batch of two through a file
    // exported for one).
    for route in ROUTES {
        let model = formats::load(&fixture(&format!("context.{route}.onnx"))).unwrap();
        let products = model.graph().nodes().iter().filter(|n| n.op == Op::MatMul).count();
        assert_eq!(products, 3, "{route}");
    }
}

#[test]
fn negative_pads_crop_as_nasnet_shifts_its_second_path_and_match_pytorch() {
    // `ZeroPad2d((-1, 1, -1, 1))` crops the top row and left column and pads the bottom and
    // right; a pad by negative amounts alone is a crop.
    matches_pytorch("shifted");
}

#[test]
fn values_reordered_along_the_last_axis_of_folded_patches_match_pytorch() {
    // CSATv2's stem: `x.reshape(-1, C, 4)[:, :, order]` on patches folded into the batch
    // axis; the dynamo exporter's GatherND of the value transposed, the legacy one's Gather.
    matches_pytorch("indexed");
}

#[test]
fn one_dimensional_pools_of_tokens_match_pytorch() {
    // NextViT's AvgPool1d, and a MaxPool1d with padding and ceil mode.
    matches_pytorch("pools1d");
}

#[test]
fn three_d_convolutions_along_two_axes_match_pytorch() {
    // LambdaNet's `(r, r, 1)` position convolution, and a `(1, 3, 3)` one with a stride and
    // padding: the slices along the kernel's one-position axis convolved as images.
    matches_pytorch("volumes");
}

#[test]
fn folds_of_blocks_back_into_maps_match_pytorch() {
    // `F.fold` (ONNX `Col2Im`, from opset 18) of tiled 2×2 blocks and of overlapping 3×3
    // blocks at stride 2 with padding, whose overlaps sum.
    matches_pytorch_by("folds", &["default", "legacy"]);
}

#[test]
fn multihead_attention_over_tokens_with_the_batch_second_matches_pytorch() {
    // `nn.MultiheadAttention` on `[L, B, E]`: its fused path folds the batch with the heads
    // (`[L, B·heads, d]`) and its weights' path multiplies `[B·heads, L, d]`; CLIP's pool
    // joins a mean token in front and takes `pooled[0]`. Run at a batch of two through
    // files exported for one, and for any batch size (targets computed from the input's
    // shape). Opset 13 has no export of this attention.
    matches_pytorch_by("multihead", &["default", "legacy", "dynamic"]);
}

#[test]
fn segmentation_maps_are_explained_by_each_class_mean_over_the_pixels_as_pytorch() {
    // Logits at each pixel (upsampled), and a per-pixel softmax moved channels-last.
    matches_pytorch("segmenter");
    matches_pytorch("channels_last");
    for file in ["segmenter.default.onnx", "channels_last.legacy.onnx"] {
        let model = formats::load(&fixture(file)).unwrap();
        assert_eq!(model.num_classes(), 4, "{file}");
        assert!(
            model.notes.iter().any(|n| n.contains("mean over the positions")),
            "{file}: {:?}",
            model.notes
        );
        // Grad-CAM's default layer is one the class scores are computed from, not the
        // per-pixel softmax kept beside them.
        let input = format!("{}.input.npy", file.split('.').next().unwrap());
        let (shape, x) = support::read_npy(&fixture(&input));
        let x = Tensor::from_vec(x, shape, &Device::Cpu).unwrap().narrow(0, 0, 1).unwrap();
        let x = x.to_dtype(model.dtype()).unwrap();
        let cam = convscope::methods::gradcam::grad_cam(&model, &x, 1, ReluRule::Vanilla, None);
        assert!(cam.is_ok(), "{file}: {:?}", cam.err());
        // Each pixel's class, from the scores, is the file's output's argmax there.
        let map = model.score_map().expect("a map of class scores");
        let acts = model.forward(&x).unwrap();
        let scores: Vec<f32> =
            support::values(acts.node(map.node).unwrap()).iter().map(|&v| v as f32).collect();
        let output = support::values(acts.node(model.file_output()).unwrap());
        let plane = scores.len() / 4;
        let channels_last = file.starts_with("channels_last");
        let at = |p: usize, c: usize| {
            if channels_last { output[p * 4 + c] } else { output[c * plane + p] }
        };
        let argmax: Vec<usize> = (0..plane)
            .map(|p| (0..4).max_by(|&a, &b| at(p, a).total_cmp(&at(p, b))).unwrap())
            .collect();
        assert!(argmax.iter().any(|&c| c != argmax[0]), "{file}: one class everywhere");
        assert_eq!(map.classes(&scores, plane), argmax, "{file}");
        // Feature maps open on it.
        let layers = convscope::methods::features::INFO.layers;
        assert_eq!(layers.default_in(&model).unwrap(), map.node, "{file}");
    }
}

#[test]
fn one_dimensional_cnns_read_signals_as_maps_one_row_high_and_match_pytorch() {
    // Convs with stride, dilation and padding, a batch norm after a ReLU, a residual
    // block, max and average pools, and global pools of both kinds, over `[2, 40]`.
    matches_pytorch("signal");
    for route in ROUTES {
        let file = format!("signal.{route}.onnx");
        let model = formats::load(&fixture(&file)).unwrap();
        assert!(model.takes_signals(), "{file}");
        assert_eq!(model.input_chw().unwrap(), [2, 1, 40], "{file}");
        // Every layer up to the global pools is a map one row high: no reshapes between
        // them, so each 1-D layer reads as a map in the feature-maps tab.
        let nodes = model.graph().nodes();
        let pooled = nodes
            .iter()
            .position(|n| matches!(n.op, Op::GlobalAvgPool { .. } | Op::GlobalMaxPool { .. }))
            .unwrap_or_else(|| panic!("{file}: no global pool"));
        for (i, node) in nodes[..pooled].iter().enumerate() {
            let shape = model.graph().shape(ValueId::of_node(i));
            assert!(
                matches!(shape, [_, 1, _]) && !matches!(node.op, Op::Reshape { .. }),
                "{file}: {} is {:?} of shape {shape:?}",
                node.name,
                node.op
            );
        }
        // Named as the 1-D layers they are.
        let kinds: Vec<&str> = (0..nodes.len()).map(|i| model.graph().type_name(i)).collect();
        for kind in ["Conv1D", "MaxPooling1D", "AveragePooling1D", "GlobalAveragePooling1D"] {
            assert!(kinds.contains(&kind), "{file}: no {kind} in {kinds:?}");
        }
        assert!(!kinds.iter().any(|k| k.ends_with("2D")), "{file}: {kinds:?}");
        let layer = convscope::methods::gradcam::default_cam_layer(&model).unwrap();
        assert_eq!(model.graph().shape(ValueId::of_node(layer)), [12, 1, 10], "{file}");
    }
}

#[test]
fn a_signals_occlusion_zeroes_windows_along_its_length() {
    // Each sample lies under one window of 4, so its drop is the intact probability less
    // the probability with that window's samples of both channels zeroed.
    let model = formats::load(&fixture("signal.legacy.onnx")).unwrap();
    let (_, x) = support::read_npy(&fixture("signal.input.npy"));
    let x = Tensor::from_vec(x[..80].to_vec(), (1, 2, 1, 40), &Device::Cpu).unwrap();
    let config = convscope::methods::occlusion::OcclusionConfig::for_input(1, 40);
    assert_eq!((config.size, config.stride, config.fill), (4, 4, 0.0));
    let occ = convscope::methods::occlusion::occlusion(&model, &x, 2, &config).unwrap();
    assert_eq!((occ.drop.height, occ.drop.width), (1, 40));
    assert_eq!(occ.positions, (0..10).map(|i| (0, 4 * i)).collect::<Vec<_>>());
    let p = |x: &Tensor| support::values(&model.predict(x).unwrap())[2] as f32;
    let intact = p(&x);
    let values = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for window in 0..10 {
        let mut hidden = values.clone();
        for channel in 0..2 {
            hidden[channel * 40 + 4 * window..channel * 40 + 4 * window + 4].fill(0.0);
        }
        let hidden = Tensor::from_vec(hidden, (1, 2, 1, 40), &Device::Cpu).unwrap();
        let want = intact - p(&hidden);
        for sample in 4 * window..4 * window + 4 {
            let got = occ.drop.data[sample];
            assert!((got - want).abs() < 1e-6, "sample {sample}: {got} against {want}");
        }
    }
    assert!(occ.drop.data.iter().any(|&d| d.abs() > 1e-4), "nothing moved: {:?}", occ.drop);
}

#[test]
fn a_signal_models_maps_are_drawn_under_its_plot_and_images_are_refused() {
    use convscope::present::figures::{self, Style, Subject};
    let model = formats::load(&fixture("signal.legacy.onnx")).unwrap();
    let (_, x) = support::read_npy(&fixture("signal.input.npy"));
    let pixels = x[..80].iter().map(|v| v.clamp(0.0, 1.0)).collect::<Vec<_>>();
    let tensor = Tensor::from_vec(x[..80].to_vec(), (1, 2, 1, 40), &Device::Cpu).unwrap();
    let probs: Vec<f32> =
        support::values(&model.predict(&tensor).unwrap()).iter().map(|&p| p as f32).collect();
    let input = convscope::data::input::Prepared {
        source: "signal".into(),
        tensor,
        pixels,
        adjusted: None,
    };
    let subject = Subject { model: &model, input: &input, probs: &probs };
    let plot = subject.input_image().unwrap();
    assert!(plot.width() >= 240 && plot.height() >= 48, "{:?}", plot.dimensions());
    // Without an overlay the saliency is still the plot (over the map's bands), not a
    // strip one pixel high.
    let style = Style { overlay: false, colormap: convscope::present::colormap::Colormap::Jet };
    let saliency = figures::saliency(&subject, &[1], convscope::engine::ReluRule::Vanilla, style);
    let picture = saliency.unwrap().remove(0);
    assert_eq!(picture.image.dimensions(), plot.dimensions());
    assert_ne!(picture.image, plot, "the map's bands are under the traces");
    assert_eq!(picture.raw.0, [1, 40]);
    // An image for it is refused, saying what it takes.
    let image = image::DynamicImage::new_rgb8(40, 40);
    let fit = convscope::data::input::Fit::default();
    let err = convscope::data::input::prepare(&model, &image, "photo.png".as_ref(), fit);
    let message = err.map(drop).expect_err("an image refused").to_string();
    assert!(message.contains("signals of 2×40"), "{message}");
}
