//! Importing deep models: an ONNX chain of conv + ReLU layers, 1,000 and 10,000 deep, to hold
//! import to linear time (`cargo bench --bench import`).

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

criterion_group!(benches, import);
criterion_main!(benches);
