//! Importing deep models: an ONNX chain of conv + ReLU layers, 1,000 and 10,000 deep, to hold
//! import to linear time; and loading a wide one from its file, a VGG-style classifier of
//! 84 MB (mapped, each weight copied once, a Gemm's B transposed in that copy)
//! (`cargo bench --bench import`).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;

use convscope::formats::onnx::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto, attribute_type, data_type,
};
use criterion::{Criterion, criterion_group, criterion_main};
use prost::Message;

/// An ONNX model of `layers` 3×3 same-padded one-channel convolutions, each with a ReLU.
fn chain(layers: usize) -> Vec<u8> {
    let mut graph = GraphProto::default();
    let dims = |d: &[i64]| TypeProto {
        tensor_type: Some(TensorTypeProto {
            elem_type: data_type::FLOAT,
            shape: Some(TensorShapeProto {
                dim: d
                    .iter()
                    .map(|&v| Dimension { dim_value: Some(v), ..Default::default() })
                    .collect(),
            }),
        }),
    };
    graph.input.push(ValueInfoProto { name: "x".into(), r#type: Some(dims(&[1, 1, 16, 16])) });
    let mut last = "x".to_string();
    for i in 0..layers {
        let (w, conv, relu) = (format!("w{i}"), format!("conv{i}"), format!("relu{i}"));
        graph.initializer.push(TensorProto {
            name: w.clone(),
            dims: vec![1, 1, 3, 3],
            data_type: data_type::FLOAT,
            raw_data: [0.1f32; 9].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        let pads = AttributeProto {
            name: "pads".into(),
            r#type: attribute_type::INTS,
            ints: vec![1; 4],
            ..Default::default()
        };
        let node = |op: &str, inputs: Vec<String>, output: &str, attribute| NodeProto {
            op_type: op.into(),
            name: output.into(),
            input: inputs,
            output: vec![output.into()],
            attribute,
            ..Default::default()
        };
        graph.node.push(node("Conv", vec![last.clone(), w], &conv, vec![pads]));
        graph.node.push(node("Relu", vec![conv], &relu, vec![]));
        last = relu;
    }
    graph.output.push(ValueInfoProto { name: last, r#type: Some(dims(&[1, 1, 16, 16])) });
    encode(graph)
}

/// An ONNX model of a vector input through two `Gemm`s (PyTorch's `Linear`, B transposed):
/// 4,096 → 4,096 → 1,000, 84 MB of weights.
fn classifier() -> Vec<u8> {
    let vector = |n: i64| TypeProto {
        tensor_type: Some(TensorTypeProto {
            elem_type: data_type::FLOAT,
            shape: Some(TensorShapeProto {
                dim: [1, n]
                    .iter()
                    .map(|&v| Dimension { dim_value: Some(v), ..Default::default() })
                    .collect(),
            }),
        }),
    };
    let mut graph = GraphProto::default();
    graph.input.push(ValueInfoProto { name: "x".into(), r#type: Some(vector(4096)) });
    let mut last = "x".to_string();
    for (i, (inputs, units)) in [(4096usize, 4096usize), (4096, 1000)].into_iter().enumerate() {
        let (w, out) = (format!("w{i}"), format!("fc{i}"));
        let values = (0..inputs * units).map(|j| (j % 7) as f32 * 0.01);
        graph.initializer.push(TensorProto {
            name: w.clone(),
            dims: vec![units as i64, inputs as i64],
            data_type: data_type::FLOAT,
            raw_data: values.flat_map(f32::to_le_bytes).collect(),
            ..Default::default()
        });
        let trans_b = AttributeProto {
            name: "transB".into(),
            r#type: attribute_type::INT,
            i: 1,
            ..Default::default()
        };
        graph.node.push(NodeProto {
            op_type: "Gemm".into(),
            name: out.clone(),
            input: vec![last, w],
            output: vec![out.clone()],
            attribute: vec![trans_b],
            ..Default::default()
        });
        last = out;
    }
    graph.output.push(ValueInfoProto { name: last, r#type: Some(vector(1000)) });
    encode(graph)
}

/// An opset-17 file holding `graph`.
fn encode(graph: GraphProto) -> Vec<u8> {
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(graph),
        ..Default::default()
    };
    model.encode_to_vec()
}

fn import(c: &mut Criterion) {
    let mut group = c.benchmark_group("import ONNX chain");
    group.sample_size(10);
    for layers in [1_000, 10_000] {
        let bytes = chain(layers);
        group.bench_function(format!("{layers} conv+relu layers"), |b| {
            b.iter(|| {
                convscope::formats::onnx::from_bytes(black_box(&bytes), Path::new("chain.onnx"))
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn load(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("classifier.onnx");
    std::fs::write(&path, classifier()).unwrap();
    let mut group = c.benchmark_group("load ONNX file");
    group.sample_size(10);
    group.bench_function("classifier 4096-4096-1000 (84 MB)", |b| {
        b.iter(|| convscope::formats::load(black_box(&path)).unwrap())
    });
    group.bench_function("read the same file", |b| {
        b.iter(|| std::fs::read(black_box(&path)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, import, load);
criterion_main!(benches);
