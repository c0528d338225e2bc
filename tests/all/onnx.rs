//! The ONNX importer against ONNX Runtime's numbers on committed fixtures (made by
//! `scripts/make_onnx_fixtures.py`), the sample model through ONNX and back, gradients
//! through an imported DAG against finite differences, and the errors bad files give.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use convscope::formats;
use convscope::formats::onnx::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TensorTypeProto, TypeProto,
    ValueInfoProto,
};
use convscope::present::summary::Summary;
use convscope::{Activation, Model, Op, Point, ReluRule, Seed};
use prost::Message;

use crate::support::{normal, values};

pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx").join(name)
}

fn import(name: &str) -> Model {
    let path = fixture(name);
    convscope::formats::onnx::from_bytes(&std::fs::read(&path).unwrap(), &path).unwrap()
}

fn npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    crate::support::read_npy(&fixture(name))
}

fn npy_tensor(name: &str) -> Tensor {
    let (shape, data) = npy(name);
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// The model's output for `x` (what the file gives as its output), as f64s.
fn output_values(model: &Model, x: &Tensor) -> Vec<f64> {
    values(model.forward(x).unwrap().node(model.file_output()).unwrap())
}

/// `got` as long as `expected` and within `tol` of it everywhere.
fn assert_within(got: &[f64], expected: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: sizes");
    let worst = got.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(worst < tol, "{what}: off by {worst}");
}

/// Within `rel` of the expected value, relative to it, with a floor of 1% of the largest
/// expected magnitude so that values near zero are not held to digits float32 lacks.
fn assert_close(actual: &Tensor, expected: &[f32], rel: f64, what: &str) {
    let actual = values(actual);
    assert_eq!(actual.len(), expected.len(), "{what}: sizes");
    let largest = expected.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
    for (i, (a, &e)) in actual.iter().zip(expected).enumerate() {
        let e = f64::from(e);
        let tol = rel * e.abs().max(0.01 * largest);
        assert!((a - e).abs() <= tol, "{what}[{i}]: convscope {a}, expected {e}");
    }
}

fn layer_names(model: &Model) -> Vec<&str> {
    model.graph().nodes().iter().map(|n| n.name.as_str()).collect()
}

fn node_output(model: &Model, x: &Tensor, name: &str) -> Tensor {
    let node = model.graph().node_index(name).unwrap();
    model.forward(x).unwrap().node(node).unwrap().clone()
}

/// The fixture's probabilities from ONNX Runtime, for `x` fed in convscope's layout.
fn check_outputs(model: &Model, fixture_name: &str, x: &Tensor) {
    let (_, expected) = npy(&format!("{fixture_name}.output.npy"));
    assert_close(&model.predict(x).unwrap(), &expected, 1e-4, "probabilities");
    let out = model.forward(x).unwrap();
    assert_close(out.node(model.file_output()).unwrap(), &expected, 1e-4, "output");
}

#[test]
fn pytorch_chain_matches_onnx_runtime() {
    let model = import("torch_chain.onnx");
    assert_eq!(
        layer_names(&model),
        ["/conv1/Conv", "/pool/MaxPool", "/Flatten", "/fc1/Gemm", "/fc2/Gemm"]
    );
    let nodes = model.graph().nodes();
    assert_eq!(nodes[0].op.activation(), Activation::Relu);
    assert_eq!(nodes[3].op.activation(), Activation::Relu);
    assert_eq!(nodes[4].op.activation(), Activation::Softmax);
    assert_eq!(model.score_point(), (4, Point::PreSoftmax));
    assert_eq!(model.input.display_layout, convscope::model::DisplayLayout::ChannelsFirst);
    assert_eq!(model.input.range, [0.0, 1.0]);
    let x = npy_tensor("torch_chain.input.npy");
    check_outputs(&model, "torch_chain", &x);
    // The fused layer reads as the activated conv output, as ONNX's Relu output.
    let (_, relu) = npy("torch_chain._relu_Relu_output_0.npy");
    assert_close(&node_output(&model, &x, "/conv1/Conv"), &relu, 1e-4, "/conv1/Conv");
}

#[test]
fn tf2onnx_nhwc_chain_matches_onnx_runtime() {
    let model = import("keras_nhwc.onnx");
    // The input is fed NCHW; the Transposes around the convs cancel, and the flatten of
    // the NHWC value is a plain flatten with the dense kernel's rows reordered. The
    // model's name, which tf2onnx puts in front of every op's, is left out.
    assert_eq!(model.graph().input_shape(), [1, 12, 12]);
    assert_eq!(model.input.display_layout, convscope::model::DisplayLayout::ChannelsLast);
    assert_eq!(
        layer_names(&model),
        ["rescaling/mul", "conv2d/BiasAdd", "conv2d_1/BiasAdd", "flatten/Reshape", "dense/MatMul",]
    );
    let nodes = model.graph().nodes();
    assert!(matches!(nodes[1].op, Op::Conv2d { activation: Activation::Relu, .. }));
    assert!(matches!(nodes[3].op, Op::Flatten));
    assert!(matches!(nodes[4].op, Op::Dense { bias: true, activation: Activation::Softmax, .. }));
    let nhwc = npy_tensor("keras_nhwc.input.npy");
    let x = nhwc.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
    check_outputs(&model, "keras_nhwc", &x);
    let (_, hwc) = npy("keras_nhwc.sequential_conv2d_1_Relu__15_0.npy");
    let conv = node_output(&model, &x, "conv2d_1/BiasAdd");
    let nhwc_conv = conv.permute((0, 2, 3, 1)).unwrap();
    assert_close(&nhwc_conv, &hwc, 1e-4, "conv output");
}

/// Real Keras models converted by tf2onnx 1.17 (TensorFlow 2.21): NHWC input of one
/// channel (which tf2onnx turns to NCHW with a Reshape) and of three (a Transpose).
#[test]
fn real_tf2onnx_exports_match_onnx_runtime() {
    for (name, channels) in [("keras_gray", 1), ("keras_rgb", 3)] {
        let model = import(&format!("{name}.onnx"));
        assert_eq!(model.graph().input_shape(), [channels, 10, 10], "{name}");
        // Keras's Rescaling(1/255) at the input: pixels are fed as 0..255.
        assert_eq!(model.input.range, [0.0, 255.0]);
        let ops: Vec<&str> =
            (0..model.graph().nodes().len()).map(|i| model.graph().type_name(i)).collect();
        // Keras's own layers (batch norm as tf2onnx folds it: a Mul and an Add), with no
        // Transpose or Reshape left from the layout changes.
        assert_eq!(
            ops,
            [
                "Multiply",
                "Add",
                "Conv2D",
                "Multiply",
                "Add",
                "MaxPooling2D",
                "Conv2D",
                "Flatten",
                "Dense"
            ],
            "{name}"
        );
        let nodes = model.graph().nodes();
        assert_eq!(nodes[2].op.activation(), Activation::Relu);
        assert_eq!(nodes[6].op.activation(), Activation::Clip { min: 0.0, max: 6.0 });
        assert!(matches!(
            nodes[8].op,
            Op::Dense { bias: true, activation: Activation::Softmax, .. }
        ));
        let x = npy_tensor(&format!("{name}.input.npy")).permute((0, 3, 1, 2)).unwrap();
        check_outputs(&model, name, &x.contiguous().unwrap());
    }
}

/// TensorFlow's resizing as tf2onnx writes it: bilinear with `half_pixel`, nearest with
/// the deprecated `tf_half_pixel_for_nn` and nearest `floor`.
#[test]
fn tf2onnx_resizing_matches_onnx_runtime() {
    let model = import("keras_resized.onnx");
    let x = npy_tensor("keras_resized.input.npy").permute((0, 3, 1, 2)).unwrap();
    check_outputs(&model, "keras_resized", &x.contiguous().unwrap());
}

/// A functional Keras model (Add, Concatenate, ZeroPadding2D, DepthwiseConv2D,
/// GlobalAveragePooling2D) converted by tf2onnx.
#[test]
fn a_real_tf2onnx_dag_matches_onnx_runtime() {
    let model = import("keras_dag.onnx");
    let ops: Vec<&str> =
        (0..model.graph().nodes().len()).map(|i| model.graph().type_name(i)).collect();
    assert_eq!(
        ops,
        [
            "Conv2D",
            "Multiply",
            "Add",
            "ReLU",
            "Conv2D",
            "Add",
            "Concatenate",
            "ZeroPadding2D",
            "DepthwiseConv2D",
            "GlobalAveragePooling2D",
            "Flatten",
            "Dense"
        ]
    );
    assert_eq!(model.graph().nodes()[8].op.activation(), Activation::Tanh);
    let x = npy_tensor("keras_dag.input.npy").permute((0, 3, 1, 2)).unwrap();
    check_outputs(&model, "keras_dag", &x.contiguous().unwrap());
}

#[test]
fn residual_block_matches_onnx_runtime() {
    let model = import("residual.onnx");
    assert_eq!(
        layer_names(&model),
        [
            "normalise/sub",
            "normalise/div",
            "stem/conv",
            "block/conv1",
            "block/bn1",
            "block/relu1",
            "block/conv2",
            "block/bn2",
            "block/add",
            "block/relu2",
            "side/conv",
            "pool",
            "join",
            "gap",
            "squeeze",
            "head",
        ]
    );
    assert_eq!(model.input.channel_order, convscope::model::ChannelOrder::Rgb);
    let x = npy_tensor("residual.input.npy");
    check_outputs(&model, "residual", &x);
    for (node, file) in [("block/relu2", "block_out"), ("join", "joined")] {
        let (_, expected) = npy(&format!("residual.{file}.npy"));
        assert_close(&node_output(&model, &x, node), &expected, 1e-4, node);
    }
}

#[test]
fn opset_21_ops_match_onnx_runtime() {
    let model = import("ops21.onnx");
    assert_eq!(
        layer_names(&model),
        [
            "pad",
            "depthwise",
            "avgpool",
            "same_lower",
            // `x · Sigmoid(x)` (the sigmoid named "gate") is one swish node.
            "swish",
            "maxpool",
            // Unsqueeze and Squeeze of the flatten come back to it.
            "flatten",
            "fc/MatMul",
            "flip",
            "out",
        ]
    );
    let nodes = model.graph().nodes();
    assert_eq!(nodes[1].op.activation(), Activation::Clip { min: 0.0, max: 6.0 });
    assert_eq!(nodes[3].op.activation(), Activation::LeakyRelu { alpha: 0.2 });
    assert_eq!(nodes[4].op, Op::Activation { activation: Activation::Swish });
    assert_eq!(nodes[7].op.activation(), Activation::Tanh);
    let x = npy_tensor("ops21.input.npy");
    check_outputs(&model, "ops21", &x);
    let (_, swish) = npy("ops21.swish.npy");
    assert_close(&node_output(&model, &x, "swish"), &swish, 1e-4, "swish");
}

#[test]
fn activations_match_onnx_runtime() {
    let model = import("activations.onnx");
    let nodes = model.graph().nodes();
    let fused: Vec<(&str, Activation)> =
        nodes.iter().map(|n| (n.name.as_str(), n.op.activation())).collect();
    assert_eq!(
        fused,
        [
            ("conv1", Activation::Elu { alpha: 0.7, scale: 1.0 }),
            ("conv2", Activation::SELU),
            ("conv3", Activation::HardSwish),
            ("conv4", Activation::Gelu { approximate: false }),
            ("conv5", Activation::Gelu { approximate: true }),
            ("flatten", Activation::Linear),
            ("gemm1", Activation::Softplus),
            ("gemm2", Activation::Softsign),
            ("gemm3", Activation::HardSigmoid { alpha: 0.3, beta: 0.4 }),
            ("gemm4", Activation::Exponential),
            ("gemm5", Activation::Linear),
            ("gelu_old/Div", Activation::Linear),
            ("gelu_old/Erf", Activation::Erf),
            ("gelu_old/Add", Activation::Linear),
            ("gelu_old/Mul", Activation::Linear),
            ("gelu_old/Mul_1", Activation::Linear),
            ("gemm6", Activation::Softmax),
        ]
    );
    let x = npy_tensor("activations.input.npy");
    check_outputs(&model, "activations", &x);
    for (node, file) in [("conv5", "gelu_tanh"), ("gemm4", "exp")] {
        let (_, expected) = npy(&format!("activations.{file}.npy"));
        assert_close(&node_output(&model, &x, node), &expected, 1e-4, node);
    }
}

fn tensor(name: &str, dims: &[usize], t: &Tensor) -> TensorProto {
    let data = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: 1,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

pub(crate) fn node(op: &str, name: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![name.to_string()],
        attribute: attrs,
        ..Default::default()
    }
}

pub(crate) fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), ints: v.to_vec(), r#type: 7, ..Default::default() }
}

pub(crate) fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i: v, r#type: 2, ..Default::default() }
}

pub(crate) fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| match d {
            Some(v) => Dimension { dim_value: Some(*v), dim_param: None },
            None => Dimension { dim_value: None, dim_param: Some("N".into()) },
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: 1,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}

pub(crate) fn onnx_model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: 8,
        producer_name: "convscope tests".into(),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        ..Default::default()
    }
}

/// The sample model written as PyTorch would export it: Conv/Relu pairs, Flatten, Gemm
/// with `transB=1` (the dense kernels transposed to `[out, in]`), Softmax.
fn sample_as_onnx(sample: &Model) -> Vec<u8> {
    let w = |key: &str| sample.weights()[key].clone();
    let t = |key: &str| {
        let k = w(key).t().unwrap().contiguous().unwrap();
        tensor(&format!("{key}.t"), k.dims(), &k)
    };
    let plain = |key: &str| tensor(key, w(key).dims(), &w(key));
    let graph = GraphProto {
        name: "mnist_cnn".into(),
        node: vec![
            node("Conv", "conv2d_1", &["input_1", "conv2d_1.kernel", "conv2d_1.bias"], vec![]),
            node("Relu", "relu_1", &["conv2d_1"], vec![]),
            node("Conv", "conv2d_2", &["relu_1", "conv2d_2.kernel", "conv2d_2.bias"], vec![]),
            node("Relu", "relu_2", &["conv2d_2"], vec![]),
            node(
                "MaxPool",
                "max_pooling2d_1",
                &["relu_2"],
                vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
            ),
            node("Flatten", "flatten_1", &["max_pooling2d_1"], vec![]),
            node(
                "Gemm",
                "dense_1",
                &["flatten_1", "dense_1.kernel.t", "dense_1.bias"],
                vec![int("transB", 1)],
            ),
            node("Relu", "relu_3", &["dense_1"], vec![]),
            node(
                "Gemm",
                "preds",
                &["relu_3", "preds.kernel.t", "preds.bias"],
                vec![int("transB", 1)],
            ),
            node("Softmax", "softmax", &["preds"], vec![]),
        ],
        initializer: vec![
            plain("conv2d_1.kernel"),
            plain("conv2d_1.bias"),
            plain("conv2d_2.kernel"),
            plain("conv2d_2.bias"),
            t("dense_1.kernel"),
            plain("dense_1.bias"),
            t("preds.kernel"),
            plain("preds.bias"),
        ],
        input: vec![value_info("input_1", &[None, Some(1), Some(28), Some(28)])],
        output: vec![value_info("softmax", &[None, Some(10)])],
        ..Default::default()
    };
    onnx_model(graph).encode_to_vec()
}

#[test]
fn class_names_and_ultralytics_input_come_from_the_metadata() {
    let sample = convscope::data::sample::model().unwrap();
    let with = |props: &[(&str, &str)]| {
        let mut proto = ModelProto::decode(sample_as_onnx(&sample).as_slice()).unwrap();
        proto.metadata_props = props
            .iter()
            .map(|(key, value)| StringStringEntryProto {
                key: key.to_string(),
                value: value.to_string(),
            })
            .collect();
        let bytes = proto.encode_to_vec();
        convscope::formats::onnx::from_bytes(&bytes, Path::new("m.onnx")).unwrap()
    };
    let digits = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    // Ultralytics' Python dict: names, and its input preparation (the defaults) said.
    let dict: Vec<String> = digits.iter().enumerate().map(|(i, d)| format!("{i}: '{d}'")).collect();
    let dict = format!("{{{}}}", dict.join(", "));
    let model = with(&[("author", "Ultralytics"), ("names", &dict)]);
    assert_eq!(model.classes, digits);
    assert!(!model.input.assumed);
    assert_eq!((model.input.range, &model.input.mean[..]), ([0.0, 1.0], &[0.0][..]));
    // A JSON list under `labels`; the input still unknown.
    let list = format!("[\"{}\"]", digits.join("\", \""));
    let model = with(&[("labels", &list)]);
    assert_eq!(model.classes, digits);
    assert!(model.input.assumed);
    // Too few names, or not names: numbered, with a note that says why.
    for (value, why) in [("['a', 'b']", "2 class names for 10 outputs"), ("{0: 1}", "not a list")] {
        let model = with(&[("classes", value)]);
        assert_eq!(model.classes[3], "3");
        assert!(model.notes.iter().any(|n| n.contains(why)), "{value}: {:?}", model.notes);
    }
}

#[test]
fn sample_model_imports_back_from_onnx_with_equal_outputs() {
    let sample = convscope::data::sample::model().unwrap();
    let bytes = sample_as_onnx(&sample);
    let model = convscope::formats::onnx::from_bytes(&bytes, Path::new("mnist_cnn.onnx")).unwrap();
    assert_eq!(
        layer_names(&model),
        ["conv2d_1", "conv2d_2", "max_pooling2d_1", "flatten_1", "dense_1", "preds"]
    );
    assert_eq!(model.param_counts(), sample.param_counts());
    let x = npy_tensor("sample_model.input.npy");
    let ours = sample.predict(&x).unwrap();
    assert_close(
        &model.predict(&x).unwrap(),
        &values(&ours).iter().map(|&v| v as f32).collect::<Vec<_>>(),
        1e-5,
        "against convscope",
    );
    // The same export written by the fixture script, run by ONNX Runtime.
    let (_, ort) = npy("sample_model.output.npy");
    assert_close(&model.predict(&x).unwrap(), &ort, 1e-4, "against ONNX Runtime");
}

#[test]
fn float16_files_compute_in_float32_and_say_so() {
    // The sample model's weights rounded to float16 (exact in float32): the reference.
    let sample = convscope::data::sample::model().unwrap();
    let mut rounded = ModelProto::decode(sample_as_onnx(&sample).as_slice()).unwrap();
    let graph = rounded.graph.as_mut().unwrap();
    let mut halves = graph.initializer.clone();
    for (t, half) in graph.initializer.iter_mut().zip(&mut halves) {
        let floats = t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()));
        let halved: Vec<half::f16> = floats.map(half::f16::from_f32).collect();
        t.raw_data = halved.iter().flat_map(|h| h.to_f32().to_le_bytes()).collect();
        half.data_type = 10;
        half.raw_data = halved.iter().flat_map(|h| h.to_le_bytes()).collect();
    }
    let path = Path::new("half.onnx");
    let reference = convscope::formats::onnx::from_bytes(&rounded.encode_to_vec(), path).unwrap();
    assert!(reference.notes.is_empty(), "{:?}", reference.notes);
    // As float16 converters write it: every weight in float16, and either the input too or
    // casts after the input and before the output (`keep_io_types`).
    let mut whole = rounded.clone();
    whole.graph.as_mut().unwrap().initializer = halves;
    let mut kept_io = whole.clone();
    let graph = whole.graph.as_mut().unwrap();
    set_elem_type(&mut graph.input[0], 10);
    set_elem_type(&mut graph.output[0], 10);
    let graph = kept_io.graph.as_mut().unwrap();
    let cast = |name: &str, from: &str, to: i64| NodeProto {
        output: vec![name.into()],
        ..node("Cast", name, &[from], vec![int("to", to)])
    };
    let nodes = &mut graph.node;
    nodes[0].input[0] = "input_half".into();
    nodes.last_mut().unwrap().output[0] = "softmax_half".into();
    nodes.insert(0, cast("input_half", "input_1", 10));
    nodes.push(cast("softmax", "softmax_half", 1));
    let x = npy_tensor("sample_model.input.npy");
    let expected = output_values(&reference, &x);
    for (what, file) in [("float16 throughout", whole), ("float16 inside", kept_io)] {
        let model = convscope::formats::onnx::from_bytes(&file.encode_to_vec(), path).unwrap();
        assert_within(&output_values(&model, &x), &expected, 1e-7, what);
        let [note] = model.notes.as_slice() else { panic!("{what}: {:?}", model.notes) };
        assert!(note.contains("float16") && note.contains("computes in float32"), "{note}");
    }
    // A cast of a computed value to integers still stops.
    let mut truncating = rounded;
    let graph = truncating.graph.as_mut().unwrap();
    graph.node.last_mut().unwrap().output[0] = "scores".into();
    graph.node.push(NodeProto {
        output: vec!["softmax".into()],
        ..node("Cast", "to_int", &["scores"], vec![int("to", 7)])
    });
    let err = import_error(&truncating.encode_to_vec());
    assert!(err.contains("casting a computed value to ONNX type 7"), "{err}");
}

fn set_elem_type(info: &mut ValueInfoProto, elem_type: i32) {
    info.r#type.as_mut().unwrap().tensor_type.as_mut().unwrap().elem_type = elem_type;
}

#[test]
fn summary_shows_the_fused_layers_under_their_onnx_names() {
    let summary = Summary::of(&import("torch_chain.onnx"));
    let rows: Vec<(&str, &str)> =
        summary.layers.iter().map(|l| (l.name.as_str(), l.type_name.as_str())).collect();
    assert_eq!(
        rows,
        [
            ("/conv1/Conv", "Conv2D"),
            ("/pool/MaxPool", "MaxPooling2D"),
            ("/Flatten", "Flatten"),
            ("/fc1/Gemm", "Dense"),
            ("/fc2/Gemm", "Dense"),
        ]
    );
    assert_eq!(summary.layers[0].output_shape, [4, 12, 12]);
    assert_eq!(summary.total_params, 4 * 9 + 4 + 144 * 16 + 16 + 16 * 10 + 10);
}

#[test]
fn gradients_through_an_imported_dag_match_finite_differences() {
    let model = import("residual.onnx").to_dtype(DType::F64).unwrap();
    let x = npy_tensor("residual.input.npy").narrow(0, 0, 1).unwrap().to_dtype(DType::F64).unwrap();
    assert_eq!(model.score_point().1, Point::PreSoftmax);
    assert_input_gradient_matches_finite_differences(&model, &x);
}

/// The engine's input gradient of a weighted sum of the class scores (below the softmax)
/// against central finite differences, in f64.
fn assert_input_gradient_matches_finite_differences(model: &Model, x: &Tensor) {
    let (node, point) = model.score_point();
    let classes = model.num_classes();
    let pattern = [0.3f64, -1.0, 0.7, 0.2, -0.5];
    let weights: Vec<f64> = (0..classes).map(|i| pattern[i % pattern.len()]).collect();
    let weights = Tensor::from_vec(weights, (1, classes), &Device::Cpu).unwrap();
    let score = |x: &Tensor| {
        let acts = model.forward(x).unwrap();
        (acts.at(node, point).unwrap() * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let acts = model.forward(x).unwrap();
    let seed = Seed { node, point, grad: weights.clone() };
    let grads = model.backward(&acts, &seed, ReluRule::Vanilla, false).unwrap();
    let analytic = values(grads.input().unwrap());
    let base = values(x);
    let eps = 1e-6;
    let numeric: Vec<f64> = (0..base.len())
        .map(|i| {
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                score(&Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap())
            };
            (at(eps) - at(-eps)) / (2.0 * eps)
        })
        .collect();
    let scale = numeric.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    for (i, (a, n)) in analytic.iter().zip(&numeric).enumerate() {
        assert!(
            (a - n).abs() <= 1e-5 * scale,
            "input gradient [{i}]: engine {a}, finite differences {n}"
        );
    }
    assert!(numeric.iter().filter(|v| v.abs() > 1e-9).count() * 2 > numeric.len());
}

/// The model's scores for the batch `x` against `expected` (f32), then its input gradient
/// for the first image, in f64, against finite differences.
fn assert_scores_then_gradient(model: Model, x: &Tensor, expected: &Tensor) {
    let expected: Vec<f32> = values(expected).iter().map(|&v| v as f32).collect();
    let out = model.forward(x).unwrap();
    assert_close(out.node(model.file_output()).unwrap(), &expected, 1e-5, "scores");
    let model = model.to_dtype(DType::F64).unwrap();
    let x = x.narrow(0, 0, 1).unwrap().to_dtype(DType::F64).unwrap();
    assert_input_gradient_matches_finite_differences(&model, &x);
}

#[test]
fn todays_export_patterns_match_onnx_runtime() {
    let model = import("export18.onnx");
    assert_eq!(
        layer_names(&model),
        [
            "conv1", "prelu", "pad", "maxpool",
            // ReduceMean over the spatial axes is a global average pool.
            "se/mean", "se/fc1", "se/fc2", "se/scale",
            // The one-input Concat is the value itself.
            "peak", // A sum over the pixels is one reduction.
            "total", "both", "fc",
        ]
    );
    let x = npy_tensor("export18.input.npy");
    check_outputs(&model, "export18", &x);
    let (_, excited) = npy("export18.excited.npy");
    assert_close(&node_output(&model, &x, "se/scale"), &excited, 1e-4, "se/scale");
    let summary = Summary::of(&model);
    assert_eq!(summary.layers.iter().find(|l| l.name == "prelu").unwrap().type_name, "PReLU");
    // Gradients through the PReLU, the -inf padding, the reductions and the gate.
    let model = model.to_dtype(DType::F64).unwrap();
    let x = x.narrow(0, 0, 1).unwrap().to_dtype(DType::F64).unwrap();
    assert_input_gradient_matches_finite_differences(&model, &x);
}

#[test]
fn a_non_finite_output_names_the_layer_that_made_it() {
    let bytes = std::fs::read(fixture("export18.onnx")).unwrap();
    let mut onnx = ModelProto::decode(bytes.as_slice()).unwrap();
    // Two rows of -inf on top make the max pool's first row of windows -inf, and all
    // that reads them.
    let graph = onnx.graph.as_mut().unwrap();
    let pads = graph.initializer.iter_mut().find(|t| t.name == "pool_pads").unwrap();
    pads.raw_data = [0i64, 0, 2, 0, 0, 0, 0, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    pads.int64_data.clear();
    let model =
        convscope::formats::onnx::from_bytes(&onnx.encode_to_vec(), Path::new("m.onnx")).unwrap();
    let err = model.predict(&npy_tensor("export18.input.npy")).unwrap_err().to_string();
    assert!(err.starts_with("layer 'maxpool': computes an infinity or NaN"), "{err}");
}

fn import_error(bytes: &[u8]) -> String {
    let err =
        convscope::formats::onnx::from_bytes(bytes, Path::new("bad.onnx")).unwrap_err().to_string();
    assert!(err.starts_with("bad.onnx: "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn an_unsupported_op_is_named_with_its_node_and_the_supported_list() {
    let bytes = std::fs::read(fixture("torch_chain.onnx")).unwrap();
    let mut model = ModelProto::decode(bytes.as_slice()).unwrap();
    model.graph.as_mut().unwrap().node[1].op_type = "Mish".into();
    let err = import_error(&model.encode_to_vec());
    assert!(
        err.contains("unsupported ONNX op 'Mish' in node '/relu/Relu'; supported ops: Abs, Add, "),
        "{err}"
    );
    assert!(err.contains("Conv") && err.ends_with("Upsample, Where"), "{err}");
}

#[test]
fn every_truncation_of_a_file_is_an_error() {
    let bytes = std::fs::read(fixture("keras_nhwc.onnx")).unwrap();
    for len in 0..bytes.len() {
        import_error(&bytes[..len]);
    }
}

#[test]
fn garbage_is_an_error() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for len in [1, 7, 100, 4096] {
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        import_error(&bytes);
    }
    import_error(convscope::data::sample::bytes());
    // Valid protobuf, but nothing of a model.
    import_error(&ModelProto::default().encode_to_vec());
}

/// torch_chain with its first initializer replaced.
fn with_initializer(t: TensorProto) -> Vec<u8> {
    let bytes = std::fs::read(fixture("torch_chain.onnx")).unwrap();
    let mut model = ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let name = graph.initializer[0].name.clone();
    graph.initializer[0] = TensorProto { name, ..t };
    model.encode_to_vec()
}

#[test]
fn a_huge_declared_tensor_is_refused_before_allocation() {
    for dims in [vec![1 << 40, 1 << 40], vec![1 << 62, 4], vec![4, 1, 3, 1 << 30]] {
        let err = import_error(&with_initializer(TensorProto {
            dims,
            data_type: 1,
            raw_data: vec![0; 16].into(),
            ..Default::default()
        }));
        assert!(err.contains("more values than the whole file holds"), "{err}");
    }
    let err = import_error(&with_initializer(TensorProto {
        dims: vec![4, 1, 3, 3],
        data_type: 1,
        raw_data: vec![0; 16].into(),
        ..Default::default()
    }));
    assert!(err.contains("holds 16 bytes of data"), "{err}");
    let err = import_error(&with_initializer(TensorProto {
        dims: vec![4, 1, 3, 3],
        data_type: 1,
        data_location: 1,
        ..Default::default()
    }));
    assert!(err.contains("is stored externally but names no location"), "{err}");
}

/// `bytes` (an ONNX model) with every initializer's data moved to `data_file` beside it, as
/// PyTorch's default exporter writes them; returns the model file's path.
fn with_external_data(bytes: &[u8], dir: &Path, data_file: &str, location: &str) -> PathBuf {
    let mut model = ModelProto::decode(bytes).unwrap();
    let mut data = Vec::new();
    for t in &mut model.graph.as_mut().unwrap().initializer {
        let entry = |key: &str, value: String| StringStringEntryProto { key: key.into(), value };
        t.external_data = vec![
            entry("location", location.into()),
            entry("offset", data.len().to_string()),
            entry("length", t.raw_data.len().to_string()),
        ];
        t.data_location = 1;
        data.extend_from_slice(&std::mem::take(&mut t.raw_data));
        // Aligned as the exporter aligns them.
        data.resize(data.len().next_multiple_of(64), 0);
    }
    std::fs::write(dir.join(data_file), data).unwrap();
    let path = dir.join("m.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    path
}

#[test]
fn weights_in_an_external_file_beside_the_model_are_read() {
    let sample = convscope::data::sample::model().unwrap();
    let bytes = sample_as_onnx(&sample);
    let inline = convscope::formats::onnx::from_bytes(&bytes, Path::new("m.onnx")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = with_external_data(&bytes, dir.path(), "m.onnx.data", "m.onnx.data");
    assert!(std::fs::metadata(&path).unwrap().len() < 10_000, "the weights left the file");
    let external = formats::load(&path).unwrap();
    let x = npy_tensor("sample_model.input.npy");
    assert_eq!(values(&external.predict(&x).unwrap()), values(&inline.predict(&x).unwrap()));
    // Converted, it is one self-contained file.
    let native = dir.path().join("m.safetensors");
    convscope::formats::native::save(&external, &native).unwrap();
    std::fs::remove_file(dir.path().join("m.onnx.data")).unwrap();
    let reloaded = formats::load(&native).unwrap();
    // Saved row by row (the ONNX dense kernel is a transposed view), so summed in another
    // order: equal to float32's precision.
    let inline_probs: Vec<f32> =
        values(&inline.predict(&x).unwrap()).iter().map(|&v| v as f32).collect();
    assert_close(&reloaded.predict(&x).unwrap(), &inline_probs, 1e-5, "converted");
    // Without its data file, the model is an error naming it.
    let err = convscope::error::report(&formats::load(&path).unwrap_err());
    assert!(err.contains("'m.onnx.data'"), "{err}");
}

#[test]
fn external_data_outside_the_model_folder_is_refused() {
    let sample = convscope::data::sample::model().unwrap();
    let bytes = sample_as_onnx(&sample);
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    // A real data file one folder up, reachable by each trick below.
    let up = with_external_data(&bytes, outer.path(), "secret.data", "secret.data");
    std::fs::remove_file(up).unwrap();
    let secret = outer.path().join("secret.data");
    #[cfg(unix)]
    std::os::unix::fs::symlink(&secret, dir.join("link.data")).unwrap();
    let absolute = secret.display().to_string();
    let mut locations = vec!["../secret.data", absolute.as_str(), "/etc/passwd", "", "."];
    if cfg!(unix) {
        locations.push("link.data");
    }
    for location in locations {
        let path = with_external_data(&bytes, &dir, "unused.data", location);
        let err = convscope::error::report(&formats::load(&path).unwrap_err());
        assert!(err.contains("not a file in the model's folder"), "{location}: {err}");
        assert_eq!(err.lines().count(), 1);
    }
}

#[test]
fn an_open_image_size_is_taken_from_input_size() {
    let at = |size: [usize; 2]| convscope::formats::Options {
        input_size: Some(size),
        ..Default::default()
    };
    let bytes = std::fs::read(fixture("torch_chain.onnx")).unwrap();
    let mut model = ModelProto::decode(bytes.as_slice()).unwrap();
    let fixed = npy_tensor("torch_chain.input.npy");
    let [_, c, h, w] = fixed.dims() else { panic!("an image input") };
    let (c, h, w) = (*c, *h, *w);
    model.graph.as_mut().unwrap().input[0] =
        value_info("input", &[None, Some(c as i64), None, None]);
    let open = model.encode_to_vec();
    let path = Path::new("open.onnx");
    let err = convscope::formats::onnx::from_bytes(&open, path).unwrap_err();
    assert!(matches!(err, convscope::Error::OpenInputSize { .. }), "{err}");
    assert!(err.to_string().contains("--input-size HxW"), "{err}");
    let sized = convscope::formats::from_bytes_with(&open, path, &at([h, w])).unwrap();
    assert_eq!(sized.input_chw().unwrap(), [c, h, w]);
    check_outputs(&sized, "torch_chain", &fixed);
    // A size the rest of the graph cannot take is the graph's error, on one line.
    let err = convscope::formats::from_bytes_with(&open, path, &at([h + 3, w])).unwrap_err();
    assert_eq!(err.to_string().lines().count(), 1, "{err}");
    // A file that fixes its size must agree with the one given.
    let err = convscope::formats::from_bytes_with(&bytes, path, &at([h + 1, w])).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
    assert!(convscope::formats::from_bytes_with(&bytes, path, &at([h, w])).is_ok());
}

/// `[N, 5, 5, 3]` input, flattened in NHWC order, then `B` (with a Relu between when
/// `relu_first`): the flatten either reorders the dense kernel or becomes a real Permute.
fn nhwc_flatten_model(relu_first: bool, b: &Tensor) -> ModelProto {
    let mut nodes = vec![node("Flatten", "flat", &["x"], vec![])];
    let mut last = "flat";
    if relu_first {
        nodes.push(node("Relu", "relu", &["flat"], vec![]));
        last = "relu";
    }
    nodes.push(node("MatMul", "dense", &[last, "B"], vec![]));
    onnx_model(GraphProto {
        node: nodes,
        initializer: vec![tensor("B", &[75, 4], b)],
        input: vec![value_info("x", &[None, Some(5), Some(5), Some(3)])],
        output: vec![value_info("dense", &[None, Some(4)])],
        ..Default::default()
    })
}

#[test]
fn a_flatten_of_an_nhwc_input_keeps_its_order() {
    let b = normal(&[75, 4], 1);
    let nhwc = normal(&[2, 5, 5, 3], 2);
    let x = nhwc.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
    let flat = nhwc.reshape((2, 75)).unwrap();
    for relu_first in [false, true] {
        let bytes = nhwc_flatten_model(relu_first, &b).encode_to_vec();
        let model = convscope::formats::onnx::from_bytes(&bytes, Path::new("nhwc.onnx")).unwrap();
        assert_eq!(model.graph().input_shape(), [3, 5, 5]);
        let input = if relu_first { flat.relu().unwrap() } else { flat.clone() };
        let expected = values(&input.matmul(&b).unwrap());
        let expected: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
        let out = model.forward(&x).unwrap();
        assert_close(out.node(model.file_output()).unwrap(), &expected, 1e-4, "dense");
        // Only a reader other than a Dense needs the NHWC order made real.
        let permutes =
            model.graph().nodes().iter().filter(|n| matches!(n.op, Op::Transpose { .. }));
        assert_eq!(permutes.count(), usize::from(relu_first));
    }
}

#[test]
fn the_cli_reads_onnx_files() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_convscope"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let model = fixture("residual.onnx");
    let model = model.to_str().unwrap();
    let summary = run(&["summary", model]);
    assert!(summary.contains("block/add (Add)") && summary.contains("head (Dense)"), "{summary}");
    let digit = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_models/digits/08000_3.png");
    let predictions = run(&["predict", "--json", model, digit.to_str().unwrap()]);
    assert!(predictions.contains("08000_3.png"), "{predictions}");
    assert!(formats::load(&fixture("keras_nhwc.onnx")).is_ok());
}

/// A model reading `x` `[N, 2, 6, 6]` through `nodes`, whose last output is `y`.
fn image_model(nodes: Vec<NodeProto>, initializer: Vec<TensorProto>, opset: i64) -> Vec<u8> {
    let mut model = onnx_model(GraphProto {
        node: nodes,
        initializer,
        input: vec![value_info("x", &[None, Some(2), Some(6), Some(6)])],
        output: vec![value_info("y", &[])],
        ..Default::default()
    });
    model.opset_import[0].version = opset;
    model.encode_to_vec()
}

/// An int64 scalar constant.
fn int64(name: &str, v: i64) -> TensorProto {
    TensorProto { name: name.into(), data_type: 7, int64_data: vec![v], ..Default::default() }
}

fn int64s(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: 7,
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

fn floats(name: &str, v: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: 1,
        float_data: v.to_vec(),
        ..Default::default()
    }
}

fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto { name: name.into(), s: v.as_bytes().to_vec(), r#type: 3, ..Default::default() }
}

#[test]
fn a_batch_axis_moved_in_a_file_made_for_two_samples_is_a_one_line_error() {
    // Each sample is computed on its own, as a file for one (or any number) computes it; a
    // file for two whose batch axis moves would mix the two.
    let model = onnx_model(GraphProto {
        node: vec![
            node("Transpose", "t", &["x"], vec![ints("perm", &[1, 0, 2, 3])]),
            NodeProto { output: vec!["y".into()], ..node("Relu", "relu", &["t"], vec![]) },
        ],
        input: vec![value_info("x", &[Some(2), Some(2), Some(6), Some(6)])],
        output: vec![value_info("y", &[])],
        ..Default::default()
    });
    let err = import_error(&model.encode_to_vec());
    assert!(err.contains("it moves the batch axis of a file made for a batch of 2"), "{err}");
}

#[test]
fn ops_on_a_value_folding_an_axis_into_the_batch_equal_them_on_the_unfolded_value() {
    // The channels folded into the batch axis, `[N·2, 6, 6]`: each op's axes, perm, pads
    // and default axes name the file's axes, one fewer than the value convscope holds.
    let folded = vec![
        node("Reshape", "fold", &["x", "to_folded"], vec![]),
        node("Transpose", "t", &["fold"], vec![ints("perm", &[0, 2, 1])]),
        node("Softmax", "s", &["t"], vec![int("axis", 2)]),
        node("Pad", "p", &["s", "pads"], vec![]),
        node("ReduceMean", "m", &["p", "row"], vec![]),
        node("Slice", "every_other", &["m", "start", "end", "last", "two"], vec![]),
        node("Mul", "scaled", &["every_other", "per_column"], vec![]),
        node("Reshape", "unfold", &["scaled", "to_image"], vec![]),
    ];
    let plain = vec![
        node("Transpose", "t", &["x"], vec![ints("perm", &[0, 1, 3, 2])]),
        node("Softmax", "s", &["t"], vec![int("axis", 3)]),
        node("Pad", "p", &["s", "plain_pads"], vec![]),
        node("ReduceMean", "m", &["p", "plain_row"], vec![]),
        node("Slice", "every_other", &["m", "start", "end", "last", "two"], vec![]),
        node("Mul", "unfold", &["every_other", "plain_per_column"], vec![]),
    ];
    let b = normal(&[8, 3], 5);
    let per_column = Tensor::new(&[0.5f32, -2.0, 1.5, 3.0], &Device::Cpu).unwrap();
    let constants = |extra: Vec<TensorProto>| {
        let mut all = vec![
            int64s("to_folded", &[-1, 6, 6]),
            int64s("to_image", &[-1, 2, 1, 4]),
            int64s("start", &[0]),
            int64s("end", &[8]),
            int64s("last", &[-1]),
            int64s("two", &[2]),
            tensor("B", &[8, 3], &b),
            int64s("flat", &[-1, 8]),
        ];
        all.extend(extra);
        all
    };
    let head = |mut nodes: Vec<NodeProto>| {
        nodes.push(node("Reshape", "flat_out", &["unfold", "flat"], vec![]));
        nodes.push(NodeProto {
            output: vec!["y".into()],
            ..node("MatMul", "fc", &["flat_out", "B"], vec![])
        });
        nodes
    };
    let folded = image_model(
        head(folded),
        constants(vec![
            int64s("pads", &[0, 0, 1, 0, 0, 1]),
            int64s("row", &[1]),
            tensor("per_column", &[1, 1, 4], &per_column),
        ]),
        17,
    );
    let plain = image_model(
        head(plain),
        constants(vec![
            int64s("plain_pads", &[0, 0, 0, 1, 0, 0, 0, 1]),
            int64s("plain_row", &[2]),
            tensor("plain_per_column", &[1, 1, 1, 4], &per_column),
        ]),
        17,
    );
    let load =
        |bytes: &[u8]| convscope::formats::onnx::from_bytes(bytes, Path::new("m.onnx")).unwrap();
    let (folded, plain) = (load(&folded), load(&plain));
    let x = normal(&[2, 2, 6, 6], 6);
    let expected = plain.forward(&x).unwrap();
    let expected = expected.node(plain.file_output()).unwrap();
    assert_scores_then_gradient(folded, &x, expected);
}

#[test]
fn a_moved_value_reshaped_with_a_batch_computed_from_the_shape_unbinds_folded() {
    // `[N, 2, 6, 6]` with its channels moved in front, `[2, N, 6, 6]`, reshaped to
    // `[2, N·6, 6]` by a target computed from the input's shape (as the legacy exporter
    // writes SAM's `B · heads`, a batch of one fixed); channel 1 unbound, `[N·6, 6]`, and
    // unfolded: each sample's channel 1 flattened.
    let graph = GraphProto {
        node: vec![
            node("Shape", "s", &["x"], vec![]),
            node("Gather", "b", &["s", "zero"], vec![]),
            node("Mul", "b6", &["b", "six"], vec![]),
            node("Unsqueeze", "b6u", &["b6", "axis0"], vec![]),
            node("Concat", "target", &["two", "b6u", "sixes"], vec![int("axis", 0)]),
            node("Transpose", "t", &["x"], vec![ints("perm", &[1, 0, 2, 3])]),
            node("Reshape", "r", &["t", "target"], vec![]),
            node("Gather", "g", &["r", "one"], vec![int("axis", 0)]),
            NodeProto {
                output: vec!["y".into()],
                ..node("Reshape", "flat", &["g", "rows"], vec![])
            },
        ],
        initializer: vec![
            int64("zero", 0),
            int64("one", 1),
            int64("six", 6),
            int64s("axis0", &[0]),
            int64s("two", &[2]),
            int64s("sixes", &[6]),
            int64s("rows", &[-1, 36]),
        ],
        input: vec![value_info("x", &[Some(1), Some(2), Some(6), Some(6)])],
        output: vec![value_info("y", &[])],
        ..Default::default()
    };
    let bytes = onnx_model(graph).encode_to_vec();
    let model = convscope::formats::onnx::from_bytes(&bytes, Path::new("m.onnx")).unwrap();
    let x = normal(&[1, 2, 6, 6], 3);
    let out = model.forward(&x).unwrap();
    let got = out.node(model.file_output()).unwrap();
    assert_eq!(got.dims(), &[1, 36]);
    assert_eq!(values(got), values(&x.narrow(1, 1, 1).unwrap().flatten_all().unwrap()));
}

#[test]
fn pads_of_any_two_axes_follow_onnx() {
    // The channels and the width of `[N, 2, 6, 6]`: moved last, padded, moved back.
    let bytes = image_model(
        vec![NodeProto { output: vec!["y".into()], ..node("Pad", "pad", &["x", "p"], vec![]) }],
        vec![int64s("p", &[0, 1, 0, 0, 0, 0, 0, 2])],
        17,
    );
    let model = convscope::formats::onnx::from_bytes(&bytes, Path::new("m.onnx")).unwrap();
    let x = normal(&[2, 2, 6, 6], 7);
    let expected = x.pad_with_zeros(1, 1, 0).unwrap().pad_with_zeros(3, 0, 2).unwrap();
    let out = model.forward(&x).unwrap();
    let got = out.node(model.file_output()).unwrap();
    assert_eq!(got.dims(), &[2, 3, 6, 8]);
    assert_eq!(values(got), values(&expected));
}

#[test]
fn tiles_of_computed_values_follow_onnx() {
    let bytes = image_model(
        vec![NodeProto { output: vec!["y".into()], ..node("Tile", "tile", &["x", "r"], vec![]) }],
        vec![int64s("r", &[1, 2, 1, 3])],
        17,
    );
    let model = convscope::formats::onnx::from_bytes(&bytes, Path::new("m.onnx")).unwrap();
    let x = normal(&[2, 2, 6, 6], 8);
    let out = model.forward(&x).unwrap();
    let got = out.node(model.file_output()).unwrap();
    assert_eq!(values(got), values(&x.repeat((1, 2, 1, 3)).unwrap()));
    let tiled_batch = image_model(
        vec![NodeProto { output: vec!["y".into()], ..node("Tile", "tile", &["x", "r"], vec![]) }],
        vec![int64s("r", &[2, 1, 1, 1])],
        17,
    );
    assert!(import_error(&tiled_batch).contains("repeats [2, 1, 1, 1]"));
}

#[test]
fn reshape_targets_with_zero_and_minus_one_follow_onnx() {
    let b = normal(&[72, 3], 3);
    let x = normal(&[2, 2, 6, 6], 4);
    let expected = values(&x.reshape((2, 72)).unwrap().matmul(&b).unwrap());
    let expected: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
    for (first, second) in [([0, 12, -1], [0, -1]), ([-1, 2, 36], [-1, 72]), ([0, 0, 36], [0, 72])]
    {
        let bytes = image_model(
            vec![
                node("Reshape", "r1", &["x", "t1"], vec![]),
                node("Reshape", "r2", &["r1", "t2"], vec![]),
                NodeProto {
                    output: vec!["y".into()],
                    ..node("MatMul", "fc", &["r2", "B"], vec![])
                },
            ],
            vec![int64s("t1", &first), int64s("t2", &second), tensor("B", &[72, 3], &b)],
            17,
        );
        let model =
            convscope::formats::onnx::from_bytes(&bytes, Path::new("reshape.onnx")).unwrap();
        let out = model.forward(&x).unwrap();
        assert_close(out.node(model.file_output()).unwrap(), &expected, 1e-4, "reshaped");
        // The second reshape reads the input directly; the first is left unread.
        assert_eq!(layer_names(&model), ["r2", "fc"]);
        assert!(matches!(model.graph().nodes()[0].op, Op::Flatten));
    }
}

#[test]
fn ops_outside_what_the_graph_computes_are_one_line_errors() {
    let y = |n: NodeProto| NodeProto { output: vec!["y".into()], ..n };
    let cases: Vec<(Vec<NodeProto>, Vec<TensorProto>, i64, &str)> = vec![
        (
            vec![y(node("Softmax", "sm", &["x"], vec![int("axis", 0)]))],
            vec![],
            17,
            "node 'sm' (Softmax): Softmax over axis 0 of a value of per-sample shape [2, 6, 6]",
        ),
        (
            vec![y(node("Pad", "pad", &["x", "p"], vec![string("mode", "wrap")]))],
            vec![int64s("p", &[0, 0, 1, 1, 0, 0, 1, 1])],
            17,
            "padding mode 'wrap'; convscope pads in modes constant, reflect and edge",
        ),
        (
            vec![y(node("Pad", "pad", &["x", "p"], vec![]))],
            vec![int64s("p", &[0, 1, 1, 0, 0, 0, 0, 1])],
            17,
            "convscope pads at most two axes of a value, not the batch axis",
        ),
        (
            vec![y(node("Slice", "slice", &["x", "s", "e", "a"], vec![]))],
            vec![int64s("s", &[1]), int64s("e", &[2]), int64s("a", &[0])],
            17,
            "node 'slice' (Slice): slices the batch axis",
        ),
        (
            vec![y(node("Slice", "slice", &["x", "s", "e", "a", "st"], vec![]))],
            vec![int64s("s", &[0]), int64s("e", &[4]), int64s("a", &[1]), int64s("st", &[0])],
            17,
            "node 'slice' (Slice): a slice by steps of 0",
        ),
        (
            // The channels folded into the batch axis: `[N·2, 6, 6]`.
            vec![
                node("Reshape", "fold", &["x", "t"], vec![]),
                y(node("GlobalMaxPool", "pool", &["fold"], vec![])),
            ],
            vec![int64s("t", &[-1, 6, 6])],
            17,
            "node 'pool' (GlobalMaxPool): it reads a value whose batch axis folds in another \
             axis of 2 (a reshape to [B·2, …]), which convscope reads only with AveragePool, \
             Conv, Einsum, Flatten, MaxPool, Reshape, Shape, Size and Abs,",
        ),
        (
            // Folded images must be `[B·k, C, H, W]`.
            vec![
                node("Reshape", "fold", &["x", "t"], vec![]),
                y(node("MaxPool", "pool", &["fold"], vec![ints("kernel_shape", &[2, 2])])),
            ],
            vec![int64s("t", &[-1, 6, 6])],
            17,
            "node 'pool' (MaxPool): a MaxPool of a value of per-sample shape [2, 6, 6] whose \
             batch axis folds in its first axis: convscope reads images [B·k, C, H, W] so",
        ),
        (
            vec![y(node("Reshape", "fold", &["x", "t"], vec![]))],
            vec![int64s("t", &[-1, 6, 6])],
            17,
            "output 'y' folds another axis into the batch axis",
        ),
        (
            vec![
                node("Reshape", "fold", &["x", "t"], vec![]),
                y(node("Add", "add", &["fold", "x"], vec![])),
            ],
            vec![int64s("t", &[-1, 6, 6])],
            17,
            "node 'add' (Add): it reads 'x' beside a value whose batch axis folds in another \
             axis",
        ),
        (
            vec![y(node("Split", "split", &["x", "sz"], vec![int("axis", 1)]))],
            vec![int64s("sz", &[1, 1])],
            17,
            "cannot split 2 into [1, 1] for 1 outputs along axis 1",
        ),
        (
            vec![y(node("Concat", "cat", &["x", "x"], vec![int("axis", 0)]))],
            vec![],
            17,
            "concatenation along the batch axis",
        ),
        (
            vec![y(node("Transpose", "t", &["x"], vec![ints("perm", &[1, 0, 2, 3])]))],
            vec![],
            17,
            "moves the batch axis",
        ),
        (
            // An axis moved in front of the batch axis, then read whole: computed with the
            // batch second, but the scores must have it first again.
            vec![
                node("Transpose", "t", &["x"], vec![ints("perm", &[1, 0, 2, 3])]),
                y(node("Relu", "relu", &["t"], vec![])),
            ],
            vec![],
            17,
            "output 'y' has its batch axis after the first",
        ),
        (
            // A batch axis moved: pooled, it would not be an image's.
            vec![
                node("Transpose", "t", &["x"], vec![ints("perm", &[1, 0, 2, 3])]),
                node("Relu", "relu", &["t"], vec![]),
                y(node("MaxPool", "pool", &["relu"], vec![ints("kernel_shape", &[2, 2])])),
            ],
            vec![],
            17,
            "node 'pool' (MaxPool): it reads a value whose batch axis was moved after another",
        ),
        (
            // Moved in front of the batch axis, then reshaped with it still inside.
            vec![
                node("Transpose", "t", &["x"], vec![ints("perm", &[1, 0, 2, 3])]),
                y(node("Reshape", "r", &["t", "s"], vec![])),
            ],
            vec![int64s("s", &[2, 36, -1])],
            17,
            "output 'y' has its batch axis after the first",
        ),
        (
            vec![y(node("Transpose", "t", &["x"], vec![ints("perm", &[2, 3, 0, 1])]))],
            vec![],
            17,
            "output 'y' has its batch axis after the first",
        ),
        (
            vec![y(node("ReduceMean", "mean", &["x"], vec![ints("axes", &[0, 1])]))],
            vec![],
            17,
            "node 'mean' (ReduceMean): reduces axes [0, 1] of a rank-4 value, the batch axis \
             among them; convscope reduces computed values only within each sample",
        ),
        (
            // No axes: every axis, the batch axis too.
            vec![y(node("ReduceMax", "max", &["x"], vec![]))],
            vec![],
            13,
            "node 'max' (ReduceMax): reduces axes [0, 1, 2, 3] of a rank-4 value, the batch axis",
        ),
        (
            vec![y(node("ReduceProd", "prod", &["x"], vec![ints("axes", &[1])]))],
            vec![],
            13,
            "ReduceProd of a value computed from the input",
        ),
        (
            vec![y(node("Einsum", "e", &["x"], vec![string("equation", "bchw->chw")]))],
            vec![],
            17,
            "node 'e' (Einsum): einsum 'bchw->chw' does not keep the batch axis as one letter of \
             the output that only the computed inputs have",
        ),
        (
            vec![y(node("Einsum", "e", &["x", "k"], vec![string("equation", "bchw,b->bchw")]))],
            vec![int64s("k", &[1])],
            17,
            "does not keep the batch axis as one letter of the output that only the computed",
        ),
        (
            vec![y(node("Einsum", "e", &["x", "x"], vec![string("equation", "bchw,bcww->bch")]))],
            vec![],
            17,
            "einsum term 'bcww' repeats 'w' (a diagonal), which convscope does not read",
        ),
        (
            vec![y(node("Einsum", "e", &["x"], vec![string("equation", "bc->b")]))],
            vec![],
            17,
            "einsum equation 'bc->b' names 2 axes of an input of rank 4",
        ),
        (
            vec![y(node("Einsum", "e", &["x"], vec![string("equation", "bchw->bchwq")]))],
            vec![],
            17,
            "einsum equation 'bchw->bchwq' outputs 'q', which no input has",
        ),
        (vec![y(node("Relu", "r", &["x"], vec![]))], vec![], 6, "ONNX opset 6 is not supported"),
        (
            vec![
                node("Flatten", "f", &["x"], vec![]),
                node("LogSoftmax", "ls", &["f"], vec![]),
                y(node("Relu", "r", &["ls"], vec![])),
            ],
            vec![],
            17,
            "LogSoftmax is supported only as the model's output",
        ),
        (
            vec![y(node("QLinearConv", "q", &["x"], vec![]))],
            vec![],
            17,
            "unsupported ONNX op 'QLinearConv' in node 'q': a model quantized in the \
             QOperator form",
        ),
        (
            vec![
                node("DynamicQuantizeLinear", "dq", &["x"], vec![]),
                y(node("DequantizeLinear", "back", &["dq"], vec![])),
            ],
            vec![],
            17,
            "unsupported ONNX op 'DynamicQuantizeLinear' in node 'dq': activations quantized \
             at run time",
        ),
        (
            vec![y(node("Relu", "r", &["nowhere"], vec![]))],
            vec![],
            17,
            "reads 'nowhere', which is not defined before it",
        ),
        (
            vec![
                node("Shape", "s", &["x"], vec![]),
                y(node("Reshape", "r", &["x", "s"], vec![])),
                node("Relu", "unused", &["y"], vec![]),
            ],
            vec![],
            17,
            "output 'y' is the input itself",
        ),
    ];
    for (nodes, initializer, opset, needle) in cases {
        let err = import_error(&image_model(nodes, initializer, opset));
        assert!(err.contains(needle), "'{needle}' not in: {err}");
    }
}

#[test]
fn corrupted_bytes_give_an_error_or_a_model_never_a_panic() {
    use rand::{Rng, SeedableRng};
    let bytes = std::fs::read(fixture("residual.onnx")).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    for _ in 0..300 {
        let mut corrupt = bytes.clone();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..corrupt.len());
            corrupt[at] = rng.random();
        }
        if let Err(e) = convscope::formats::onnx::from_bytes(&corrupt, Path::new("bad.onnx")) {
            assert_eq!(e.to_string().lines().count(), 1, "{e}");
        }
    }
}

/// Elementwise ops, a constant per NHWC channel and a Concat on the channel axis all run
/// on the NCHW input without a Transpose: each keeps the pending NHWC layout.
#[test]
fn nhwc_values_stay_untransposed_through_elementwise_ops_and_concat() {
    let c = Tensor::new(&[0.1f32, -0.2, 0.3], &Device::Cpu).unwrap();
    let b = normal(&[150, 2], 5);
    let graph = GraphProto {
        node: vec![
            node("Relu", "r", &["x"], vec![]),
            node("Sub", "s", &["r", "c"], vec![]),
            node("Mul", "m", &["s", "r"], vec![]),
            node("Concat", "cat", &["m", "x"], vec![int("axis", 3)]),
            node("Reshape", "flat", &["cat", "shape"], vec![]),
            node("MatMul", "y", &["flat", "B"], vec![]),
        ],
        initializer: vec![
            tensor("c", &[3], &c),
            int64s("shape", &[-1, 150]),
            tensor("B", &[150, 2], &b),
        ],
        input: vec![value_info("x", &[None, Some(5), Some(5), Some(3)])],
        output: vec![value_info("y", &[None, Some(2)])],
        ..Default::default()
    };
    let bytes = onnx_model(graph).encode_to_vec();
    let model = convscope::formats::onnx::from_bytes(&bytes, Path::new("nhwc_ops.onnx")).unwrap();
    assert_eq!(layer_names(&model), ["r", "s", "m", "cat", "flat", "y"]);
    let nhwc = normal(&[2, 5, 5, 3], 6);
    let r = nhwc.relu().unwrap();
    let m = (r.broadcast_sub(&c).unwrap() * &r).unwrap();
    let cat = Tensor::cat(&[&m, &nhwc], 3).unwrap();
    let expected = values(&cat.reshape((2, 150)).unwrap().matmul(&b).unwrap());
    let expected: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
    let x = nhwc.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
    let out = model.forward(&x).unwrap();
    assert_close(out.node(model.file_output()).unwrap(), &expected, 1e-4, "y");
}

#[test]
fn reductions_of_nhwc_values_reduce_the_channels_first_source_without_transposes() {
    let b = normal(&[15, 2], 9);
    let graph = GraphProto {
        node: vec![
            // tf2onnx's layer norm over the channels, its last axis: mean and centring.
            node("ReduceMean", "mean", &["x"], vec![ints("axes", &[-1])]),
            node("Sub", "centred", &["x", "mean"], vec![]),
            // Over H, dropped: [W, C] of NHWC is [C, W] of the source, swapped.
            node("ReduceMax", "peak", &["centred"], vec![ints("axes", &[1]), int("keepdims", 0)]),
            node("Reshape", "flat", &["peak", "shape"], vec![]),
            node("MatMul", "y", &["flat", "B"], vec![]),
        ],
        initializer: vec![int64s("shape", &[-1, 15]), tensor("B", &[15, 2], &b)],
        input: vec![value_info("x", &[None, Some(5), Some(5), Some(3)])],
        output: vec![value_info("y", &[None, Some(2)])],
        ..Default::default()
    };
    let bytes = onnx_model(graph).encode_to_vec();
    let model = convscope::formats::onnx::from_bytes(&bytes, Path::new("nhwc.onnx")).unwrap();
    assert_eq!(layer_names(&model), ["mean", "centred", "peak", "flat", "y"]);
    let nhwc = normal(&[2, 5, 5, 3], 10);
    let centred = nhwc.broadcast_sub(&nhwc.mean_keepdim(3).unwrap()).unwrap();
    let peak = centred.max(1).unwrap();
    let expected = values(&peak.reshape((2, 15)).unwrap().matmul(&b).unwrap());
    let expected: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
    let x = nhwc.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
    let out = model.forward(&x).unwrap();
    assert_close(out.node(model.file_output()).unwrap(), &expected, 1e-4, "y");
}

/// PyTorch's MNIST example ends in `log_softmax`: the classifier's scores are the logits
/// below it, and its output is shown as the softmax.
#[test]
fn a_final_log_softmax_is_the_classifier_softmax() {
    let b = normal(&[72, 3], 7);
    let c = Tensor::new(&[0.5f32, -0.5, 0.0], &Device::Cpu).unwrap();
    let bytes = image_model(
        vec![
            node("Flatten", "flat", &["x"], vec![]),
            node("Gemm", "fc", &["flat", "B", "C"], vec![]),
            NodeProto { output: vec!["y".into()], ..node("LogSoftmax", "ls", &["fc"], vec![]) },
        ],
        vec![tensor("B", &[72, 3], &b), tensor("C", &[3], &c)],
        13,
    );
    let model = convscope::formats::onnx::from_bytes(&bytes, Path::new("logsoftmax.onnx")).unwrap();
    assert_eq!(layer_names(&model), ["flat", "fc"]);
    assert_eq!(model.score_point(), (1, Point::PreSoftmax));
    let x = normal(&[2, 2, 6, 6], 8);
    let logits = x.reshape((2, 72)).unwrap().matmul(&b).unwrap().broadcast_add(&c).unwrap();
    let expected = values(&convscope::engine::softmax(&logits).unwrap());
    let expected: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
    assert_close(&model.predict(&x).unwrap(), &expected, 1e-4, "probabilities");
}

#[test]
fn commands_take_an_open_size_from_the_image() {
    let bytes = std::fs::read(fixture("torch_chain.onnx")).unwrap();
    let mut model = ModelProto::decode(bytes.as_slice()).unwrap();
    let fixed = npy_tensor("torch_chain.input.npy");
    let &[_, c, h, w] = fixed.dims() else { panic!("an image input") };
    model.graph.as_mut().unwrap().input[0] =
        value_info("input", &[None, Some(c as i64), None, None]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    let image = dir.path().join("x.png");
    image::GrayImage::from_pixel(w as u32, h as u32, image::Luma([90])).save(&image).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_convscope")).args(args).output().unwrap()
    };
    let (model, image) = (path.to_str().unwrap(), image.to_str().unwrap());
    let o = run(&["predict", model, image]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains(&format!("using {h}×{w}, the size of")), "{err}");
    let o = run(&["summary", model]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--input-size HxW"));
    let size = format!("{h}x{w}");
    assert!(run(&["summary", model, "--input-size", &size]).status.success());
}

#[test]
fn of_several_outputs_the_class_scores_are_explained_unless_told() {
    let bytes = std::fs::read(fixture("export18.onnx")).unwrap();
    let mut onnx = ModelProto::decode(bytes.as_slice()).unwrap();
    // A second head before the probabilities: the pooled features, 4 per sample.
    let graph = onnx.graph.as_mut().unwrap();
    graph.output.insert(0, value_info("both", &[None, Some(4)]));
    let two = onnx.encode_to_vec();
    let path = Path::new("two.onnx");
    let model = convscope::formats::onnx::from_bytes(&two, path).unwrap();
    assert_eq!(model.num_classes(), 3, "the softmax head");
    assert_eq!(model.notes.len(), 1);
    assert!(model.notes[0].contains("explaining 'probs'"), "{:?}", model.notes);
    check_outputs(&model, "export18", &npy_tensor("export18.input.npy"));
    // The layer table lists every head, the explained one marked.
    let table = Summary::of(&model).to_string();
    assert!(table.contains("Output 'both': [4]\n"), "{table}");
    assert!(table.contains("Output 'probs': [3] (explained)\n"), "{table}");
    let options = |output: &str| convscope::formats::Options {
        output: Some(output.into()),
        ..Default::default()
    };
    let both = convscope::formats::from_bytes_with(&two, path, &options("both")).unwrap();
    assert_eq!(both.num_classes(), 4);
    assert!(both.notes.is_empty());
    let err = convscope::formats::from_bytes_with(&two, path, &options("nope")).unwrap_err();
    assert!(err.to_string().contains("no output named 'nope' (outputs: both, probs)"), "{err}");
}

#[test]
fn shape_arithmetic_and_normalize_patterns_match_onnx_runtime() {
    let model = import("shape_ops.onnx");
    let x = npy_tensor("shape_ops.input.npy");
    check_outputs(&model, "shape_ops", &x);
    let (_, normalized) = npy("shape_ops.d.npy");
    assert_close(&node_output(&model, &x, "normalize"), &normalized, 1e-4, "F.normalize");
    // The Expand to the same shape is no node; the growing one is a broadcast.
    let names = layer_names(&model);
    assert!(!names.contains(&"expand_same") && names.contains(&"expand_norm"), "{names:?}");
    // Gradients through the L2 norm, the broadcast, the square root and the reciprocal.
    let model = model.to_dtype(DType::F64).unwrap();
    let x = x.narrow(0, 0, 1).unwrap().to_dtype(DType::F64).unwrap();
    assert_input_gradient_matches_finite_differences(&model, &x);
}

#[test]
fn opset_9_upsample_matches_onnx_runtime() {
    let model = import("upsample9.onnx");
    let x = npy_tensor("upsample9.input.npy");
    for (value, node) in [("c", "clip"), ("near", "nearest"), ("lin", "linear"), ("both", "both")] {
        let (_, expected) = npy(&format!("upsample9.{value}.npy"));
        assert_close(&node_output(&model, &x, node), &expected, 1e-4, value);
    }
    check_outputs(&model, "upsample9", &x);
    let model = model.to_dtype(DType::F64).unwrap();
    let x = x.narrow(0, 0, 1).unwrap().to_dtype(DType::F64).unwrap();
    assert_input_gradient_matches_finite_differences(&model, &x);
}

#[test]
fn the_same_network_reads_alike_at_opsets_7_to_28() {
    // Batch norm, upsampling (scales an attribute before opset 9, an input after; Resize
    // from opset 10), max pool, dropout: the model zoo's opset-7 files and today's newest.
    let stats = |name: &str, seed| tensor(name, &[2], &normal(&[2], seed).abs().unwrap());
    let network = |opset: i64, spatial: i64| {
        let scales = [1.0f32, 1.0, 2.0, 2.0];
        let floats = |name: &str, v: &[f32]| AttributeProto {
            name: name.into(),
            floats: v.to_vec(),
            r#type: 6,
            ..Default::default()
        };
        let (upsample, scale_input) = match opset {
            ..9 => (node("Upsample", "up", &["bn"], vec![floats("scales", &scales)]), None),
            9 => (node("Upsample", "up", &["bn", "scales"], vec![]), Some("scales")),
            _ => (node("Resize", "up", &["bn", "", "scales"], vec![]), Some("scales")),
        };
        let mut initializer = vec![stats("g", 1), stats("b", 2), stats("m", 3), stats("v", 4)];
        initializer.extend(
            scale_input
                .map(|name| tensor(name, &[4], &Tensor::new(&scales, &Device::Cpu).unwrap())),
        );
        let pool = vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])];
        let nodes = vec![
            node("BatchNormalization", "bn", &["x", "g", "b", "m", "v"], {
                if opset < 9 { vec![int("spatial", spatial)] } else { vec![] }
            }),
            upsample,
            node("MaxPool", "pool", &["up"], pool),
            node("Dropout", "drop", &["pool"], vec![]),
            NodeProto { output: vec!["y".into()], ..node("Relu", "relu", &["drop"], vec![]) },
        ];
        image_model(nodes, initializer, opset)
    };
    let x = normal(&[1, 2, 6, 6], 5);
    let read = |opset| {
        let model = convscope::formats::onnx::from_bytes(&network(opset, 1), Path::new("n.onnx"));
        output_values(&model.unwrap_or_else(|e| panic!("opset {opset}: {e}")), &x)
    };
    let expected = read(9);
    assert_eq!(expected.len(), 2 * 6 * 6);
    for opset in [7, 8, 13, 21, 22, 25, 28] {
        assert_within(&read(opset), &expected, 1e-12, &format!("opset {opset}"));
    }
    let err = import_error(&network(7, 0));
    assert!(err.contains("batch normalisation per position (spatial = 0)"), "{err}");
}

#[test]
fn a_ceil_mode_window_longer_than_the_map_pools_all_of_it() {
    // Hugging Face's EfficientNet pools its last map by `AvgPool2d(2560, ceil_mode=True)`.
    let pool = |op: &str, kernel: i64, stride: i64, include_pad: i64| {
        let attributes = vec![
            ints("kernel_shape", &[kernel, kernel]),
            ints("strides", &[stride, stride]),
            int("ceil_mode", 1),
            int("count_include_pad", include_pad),
        ];
        let node = NodeProto { output: vec!["y".into()], ..node(op, "pool", &["x"], attributes) };
        convscope::formats::onnx::from_bytes(&image_model(vec![node], vec![], 17), Path::new("p"))
    };
    let x = normal(&[1, 2, 6, 6], 8);
    let per_channel = values(&x).chunks(36).map(<[f64]>::to_vec).collect::<Vec<_>>();
    let mean: Vec<f64> = per_channel.iter().map(|c| c.iter().sum::<f64>() / 36.0).collect();
    let max: Vec<f64> =
        per_channel.iter().map(|c| c.iter().copied().fold(f64::MIN, f64::max)).collect();
    for (kernel, stride) in [(9, 9), (2560, 2560), (7, 2)] {
        for include_pad in [0, 1] {
            let what = format!("window {kernel}, stride {stride}, count_include_pad {include_pad}");
            let average = pool("AveragePool", kernel, stride, include_pad).unwrap();
            assert_within(&output_values(&average, &x), &mean, 1e-6, &what);
        }
        let maximum = pool("MaxPool", kernel, stride, 0).unwrap();
        assert_within(&output_values(&maximum, &x), &max, 1e-12, "max");
    }
    // A window a stride or more past the map leaves no window starting inside it.
    let err = pool("AveragePool", 8, 2, 0).unwrap_err().to_string();
    assert!(err.contains("does not fit an input of 6"), "{err}");
}

#[test]
fn transformer_exports_pool_tokens_and_guard_their_softmax() {
    // Swin's pooler, `AdaptiveAvgPool1d(1)` on `[B, C, L]`, is a GlobalAveragePool of rank
    // 3; a volume's is rank 5. The dynamo exporter's attention writes
    // `Where(IsNaN(softmax), 0, softmax)`. Comparisons and IsNaN of constants fold.
    let x = normal(&[1, 2, 6, 6], 11);
    let channels: Vec<Vec<f64>> = values(&x).chunks(36).map(<[f64]>::to_vec).collect();
    let model = |nodes: Vec<NodeProto>, initializer: Vec<TensorProto>| {
        let bytes = image_model(nodes, initializer, 17);
        convscope::formats::onnx::from_bytes(&bytes, Path::new("t.onnx")).unwrap()
    };
    let y = |n: NodeProto| NodeProto { output: vec!["y".into()], ..n };
    let shapes: [(&str, &[i64]); 2] =
        [("GlobalAveragePool", &[0, 2, 36]), ("GlobalMaxPool", &[0, 2, 3, 2, 6])];
    for (op, shape) in shapes {
        let pooled = model(
            vec![
                node("Reshape", "tokens", &["x", "to"], vec![]),
                y(node(op, "pool", &["tokens"], vec![])),
            ],
            vec![int64s("to", shape)],
        );
        let expected: Vec<f64> = channels
            .iter()
            .map(|c| match op {
                "GlobalMaxPool" => c.iter().copied().fold(f64::MIN, f64::max),
                _ => c.iter().sum::<f64>() / 36.0,
            })
            .collect();
        assert_within(&output_values(&pooled, &x), &expected, 1e-6, op);
    }
    let one = |name: &str, v: [f32; 2]| {
        tensor(name, &[1, 2, 1, 1], &Tensor::new(&v, &Device::Cpu).unwrap())
    };
    let guarded = model(
        vec![
            node("Softmax", "sm", &["x"], vec![int("axis", -1)]),
            node("IsNaN", "nan", &["sm"], vec![]),
            node("Where", "kept", &["nan", "zero", "sm"], vec![]),
            // c ≥ 0.5 and c ≤ 0.5 per channel of c = [NaN→0, 0.5]: [0, 1] and [1, 1].
            node("IsNaN", "c_nan", &["c"], vec![]),
            node("Where", "c_clean", &["c_nan", "zero", "c"], vec![]),
            node("GreaterOrEqual", "ge", &["c_clean", "half"], vec![]),
            node("LessOrEqual", "le", &["c_clean", "half"], vec![]),
            node("Where", "ge_ten", &["ge", "ten", "zero"], vec![]),
            node("Where", "le_one", &["le", "one", "zero"], vec![]),
            node("Add", "shift", &["ge_ten", "le_one"], vec![]),
            y(node("Add", "out", &["kept", "shift"], vec![])),
        ],
        vec![
            one("c", [f32::NAN, 0.5]),
            one("zero", [0.0; 2]),
            one("half", [0.5; 2]),
            one("ten", [10.0; 2]),
            one("one", [1.0; 2]),
        ],
    );
    let expected: Vec<f64> = channels
        .iter()
        .zip([1.0, 11.0])
        .flat_map(|(c, shift)| {
            c.chunks(6)
                .flat_map(|row| {
                    let total: f64 = row.iter().map(|v| v.exp()).sum();
                    row.iter().map(move |v| v.exp() / total + shift).collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_within(&output_values(&guarded, &x), &expected, 1e-6, "guarded softmax");
    // The guard left no layer of its own.
    let names = layer_names(&guarded);
    assert!(!names.iter().any(|n| n.contains("nan") || n.contains("kept")), "{names:?}");
}

#[test]
fn several_computed_values_join_with_constants_between_them() {
    // DINOv2 with registers: `cat([cls, registers, patches])`, the registers constant.
    // The concat is the network's last node here (the forward once looked past it).
    let x = normal(&[1, 2, 6, 6], 12);
    let k = normal(&[1, 1, 6, 6], 13);
    let k2 = normal(&[1, 2, 6, 6], 14);
    let xs = values(&x);
    let relu: Vec<f64> = xs.iter().map(|v| v.max(0.0)).collect();
    let (ks, k2s) = (values(&k), values(&k2));
    let layouts: [(&[&str], Vec<&[f64]>); 2] = [
        (&["x", "k", "relu", "k2"], vec![&xs, &ks, &relu, &k2s]),
        (&["k", "x", "relu"], vec![&ks, &xs, &relu]),
    ];
    for (inputs, parts) in layouts {
        let nodes = vec![
            node("Relu", "relu", &["x"], vec![]),
            NodeProto {
                output: vec!["y".into()],
                ..node("Concat", "cat", inputs, vec![int("axis", 1)])
            },
        ];
        let initializer = vec![tensor("k", &[1, 1, 6, 6], &k), tensor("k2", &[1, 2, 6, 6], &k2)];
        let bytes = image_model(nodes, initializer, 17);
        let model = convscope::formats::onnx::from_bytes(&bytes, Path::new("cat.onnx")).unwrap();
        let expected: Vec<f64> = parts.concat();
        assert_within(&output_values(&model, &x), &expected, 1e-6, &format!("{inputs:?}"));
    }
}

#[test]
fn a_one_output_binary_classifier_reads_as_two_classes() {
    // A cats-and-dogs head: pooled channels, one logit z, with or without a sigmoid after
    // it. A softmax of one number is always 1; the two classes are (1 − σ(z), σ(z)).
    let x = normal(&[3, 2, 6, 6], 15);
    let w = Tensor::new(&[[0.8f32, -1.3]], &Device::Cpu).unwrap();
    let means: Vec<f64> = values(&x).chunks(36).map(|c| c.iter().sum::<f64>() / 36.0).collect();
    let logits: Vec<f64> = means.chunks(2).map(|m| 0.8 * m[0] - 1.3 * m[1] + 0.25).collect();
    let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
    let expected: Vec<f64> = logits.iter().flat_map(|&z| [1.0 - sigmoid(z), sigmoid(z)]).collect();
    for with_sigmoid in [false, true] {
        let mut nodes = vec![
            node("GlobalAveragePool", "pool", &["x"], vec![]),
            node("Flatten", "flat", &["pool"], vec![]),
            node("Gemm", "logit", &["flat", "w", "b"], vec![int("transB", 1)]),
        ];
        if with_sigmoid {
            nodes.push(node("Sigmoid", "y", &["logit"], vec![]));
        } else {
            nodes.last_mut().unwrap().output = vec!["y".into()];
        }
        let b = Tensor::new(&[0.25f32], &Device::Cpu).unwrap();
        let initializer = vec![tensor("w", &[1, 2], &w), tensor("b", &[1], &b)];
        let bytes = image_model(nodes, initializer, 17);
        let model = convscope::formats::onnx::from_bytes(&bytes, Path::new("cats.onnx")).unwrap();
        assert_eq!(model.num_classes(), 2);
        let got = values(&model.predict(&x).unwrap());
        assert_within(&got, &expected, 1e-6, &format!("sigmoid {with_sigmoid}"));
        assert!(model.notes.iter().any(|n| n.contains("binary classifier")), "{:?}", model.notes);
        let model = model.to_dtype(DType::F64).unwrap();
        let one = x.narrow(0, 0, 1).unwrap().to_dtype(DType::F64).unwrap();
        assert_input_gradient_matches_finite_differences(&model, &one);
    }
}

#[test]
fn a_multi_label_sigmoid_head_gives_each_class_its_own_probability() {
    // Three independent yes-or-no classes (a chest X-ray's findings): the probabilities are
    // the sigmoids, not a softmax of them; the scores are the logits below the sigmoid.
    let x = normal(&[2, 2, 6, 6], 16);
    let w = Tensor::new(&[[0.8f32, -1.3], [2.0, 0.5], [-0.4, 1.1]], &Device::Cpu).unwrap();
    let means: Vec<f64> = values(&x).chunks(36).map(|c| c.iter().sum::<f64>() / 36.0).collect();
    let rows = [[0.8, -1.3], [2.0, 0.5], [-0.4, 1.1]];
    let expected: Vec<f64> = means
        .chunks(2)
        .flat_map(|m| rows.map(|r| 1.0 / (1.0 + (-(r[0] * m[0] + r[1] * m[1])).exp())))
        .collect();
    let nodes = vec![
        node("GlobalAveragePool", "pool", &["x"], vec![]),
        node("Flatten", "flat", &["pool"], vec![]),
        node("Gemm", "logits", &["flat", "w"], vec![int("transB", 1)]),
        node("Sigmoid", "y", &["logits"], vec![]),
    ];
    let bytes = image_model(nodes, vec![tensor("w", &[3, 2], &w)], 17);
    let model = convscope::formats::onnx::from_bytes(&bytes, Path::new("labels.onnx")).unwrap();
    assert_eq!(model.num_classes(), 3);
    assert_within(&values(&model.predict(&x).unwrap()), &expected, 1e-6, "sigmoids");
    let (node, _) = model.score_point();
    assert_eq!(model.graph().nodes()[node].name, "logits");
    let model = model.to_dtype(DType::F64).unwrap();
    let one = x.narrow(0, 0, 1).unwrap().to_dtype(DType::F64).unwrap();
    assert_input_gradient_matches_finite_differences(&model, &one);
}

#[test]
fn constants_of_every_integer_boolean_and_half_precision_type_are_read() {
    // y = x + Where(condition, a, b) per channel, each operand of another ONNX type, raw
    // and in the typed fields: PyTorch's dynamo exporter writes boolean masks as
    // initializers, half-precision exports keep float16 weights.
    let typed = |name: &str, data_type: i32, raw: Vec<u8>, int32_data: Vec<i32>| TensorProto {
        name: name.into(),
        dims: vec![1, 2, 1, 1],
        data_type,
        raw_data: raw.into(),
        int32_data,
        ..Default::default()
    };
    let half = |v: [f32; 2]| v.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    let bf16 = |v: [f32; 2]| v.map(|v| i32::from(half::bf16::from_f32(v).to_bits())).to_vec();
    let cases: [(TensorProto, TensorProto, TensorProto, [f32; 2]); 4] = [
        (
            typed("c", 9, vec![1, 0], vec![]),
            typed("a", 10, half([1.5, 2.5]), vec![]),
            typed("b", 3, vec![], vec![-3, 4]),
            [1.5, 4.],
        ),
        (
            typed("c", 9, vec![], vec![0, 1]),
            typed("a", 16, vec![], bf16([0.75, -2.0])),
            typed("b", 2, vec![200, 7], vec![]),
            [200., -2.],
        ),
        (
            typed("c", 9, vec![0, 0], vec![]),
            typed(
                "a",
                5,
                (-7i16).to_le_bytes().into_iter().chain(8i16.to_le_bytes()).collect(),
                vec![],
            ),
            TensorProto { uint64_data: vec![9, 1 << 40], ..typed("b", 13, vec![], vec![]) },
            [9., (1u64 << 40) as f32],
        ),
        (
            typed("c", 9, vec![1, 1], vec![]),
            typed(
                "a",
                4,
                65535u16.to_le_bytes().into_iter().chain(3u16.to_le_bytes()).collect(),
                vec![],
            ),
            typed(
                "b",
                12,
                5u32.to_le_bytes().into_iter().chain(6u32.to_le_bytes()).collect(),
                vec![],
            ),
            [65535., 3.],
        ),
    ];
    let x = normal(&[1, 2, 6, 6], 5);
    for (c, a, b, picked) in cases {
        let bytes = image_model(
            vec![
                node("Where", "w", &["c", "a", "b"], vec![]),
                NodeProto { output: vec!["y".into()], ..node("Add", "y", &["x", "w"], vec![]) },
            ],
            vec![c, a, b],
            17,
        );
        let model = formats::onnx::from_bytes(&bytes, Path::new("types.onnx")).unwrap();
        let out = model.forward(&x).unwrap();
        let expected: Vec<f32> =
            values(&x).iter().enumerate().map(|(i, &v)| v as f32 + picked[i / 36]).collect();
        assert_close(out.node(model.file_output()).unwrap(), &expected, 1e-6, "picked");
    }
    // A type still unread (strings) names itself.
    let bytes = image_model(
        vec![
            node("Where", "w", &["c", "a", "b"], vec![]),
            NodeProto { output: vec!["y".into()], ..node("Add", "y", &["x", "w"], vec![]) },
        ],
        vec![
            typed("c", 8, vec![], vec![]),
            typed("a", 3, vec![1, 2], vec![]),
            typed("b", 3, vec![3, 4], vec![]),
        ],
        17,
    );
    let error = formats::onnx::from_bytes(&bytes, Path::new("types.onnx")).err().unwrap();
    assert!(error.to_string().contains("ONNX data type 8"), "{error}");
}

#[test]
fn three_d_pools_along_the_depth_or_over_each_slice_and_ifs_decided_at_load() {
    // x `[2, 6, 6]` viewed as `[C 2, D 2, H 3, W 6]`: an average pool along D (padded
    // unevenly, pads counted), a max pool over each slice's H and W (padded at the bottom),
    // and an If on a constant picking one of two different branches.
    let x = normal(&[1, 2, 6, 6], 10);
    let xs = values(&x);
    let at = |c: usize, d: isize, h: isize, w: isize| -> Option<f64> {
        let inside = (0..2).contains(&d) && (0..3).contains(&h) && (0..6).contains(&w);
        inside.then(|| xs[((c * 2 + d as usize) * 3 + h as usize) * 6 + w as usize])
    };
    let pools = [
        ("AveragePool", [2, 1, 1], [1, 1, 1], [1, 0, 0, 0, 0, 0], [2usize, 2, 3, 6]),
        ("MaxPool", [1, 2, 2], [1, 2, 2], [0, 0, 0, 0, 1, 0], [2, 2, 2, 3]),
    ];
    for (op, kernel, strides, pads, out) in pools {
        let mut attrs =
            vec![ints("kernel_shape", &kernel), ints("strides", &strides), ints("pads", &pads)];
        attrs.push(int("count_include_pad", 1));
        let bytes = image_model(
            vec![
                node("Reshape", "volume", &["x", "shape"], vec![]),
                node(
                    op,
                    "pooled",
                    &["volume"],
                    if op == "MaxPool" { attrs[..3].to_vec() } else { attrs },
                ),
                NodeProto { output: vec!["y".into()], ..node("Flatten", "y", &["pooled"], vec![]) },
            ],
            vec![int64s("shape", &[0, 2, 2, 3, 6])],
            17,
        );
        let model = formats::onnx::from_bytes(&bytes, Path::new("pool3d.onnx")).unwrap();
        let got = output_values(&model, &x);
        let mut expected = Vec::new();
        for c in 0..out[0] {
            for d in 0..out[1] {
                for h in 0..out[2] {
                    for w in 0..out[3] {
                        let origin = [d, h, w].map(|v| v as isize);
                        let cells: Vec<Option<f64>> = (0..kernel[0])
                            .flat_map(|i| {
                                (0..kernel[1])
                                    .flat_map(move |j| (0..kernel[2]).map(move |k| [i, j, k]))
                            })
                            .map(|[i, j, k]| {
                                let p = |a: usize, o: i64| {
                                    origin[a] * strides[a] as isize + o as isize - pads[a] as isize
                                };
                                at(c, p(0, i), p(1, j), p(2, k))
                            })
                            .collect();
                        expected.push(match op {
                            "MaxPool" => cells.iter().flatten().copied().fold(f64::MIN, f64::max),
                            _ => cells.iter().flatten().sum::<f64>() / cells.len() as f64,
                        });
                    }
                }
            }
        }
        assert_within(&got, &expected, 1e-6, op);
    }
    // Strides of the wrong length are an error, not a panic.
    let bytes = image_model(
        vec![
            node("Reshape", "volume", &["x", "shape"], vec![]),
            node(
                "AveragePool",
                "y",
                &["volume"],
                vec![ints("kernel_shape", &[2, 1, 1]), ints("strides", &[1, 1])],
            ),
        ],
        vec![int64s("shape", &[0, 2, 2, 3, 6])],
        17,
    );
    let error = formats::onnx::from_bytes(&bytes, Path::new("pool3d.onnx")).err().unwrap();
    assert!(error.to_string().contains("strides [1, 1]"), "{error}");
    let branch = |op: &str| AttributeProto {
        name: if op == "Relu" { "then_branch" } else { "else_branch" }.into(),
        r#type: 5,
        g: Some(Box::new(GraphProto {
            node: vec![node(op, "picked", &["x"], vec![])],
            output: vec![value_info("picked", &[])],
            ..Default::default()
        })),
        ..Default::default()
    };
    for (condition, negated) in [(1u8, false), (0, true)] {
        let c = TensorProto {
            name: "c".into(),
            data_type: 9,
            raw_data: vec![condition].into(),
            ..Default::default()
        };
        let bytes = image_model(
            vec![
                NodeProto {
                    attribute: vec![branch("Relu"), branch("Neg")],
                    ..node("If", "branched", &["c"], vec![])
                },
                NodeProto {
                    output: vec!["y".into()],
                    ..node("Flatten", "y", &["branched"], vec![])
                },
            ],
            vec![c],
            17,
        );
        let model = formats::onnx::from_bytes(&bytes, Path::new("if.onnx")).unwrap();
        let got = output_values(&model, &x);
        let expected: Vec<f64> =
            xs.iter().map(|&v| if negated { -v } else { v.max(0.0) }).collect();
        assert_eq!(got, expected, "If on {condition}");
    }
}

#[test]
fn local_response_normalisation_follows_its_definition_and_gradient() {
    // AlexNet's (size 5) and an even size, whose window reaches one channel further up than
    // down; 7 channels, so windows are cut at both ends.
    let float = |name: &str, v: f32| AttributeProto {
        name: name.into(),
        f: v,
        r#type: 1,
        ..Default::default()
    };
    let x = normal(&[2, 7, 5, 5], 9);
    for (size, alpha, beta, bias) in [(5, 1e-1, 0.75, 2.0), (4, 0.5, 0.6, 1.0)] {
        let attrs = vec![
            int("size", size),
            float("alpha", alpha),
            float("beta", beta),
            float("bias", bias),
        ];
        let model = onnx_model(GraphProto {
            node: vec![
                node("LRN", "lrn", &["x"], attrs),
                NodeProto { output: vec!["y".into()], ..node("Flatten", "y", &["lrn"], vec![]) },
            ],
            input: vec![value_info("x", &[None, Some(7), Some(5), Some(5)])],
            output: vec![value_info("y", &[])],
            ..Default::default()
        });
        let model =
            formats::onnx::from_bytes(&model.encode_to_vec(), Path::new("lrn.onnx")).unwrap();
        let out = model.forward(&x).unwrap();
        let got = values(out.node(model.file_output()).unwrap());
        let xs = values(&x);
        let size = size as usize;
        let (below, above) = ((size - 1) / 2, size / 2);
        let expected: Vec<f64> = (0..xs.len())
            .map(|i| {
                let (image, c, pixel) = (i / 175, i / 25 % 7, i % 25);
                let window = c.saturating_sub(below)..(c + above + 1).min(7);
                let squares: f64 = window.map(|j| xs[image * 175 + j * 25 + pixel].powi(2)).sum();
                let d = f64::from(bias) + f64::from(alpha) / size as f64 * squares;
                xs[i] / d.powf(f64::from(beta))
            })
            .collect();
        assert_within(&got, &expected, 1e-5, &format!("size {size}"));
        let model = model.to_dtype(DType::F64).unwrap();
        let x = x.narrow(0, 0, 1).unwrap().to_dtype(DType::F64).unwrap();
        assert_input_gradient_matches_finite_differences(&model, &x);
    }
}

#[test]
fn where_by_a_constant_condition_picks_between_computed_values_and_constants() {
    // A mask over the columns, picking x itself, ReLU(x) or a constant (−∞ too, the
    // dynamo exporter's fill for a max pool's window), in each order.
    let columns = [true, false, true, true, false, true];
    let mask = TensorProto {
        name: "c".into(),
        dims: vec![1, 1, 1, 6],
        data_type: 9,
        raw_data: columns.map(u8::from).to_vec().into(),
        ..Default::default()
    };
    let constant = |name: &str, fill: f32| TensorProto {
        name: name.into(),
        dims: vec![1, 2, 1, 1],
        data_type: 1,
        raw_data: [fill, 0.5].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into(),
        ..Default::default()
    };
    let x = normal(&[2, 2, 6, 6], 8);
    let cases: [(&str, &str, f32); 3] =
        [("x", "k", -1.5), ("k", "relu", f32::NEG_INFINITY), ("x", "relu", 0.)];
    for (a, b, fill) in cases {
        let bytes = image_model(
            vec![
                node("Relu", "relu", &["x"], vec![]),
                node("Where", "w", &["c", a, b], vec![]),
                NodeProto { output: vec!["y".into()], ..node("Flatten", "y", &["w"], vec![]) },
            ],
            vec![mask.clone(), constant("k", fill)],
            17,
        );
        let model = formats::onnx::from_bytes(&bytes, Path::new("where.onnx")).unwrap();
        let out = model.forward(&x).unwrap();
        let side = |name: &str, i: usize, v: f64| match name {
            "x" => v as f32,
            "relu" => v.max(0.0) as f32,
            _ => [fill, 0.5][(i / 36) % 2],
        };
        let expected: Vec<f32> = values(&x)
            .iter()
            .enumerate()
            .map(|(i, &v)| if columns[i % 6] { side(a, i, v) } else { side(b, i, v) })
            .collect();
        let got = out.node(model.file_output()).unwrap();
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got, expected, "Where(c, {a}, {b})");
        if fill.is_finite() {
            let model = model.to_dtype(DType::F64).unwrap();
            let x = x.narrow(0, 0, 1).unwrap().to_dtype(DType::F64).unwrap();
            assert_input_gradient_matches_finite_differences(&model, &x);
        }
    }
}

#[test]
fn exporters_spellings_of_slices_and_clamps_fold() {
    // The legacy exporter's F.pad: a pad list reversed by a Slice of step -1 ending at
    // -2⁶³, its negative entries clipped to 0 (timm's "same" padding clamps computed pads),
    // then a channel slice to the end, "end" being 2⁶³ − 1. Through f64 both bounds round
    // to ±2⁶³, past i64.
    let x = normal(&[2, 2, 6, 6], 6);
    let bytes = image_model(
        vec![
            node("Slice", "reversed", &["pads", "minus_one", "front", "zero", "minus_one"], vec![]),
            node("Clip", "clipped", &["reversed", "zero_scalar"], vec![]),
            node("Pad", "padded", &["x", "clipped"], vec![]),
            NodeProto {
                output: vec!["y".into()],
                ..node("Slice", "y", &["padded", "one", "end", "one"], vec![])
            },
        ],
        vec![
            // Reversed: [0, 0, 0, 1, -5, 0, 0, 2]; clipped: one column before, two after.
            int64s("pads", &[2, 0, 0, -5, 1, 0, 0, 0]),
            int64s("minus_one", &[-1]),
            int64s("front", &[i64::MIN]),
            int64s("zero", &[0]),
            TensorProto { dims: vec![], ..int64s("zero_scalar", &[0]) },
            int64s("one", &[1]),
            int64s("end", &[i64::MAX]),
        ],
        17,
    );
    let model = formats::onnx::from_bytes(&bytes, Path::new("spellings.onnx")).unwrap();
    let out = model.forward(&x).unwrap();
    let expected = x.narrow(1, 1, 1).unwrap().pad_with_zeros(3, 1, 2).unwrap();
    let expected: Vec<f32> = values(&expected).iter().map(|&v| v as f32).collect();
    assert_close(out.node(model.file_output()).unwrap(), &expected, 1e-6, "sliced");
    assert_eq!(
        model.graph().shape(convscope::model::ValueId::of_node(model.file_output())),
        [1, 6, 9]
    );
}

/// Split attention (ResNeSt, SKNet) takes a softmax across its branches: over the channels
/// of a map, here also over its columns, each made of the ops it is (max, shift, exp, sum,
/// divide). Values and input gradients against candle's softmax and finite differences.
#[test]
fn softmax_over_any_axis_of_a_sample_matches_and_has_its_gradient() {
    let b = normal(&[2, 3], 9);
    let bytes = image_model(
        vec![
            node("Softmax", "across_channels", &["x"], vec![int("axis", 1)]),
            node("Softmax", "across_columns", &["x"], vec![int("axis", -1)]),
            node("Mul", "both", &["across_channels", "across_columns"], vec![]),
            node("GlobalAveragePool", "pool", &["both"], vec![]),
            node("Flatten", "flat", &["pool"], vec![]),
            NodeProto { output: vec!["y".into()], ..node("Gemm", "fc", &["flat", "B"], vec![]) },
        ],
        vec![tensor("B", &[2, 3], &b)],
        13,
    );
    let model = formats::onnx::from_bytes(&bytes, Path::new("softmax.onnx")).unwrap();
    let x = (normal(&[2, 2, 6, 6], 10) * 3.0).unwrap();
    let softmax_over = |d: usize| {
        let e = x.broadcast_sub(&x.max_keepdim(d).unwrap()).unwrap().exp().unwrap();
        e.broadcast_div(&e.sum_keepdim(d).unwrap()).unwrap()
    };
    let both = (softmax_over(1) * softmax_over(3)).unwrap();
    let expected = both.mean((2, 3)).unwrap().matmul(&b).unwrap();
    assert_scores_then_gradient(model, &x, &expected);
    // Across the batch it is refused, by name.
    let bytes = image_model(
        vec![NodeProto {
            output: vec!["y".into()],
            ..node("Softmax", "s", &["x"], vec![int("axis", 0)])
        }],
        vec![],
        13,
    );
    let error = formats::onnx::from_bytes(&bytes, Path::new("batch.onnx")).err().unwrap();
    assert!(error.to_string().contains("over axis 0"), "{error}");
}

/// ECA attention convolves across the channels with a Conv1d: a 1-D conv (here dilated
/// and unevenly padded) runs as a 2-D one over a map one row high. Values against
/// candle's conv1d, gradients against finite differences.
#[test]
fn one_dimensional_convs_match_and_have_their_gradient() {
    let w = normal(&[2, 2, 5], 11);
    let b = normal(&[62, 3], 12);
    let bytes = image_model(
        vec![
            node("Reshape", "rows", &["x", "row_shape"], vec![]),
            node(
                "Conv",
                "conv1d",
                &["rows", "W"],
                vec![ints("pads", &[2, 1]), ints("strides", &[1]), ints("dilations", &[2])],
            ),
            node("Flatten", "flat", &["conv1d"], vec![]),
            NodeProto { output: vec!["y".into()], ..node("Gemm", "fc", &["flat", "B"], vec![]) },
        ],
        vec![
            int64s("row_shape", &[0, 2, 36]),
            tensor("W", &[2, 2, 5], &w),
            tensor("B", &[62, 3], &b),
        ],
        13,
    );
    let model = formats::onnx::from_bytes(&bytes, Path::new("conv1d.onnx")).unwrap();
    let x = normal(&[2, 2, 6, 6], 13);
    let rows = x.reshape((2, 2, 36)).unwrap().pad_with_zeros(2, 2, 1).unwrap();
    let conv = rows.conv1d(&w, 0, 1, 2, 1).unwrap();
    assert_eq!(conv.dims(), [2, 2, 31]);
    let expected = conv.reshape((2, 62)).unwrap().matmul(&b).unwrap();
    assert_scores_then_gradient(model, &x, &expected);
}

/// Reflect and edge padding (TResNet's anti-aliasing, image-to-image nets): values against
/// candle's index selection, gradients (each copied pixel's sent back to its source)
/// against finite differences. A reflection as wide as the map is refused at load.
#[test]
fn reflect_and_edge_pads_match_and_have_their_gradient() {
    let b = normal(&[200, 3], 14);
    let model_of = |reflect: [i64; 8]| {
        image_model(
            vec![
                node("Pad", "mirror", &["x", "reflect"], vec![string("mode", "reflect")]),
                node("Pad", "edge", &["mirror", "edges"], vec![string("mode", "edge")]),
                node("Flatten", "flat", &["edge"], vec![]),
                NodeProto {
                    output: vec!["y".into()],
                    ..node("Gemm", "fc", &["flat", "B"], vec![])
                },
            ],
            vec![
                int64s("reflect", &reflect),
                int64s("edges", &[0, 0, 1, 0, 0, 0, 0, 1]),
                tensor("B", &[200, 3], &b),
            ],
            13,
        )
    };
    // Rows: 2 above, 1 below; columns: 1 left, 2 right.
    let bytes = model_of([0, 0, 2, 1, 0, 0, 1, 2]);
    let model = formats::onnx::from_bytes(&bytes, Path::new("pads.onnx")).unwrap();
    let x = normal(&[2, 2, 6, 6], 15);
    let pick = |t: &Tensor, axis: usize, from: &[u32]| {
        let index = Tensor::new(from, &Device::Cpu).unwrap();
        t.index_select(&index, axis).unwrap()
    };
    let mirrored =
        pick(&pick(&x, 2, &[2, 1, 0, 1, 2, 3, 4, 5, 4]), 3, &[1, 0, 1, 2, 3, 4, 5, 4, 3]);
    let edged = pick(
        &pick(&mirrored, 2, &[0, 0, 1, 2, 3, 4, 5, 6, 7, 8]),
        3,
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 8],
    );
    let expected = edged.reshape((2, 200)).unwrap().matmul(&b).unwrap();
    assert_scores_then_gradient(model, &x, &expected);
    let too_wide = model_of([0, 0, 6, 0, 0, 0, 0, 0]);
    let error = formats::onnx::from_bytes(&too_wide, Path::new("pads.onnx")).err().unwrap();
    assert!(error.to_string().contains("reflecting 6×6"), "{error}");
}

#[test]
fn a_constant_read_before_an_if_and_inside_its_branch_survives_until_the_branch() {
    // Constants no node will read again are dropped during the import; the count of reads
    // must include the If's branches, or `k` would be gone once the Mul has read it.
    let x = normal(&[1, 2, 6, 6], 12);
    let k = Tensor::new(&[1.5f32], &Device::Cpu).unwrap();
    let condition = TensorProto {
        name: "c".into(),
        data_type: 9,
        raw_data: vec![1u8].into(),
        ..Default::default()
    };
    let branch = |name: &str, op: &str| AttributeProto {
        name: name.into(),
        r#type: 5,
        g: Some(Box::new(GraphProto {
            node: vec![node(op, "picked", &["scaled", "k"], vec![])],
            output: vec![value_info("picked", &[])],
            ..Default::default()
        })),
        ..Default::default()
    };
    let bytes = image_model(
        vec![
            node("Mul", "scaled", &["x", "k"], vec![]),
            NodeProto {
                attribute: vec![branch("then_branch", "Add"), branch("else_branch", "Sub")],
                ..node("If", "branched", &["c"], vec![])
            },
            NodeProto { output: vec!["y".into()], ..node("Flatten", "y", &["branched"], vec![]) },
        ],
        vec![tensor("k", &[1], &k), condition],
        17,
    );
    let model = formats::onnx::from_bytes(&bytes, Path::new("if.onnx")).unwrap();
    let got = output_values(&model, &x);
    let expected: Vec<f64> = values(&x).iter().map(|&v| v * 1.5 + 1.5).collect();
    assert_within(&got, &expected, 1e-6, "output");
}

#[test]
fn a_constant_resized_to_its_own_size_is_the_constant_and_shrunk_antialiased_an_error() {
    // CLIP ResNets' attention pool resizes its position table (antialiased bicubic) to the
    // size it already has.
    let x = normal(&[1, 2, 6, 6], 13);
    let table = normal(&[1, 2, 6, 6], 14);
    let resize = |sizes: &[i64]| {
        let attrs = vec![
            string("mode", "cubic"),
            int("antialias", 1),
            int("exclude_outside", 1),
            AttributeProto {
                name: "cubic_coeff_a".into(),
                f: -0.5,
                r#type: 1,
                ..Default::default()
            },
        ];
        image_model(
            vec![
                node("Resize", "resized", &["table", "", "", "sizes"], attrs),
                NodeProto {
                    output: vec!["y".into()],
                    ..node("Add", "y", &["x", "resized"], vec![])
                },
            ],
            vec![tensor("table", &[1, 2, 6, 6], &table), int64s("sizes", sizes)],
            18,
        )
    };
    let model = formats::onnx::from_bytes(&resize(&[1, 2, 6, 6]), Path::new("table.onnx")).unwrap();
    let got = output_values(&model, &x);
    let expected: Vec<f64> = values(&x).iter().zip(values(&table)).map(|(a, b)| a + b).collect();
    assert_within(&got, &expected, 1e-6, "output");
    let error = formats::onnx::from_bytes(&resize(&[1, 2, 3, 3]), Path::new("table.onnx")).err();
    let error = error.expect("an antialiased shrink must be refused").to_string();
    assert!(error.contains("antialiased resizing"), "{error}");
}

/// A model adding to `x` (`[N, 2, 6, 6]`) a `[1, 2, side, side]` table resized to 6×6
/// with the Resize attributes `attrs`, its target given by `sizes` or else by `scales`.
fn resized_table_model(table: &Tensor, attrs: Vec<AttributeProto>, by_sizes: bool) -> Model {
    let side = table.dim(3).unwrap();
    let scale = 6.0 / side as f32;
    let (inputs, target) = match by_sizes {
        true => (["table", "", "", "target"], int64s("target", &[1, 2, 6, 6])),
        false => (["table", "", "target", ""], floats("target", &[1.0, 1.0, scale, scale])),
    };
    let bytes = image_model(
        vec![
            node("Resize", "resized", &inputs, attrs),
            NodeProto { output: vec!["y".into()], ..node("Add", "y", &["x", "resized"], vec![]) },
        ],
        vec![tensor("table", &[1, 2, side, side], table), target],
        18,
    );
    formats::onnx::from_bytes(&bytes, Path::new("table.onnx")).unwrap()
}

#[test]
fn a_constant_resized_to_another_size_is_folded_as_the_resize_of_a_map_computes_it() {
    // Hiera's position table, resized by the legacy exporter for the input size.
    let table = normal(&[1, 2, 3, 3], 15);
    let zeros = Tensor::zeros((1, 2, 6, 6), DType::F32, &Device::Cpu).unwrap();
    // Bilinear with half-pixel centres, by hand: 3 → 6 samples at −¼, ¼, ¾, …, 2¼, clamped.
    let along = |v: [f64; 3]| {
        [v[0], 0.75 * v[0] + 0.25 * v[1], 0.25 * v[0] + 0.75 * v[1]]
            .into_iter()
            .chain([0.75 * v[1] + 0.25 * v[2], 0.25 * v[1] + 0.75 * v[2], v[2]])
            .collect::<Vec<f64>>()
    };
    let t = values(&table);
    let mut expected = Vec::new();
    for map in t.chunks_exact(9) {
        let rows: Vec<Vec<f64>> = map.chunks_exact(3).map(|r| along([r[0], r[1], r[2]])).collect();
        for i in 0..6 {
            let column: Vec<f64> =
                (0..6).map(|j| along([rows[0][j], rows[1][j], rows[2][j]])[i]).collect();
            expected.extend(column);
        }
    }
    for by_sizes in [true, false] {
        let model = resized_table_model(&table, vec![string("mode", "linear")], by_sizes);
        assert_within(&output_values(&model, &zeros), &expected, 1e-6, "bilinear");
    }
    // Bicubic as PyTorch exports it, against the runtime resize of the table as an input
    // (5×5: a 3×3 input would read as channels-last).
    let table = normal(&[1, 2, 5, 5], 16);
    let cubic = || {
        vec![
            string("mode", "cubic"),
            string("coordinate_transformation_mode", "pytorch_half_pixel"),
        ]
    };
    let folded = output_values(&resized_table_model(&table, cubic(), true), &zeros);
    let graph = GraphProto {
        node: vec![NodeProto {
            output: vec!["y".into()],
            ..node("Resize", "y", &["x", "", "", "target"], cubic())
        }],
        initializer: vec![int64s("target", &[1, 2, 6, 6])],
        input: vec![value_info("x", &[None, Some(2), Some(5), Some(5)])],
        output: vec![value_info("y", &[])],
        ..Default::default()
    };
    let mut file = onnx_model(graph);
    file.opset_import[0].version = 18;
    let computed = formats::onnx::from_bytes(&file.encode_to_vec(), Path::new("m.onnx")).unwrap();
    assert_within(&folded, &output_values(&computed, &table), 1e-6, "bicubic");
    assert!(folded.iter().zip(values(&table)).any(|(a, b)| (a - b).abs() > 1e-3));
    // A size past what folding holds is an error, not an allocation.
    let huge = image_model(
        vec![
            node("Resize", "resized", &["table", "", "", "target"], vec![string("mode", "linear")]),
            NodeProto { output: vec!["y".into()], ..node("Add", "y", &["x", "resized"], vec![]) },
        ],
        vec![tensor("table", &[1, 2, 5, 5], &table), int64s("target", &[1, 2, 1 << 40, 6])],
        18,
    );
    let error = formats::onnx::from_bytes(&huge, Path::new("huge.onnx")).unwrap_err();
    assert!(error.to_string().contains("too large to fold"), "{error}");
}

#[test]
fn a_gemm_of_constants_is_folded_with_its_transposes_scales_and_bias() {
    // SwinV2-CR's meta network runs Linear layers over a constant table of relative
    // coordinates: `0.5 · Aᵀ · Bᵀ + 2 · c`, `[2, 36]`, added to the input as `[2, 6, 6]`.
    let a = normal(&[4, 2], 18);
    let b = normal(&[36, 4], 19);
    let c = normal(&[36], 20);
    let attrs = vec![
        int("transA", 1),
        int("transB", 1),
        AttributeProto { name: "alpha".into(), f: 0.5, r#type: 1, ..Default::default() },
        AttributeProto { name: "beta".into(), f: 2.0, r#type: 1, ..Default::default() },
    ];
    let bytes = image_model(
        vec![
            node("Gemm", "table", &["a", "b", "c"], attrs),
            node("Reshape", "shaped", &["table", "shape"], vec![]),
            NodeProto { output: vec!["y".into()], ..node("Add", "y", &["x", "shaped"], vec![]) },
        ],
        vec![
            tensor("a", &[4, 2], &a),
            tensor("b", &[36, 4], &b),
            tensor("c", &[36], &c),
            int64s("shape", &[1, 2, 6, 6]),
        ],
        17,
    );
    let model = formats::onnx::from_bytes(&bytes, Path::new("gemm.onnx")).unwrap();
    let (a, b, c) = (values(&a), values(&b), values(&c));
    let expected: Vec<f64> = (0..2)
        .flat_map(|i| {
            let (a, b, c) = (&a, &b, &c);
            (0..36).map(move |j| {
                0.5 * (0..4).map(|k| a[k * 2 + i] * b[j * 4 + k]).sum::<f64>() + 2.0 * c[j]
            })
        })
        .collect();
    let zeros = Tensor::zeros((1, 2, 6, 6), DType::F32, &Device::Cpu).unwrap();
    assert_within(&output_values(&model, &zeros), &expected, 1e-5, "folded Gemm");
}

#[test]
fn size_counts_the_elements_as_a_multiple_of_the_batch_size() {
    // `[N, 2, 6, 6]` reshaped to `[Size / 72, 72]` (Hiera's window arithmetic).
    let bytes = image_model(
        vec![
            node("Size", "count", &["x"], vec![]),
            node("Div", "rows", &["count", "per_row"], vec![]),
            node("Unsqueeze", "rows1", &["rows", "axis0"], vec![]),
            node("Concat", "target", &["rows1", "width"], vec![int("axis", 0)]),
            NodeProto {
                output: vec!["y".into()],
                ..node("Reshape", "y", &["x", "target"], vec![])
            },
        ],
        vec![int64("per_row", 72), int64s("axis0", &[0]), int64s("width", &[72])],
        17,
    );
    let model = formats::onnx::from_bytes(&bytes, Path::new("size.onnx")).unwrap();
    let x = normal(&[2, 2, 6, 6], 16);
    let out = model.forward(&x).unwrap();
    let got = out.node(model.file_output()).unwrap();
    assert_eq!(got.dims(), &[2, 72]);
    assert_eq!(values(got), values(&x));
    // A constant's size is a constant.
    let bytes = image_model(
        vec![
            node("Size", "count", &["table"], vec![]),
            node("Cast", "scale", &["count"], vec![int("to", 1)]),
            NodeProto { output: vec!["y".into()], ..node("Mul", "y", &["x", "scale"], vec![]) },
        ],
        vec![floats("table", &[0.0; 6])],
        17,
    );
    let model = formats::onnx::from_bytes(&bytes, Path::new("m.onnx"));
    let x = normal(&[1, 2, 6, 6], 17);
    let expected: Vec<f64> = values(&x).iter().map(|v| v * 6.0).collect();
    assert_within(&output_values(&model.unwrap(), &x), &expected, 1e-5, "scaled by a size");
}

#[test]
fn a_model_quantized_by_onnx_runtime_matches_its_qdq_graph() {
    // quantize_static's QDQ form: int8 weights per channel folded at load, each activation
    // rounded to its uint8 grid and clamped (the ReLUs live on in those clamps).
    let model = import("quantized.onnx");
    let fake_quants = model
        .graph()
        .nodes()
        .iter()
        .filter(|n| matches!(n.op.activation(), Activation::FakeQuant { .. }))
        .count();
    // Input, three convs, the sum, the pool, the flatten, the logits; not the probabilities.
    assert_eq!(fake_quants, 8);
    assert!(model.notes.iter().any(|n| n.contains("rounds its output probabilities")));
    check_outputs(&model, "quantized", &npy_tensor("quantized.input.npy"));
}

#[test]
fn a_model_of_a_flat_vector_of_k_squared_values_reads_a_k_by_k_image() {
    // A multilayer perceptron on flattened 4×4 images: its input is 16 values, fed row by
    // row from a grey image, or 48 from a colour one, flattened as the exporter's framework
    // flattens images (PyTorch channel by channel, Keras through tf2onnx pixel by pixel).
    let cases = [
        (1, "pytorch", "read as a 4×4 grey image, row by row"),
        (3, "pytorch", "read as a 4×4 RGB image, channel by channel"),
        (3, "tf2onnx", "read as a 4×4 RGB image, pixel by pixel"),
    ];
    for (channels, producer, note) in cases {
        let len = channels * 16;
        let weights = Tensor::randn(0f32, 1., (3, len), &Device::Cpu).unwrap();
        let nodes = vec![
            NodeProto {
                attribute: vec![int("transB", 1)],
                ..node("Gemm", "fc", &["x", "w"], vec![])
            },
            NodeProto { output: vec!["y".into()], ..node("Softmax", "probs", &["fc"], vec![]) },
        ];
        let model = ModelProto {
            producer_name: producer.into(),
            ..onnx_model(GraphProto {
                node: nodes,
                initializer: vec![tensor("w", &[3, len], &weights)],
                input: vec![value_info("x", &[None, Some(len as i64)])],
                output: vec![value_info("y", &[])],
                ..Default::default()
            })
        };
        let model =
            formats::onnx::from_bytes(&model.encode_to_vec(), Path::new("mlp.onnx")).unwrap();
        assert_eq!(model.input_chw().unwrap(), [channels, 4, 4]);
        assert!(model.notes.iter().any(|n| n.contains(note)), "{:?}", model.notes);
        let images = Tensor::randn(0f32, 1., (2, channels, 4, 4), &Device::Cpu).unwrap();
        let flat = match producer {
            "tf2onnx" => images.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap(),
            _ => images.clone(),
        };
        let logits = flat.reshape((2, len)).unwrap().matmul(&weights.t().unwrap()).unwrap();
        let want = convscope::engine::softmax(&logits).unwrap();
        let got = model.predict(&images).unwrap();
        let worst = values(&(got - want).unwrap()).iter().fold(0f64, |m, v| m.max(v.abs()));
        assert!(worst < 1e-6, "{producer}, {channels} channels: off by {worst}");
    }
}

/// A uint8 zero point `zp` of 3 and a scale `s` of ½: the grid `½·(q − 3)`, q in 0..=255.
fn zero_point_and_scale() -> [TensorProto; 2] {
    [
        TensorProto { name: "zp".into(), data_type: 2, int32_data: vec![3], ..Default::default() },
        TensorProto { name: "s".into(), data_type: 1, float_data: vec![0.5], ..Default::default() },
    ]
}

#[test]
fn a_zero_point_shared_through_an_identity_keeps_its_integer_type() {
    // The legacy exporter shares constants through Identity nodes; the integers' range comes
    // from the zero point's type (uint8 here: 0..=255, steps of ½ from 3).
    let [uint8, scale] = zero_point_and_scale();
    let y = |n: NodeProto| NodeProto { output: vec!["y".into()], ..n };
    let nodes = vec![
        node("Identity", "zero", &["zp"], vec![]),
        node("QuantizeLinear", "q", &["x", "s", "zero"], vec![]),
        y(node("DequantizeLinear", "dq", &["q", "s", "zero"], vec![])),
    ];
    let model = formats::onnx::from_bytes(
        &image_model(nodes, vec![uint8, scale], 13),
        Path::new("shared.onnx"),
    )
    .unwrap();
    // Below the range, half steps either way of an even integer, far above it.
    let inputs = [-4.0f32, -1.25, 0.25, 0.75, 200.0];
    let x: Vec<f32> = (0..72).map(|i| inputs[i % inputs.len()]).collect();
    let x = Tensor::from_vec(x, (1, 2, 6, 6), &Device::Cpu).unwrap();
    let out = model.forward(&x).unwrap();
    let got = values(out.node(model.file_output()).unwrap());
    let by_hand = [-1.5, -1.0, 0.0, 1.0, 126.0];
    for (i, g) in got.iter().enumerate() {
        assert_eq!(*g, by_hand[i % by_hand.len()], "at {}", inputs[i % inputs.len()]);
    }
}

#[test]
fn integers_moved_between_their_quantize_and_dequantize_stay_on_the_grid() {
    // tf2onnx's TFLite models transpose the quantized input from NHWC between the pair: a
    // move of values on the grid. Anything that computes on the integers is still refused.
    let model = |between: NodeProto| {
        let nodes = vec![
            node("QuantizeLinear", "q", &["x", "s", "zp"], vec![]),
            between,
            NodeProto {
                output: vec!["y".into()],
                ..node("DequantizeLinear", "dq", &["moved", "s", "zp"], vec![])
            },
        ];
        let bytes = image_model(nodes, zero_point_and_scale().to_vec(), 13);
        formats::onnx::from_bytes(&bytes, Path::new("moved.onnx"))
    };
    let transposed = model(node("Transpose", "moved", &["q"], vec![ints("perm", &[0, 1, 3, 2])]));
    let transposed = transposed.unwrap();
    let x = normal(&[1, 2, 6, 6], 21).affine(3.0, 0.0).unwrap();
    let got = output_values(&transposed, &x);
    let grid = |v: f64| ((v / 0.5).round_ties_even() + 3.0).clamp(0.0, 255.0) * 0.5 - 1.5;
    let x = values(&x);
    for (i, g) in got.iter().enumerate() {
        let (plane, row, col) = (i / 36, i / 6 % 6, i % 6);
        assert_eq!(*g, grid(x[plane * 36 + col * 6 + row]), "at {i}");
    }
    let error = model(node("Relu", "moved", &["q"], vec![])).unwrap_err().to_string();
    assert!(error.contains("it reads the integers of 'q'"), "{error}");
}

#[test]
fn an_input_of_bytes_takes_pixels_as_they_are() {
    // A model with its preparation inside takes uint8 pixels (`x.float() / 255`): the file
    // says the range, nothing is assumed, and a note says so.
    let mut input = value_info("x", &[None, Some(3), Some(6), Some(6)]);
    if let Some(t) = input.r#type.as_mut().and_then(|t| t.tensor_type.as_mut()) {
        t.elem_type = 2;
    }
    let graph = GraphProto {
        node: vec![
            node("Cast", "floats", &["x"], vec![int("to", 1)]),
            NodeProto { output: vec!["y".into()], ..node("Div", "y", &["floats", "k"], vec![]) },
        ],
        initializer: vec![floats("k", &[255.0])],
        input: vec![input],
        output: vec![value_info("y", &[])],
        ..Default::default()
    };
    let model = formats::onnx::from_bytes(&onnx_model(graph).encode_to_vec(), Path::new("u8.onnx"));
    let model = model.unwrap();
    assert_eq!((model.input.range, model.input.assumed), ([0.0, 255.0], false));
    assert!(model.notes.iter().any(|n| n.contains("takes bytes (uint8)")), "{:?}", model.notes);
    let x = normal(&[1, 3, 6, 6], 22).affine(40.0, 128.0).unwrap().round().unwrap();
    let expected: Vec<f64> = values(&x).iter().map(|v| v / 255.0).collect();
    assert_within(&output_values(&model, &x), &expected, 1e-7, "x / 255");
}

#[test]
fn a_mask_of_one_sigmoid_per_pixel_reads_as_two_classes_of_its_mean_logit() {
    // A binary segmentation head: a 1×1 conv to one channel, a sigmoid at each pixel, and
    // that mask moved channels-last or not. Class 1 is σ(m) of the logits' mean m.
    let x = normal(&[2, 2, 6, 6], 21);
    let w = Tensor::new(&[0.7f32, -1.1], &Device::Cpu).unwrap().reshape((1, 2, 1, 1)).unwrap();
    let pixels: Vec<f64> = values(&x);
    let mean_logit = |n: usize| {
        let image = &pixels[n * 72..(n + 1) * 72];
        (0..36).map(|p| 0.7 * image[p] - 1.1 * image[36 + p] + 0.3).sum::<f64>() / 36.0
    };
    let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
    let expected: Vec<f64> =
        (0..2).flat_map(|n| [1.0 - sigmoid(mean_logit(n)), sigmoid(mean_logit(n))]).collect();
    for channels_last in [false, true] {
        let mut nodes = vec![
            node("Conv", "logits", &["x", "w", "b"], vec![]),
            node("Sigmoid", "mask", &["logits"], vec![]),
        ];
        if channels_last {
            nodes.push(node("Transpose", "y", &["mask"], vec![ints("perm", &[0, 2, 3, 1])]));
        } else {
            nodes.last_mut().unwrap().output = vec!["y".into()];
        }
        let b = Tensor::new(&[0.3f32], &Device::Cpu).unwrap();
        let initializer = vec![tensor("w", &[1, 2, 1, 1], &w), tensor("b", &[1], &b)];
        let bytes = image_model(nodes, initializer, 17);
        let model = convscope::formats::onnx::from_bytes(&bytes, Path::new("mask.onnx")).unwrap();
        assert_eq!(model.num_classes(), 2);
        let got = values(&model.predict(&x).unwrap());
        assert_within(&got, &expected, 1e-6, &format!("channels last {channels_last}"));
        // The file's output is still there to look at: the mask itself.
        let mask = output_values(&model, &x);
        assert_eq!(mask.len(), 72);
        assert!(mask.iter().all(|&p| p > 0.0 && p < 1.0));
        // Each pixel's class from the logits: 1 where the mask is over one half.
        let map = model.score_map().expect("the logits are a map of class scores");
        assert_eq!((model.graph().nodes()[map.node].name.as_str(), map.binary), ("logits", true));
        let logits = model.forward(&x).unwrap();
        let logits: Vec<f32> =
            values(logits.node(map.node).unwrap())[..36].iter().map(|&v| v as f32).collect();
        // One channel: channels-last is the same order.
        let expected: Vec<usize> = mask[..36].iter().map(|&p| usize::from(p > 0.5)).collect();
        assert_eq!(map.classes(&logits, 36), expected, "channels last {channels_last}");
        let model = model.to_dtype(DType::F64).unwrap();
        let one = x.narrow(0, 0, 1).unwrap().to_dtype(DType::F64).unwrap();
        assert_input_gradient_matches_finite_differences(&model, &one);
    }
}

#[test]
fn an_output_of_several_long_axes_that_is_no_map_is_said_to_be_read_number_by_number() {
    // A detector's head: per-anchor scores of two flattened maps joined along the anchors,
    // `[4, 72]`, neither class scores nor a map of them.
    let w = normal(&[4, 2, 1, 1], 22).to_dtype(DType::F32).unwrap();
    let nodes = vec![
        node("Conv", "scores", &["x", "w"], vec![]),
        node("Reshape", "anchors", &["scores", "shape"], vec![]),
        node("Concat", "y", &["anchors", "anchors"], vec![int("axis", 2)]),
    ];
    let initializer = vec![tensor("w", &[4, 2, 1, 1], &w), int64s("shape", &[0, 4, -1])];
    let bytes = image_model(nodes, initializer, 17);
    let model = convscope::formats::onnx::from_bytes(&bytes, Path::new("det.onnx")).unwrap();
    assert_eq!(model.num_classes(), 288);
    assert!(
        model.notes.iter().any(|n| n.contains("[4, 72] per image, not a vector")),
        "{:?}",
        model.notes
    );
}

#[test]
fn a_thousand_numbered_outputs_are_named_as_imagenets_classes() {
    // A classifier of `outputs` classes: a 1×1 conv to one channel a class, then their means.
    let file = |outputs: usize| {
        let w = normal(&[outputs, 2, 1, 1], 23).to_dtype(DType::F32).unwrap();
        let nodes = vec![
            node("Conv", "scores", &["x", "w"], vec![]),
            node("GlobalAveragePool", "pooled", &["scores"], vec![]),
            node("Flatten", "y", &["pooled"], vec![]),
        ];
        image_model(nodes, vec![tensor("w", &[outputs, 2, 1, 1], &w)], 17)
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.onnx");
    let model = convscope::formats::from_bytes(&file(1000), &path).unwrap();
    assert_eq!(model.classes[..3], ["tench", "goldfish", "great white shark"]);
    assert_eq!(model.classes[999], "toilet tissue");
    assert!(model.notes.iter().any(|n| n.contains("named as ImageNet-1k's")), "{:?}", model.notes);
    // TensorFlow's slim models: a background class first.
    let model = convscope::formats::from_bytes(&file(1001), &path).unwrap();
    assert_eq!(model.classes[..2], ["background", "tench"]);
    assert_eq!(model.classes[1000], "toilet tissue");
    // Another count stays numbered; a file of names beside the model comes first.
    let model = convscope::formats::from_bytes(&file(999), &path).unwrap();
    assert_eq!(model.classes[998], "998");
    let names: String = (0..1000).map(|i| format!("mine {i}\n")).collect();
    std::fs::write(dir.path().join("labels.txt"), names).unwrap();
    let model = convscope::formats::from_bytes(&file(1000), &path).unwrap();
    assert_eq!(model.classes[0], "mine 0");
    assert!(model.notes.iter().all(|n| !n.contains("ImageNet")), "{:?}", model.notes);
}
