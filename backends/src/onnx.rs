//! ONNX export of a network graph (opset 17), with its weights, for ort, tvm and `exec`.

use crate::weights::Weights;
use crate::BackendError;
use onnx_protobuf::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use spacetune_ir::{Graph, Prim, Shape};

/// The opset the exporter writes; every op it uses has had its current form since.
pub const OPSET: i64 = 17;
/// ONNX IR version 8 (ONNX 1.10+): old enough for every runtime we target.
const IR_VERSION: i64 = 8;

pub const INPUT: &str = "input";

/// The ONNX name of the graph input at node `index`: `input` for the network input (node
/// 0), `input<index>` for the extra operands of a kernel timed alone.
pub fn input_name(index: usize) -> String {
    if index == 0 {
        INPUT.to_string()
    } else {
        format!("{INPUT}{index}")
    }
}

/// The graph's inputs (every `input` node, in order) with their shapes.
pub fn inputs(graph: &Graph) -> Vec<(String, Shape)> {
    graph
        .nodes
        .iter()
        .filter(|(_, n)| n.op == Prim::Input)
        .map(|(h, _)| (input_name(h.index()), graph.shape(h)))
        .collect()
}
pub const OUTPUT: &str = "output";

/// The lowering every ONNX-consuming backend shares (ort, tvm, exec): the pruned graph with
/// seeded random weights, as ONNX bytes with their one-line-per-node text form.
pub fn lower(net: &spacetune_ir::Network, seed: u64) -> Result<crate::Lowered, BackendError> {
    let graph = net.graph.pruned();
    let weights = Weights::random(&graph, seed);
    let bytes = export(&graph, &weights, 1)?;
    Ok(crate::Lowered {
        id: net.id.clone(),
        hash: crate::network_hash(&graph, 1),
        text: summary(&bytes)?,
        graph,
        bytes,
    })
}

/// Serialises `graph` (batch `batch`, float32, NCHW) with `weights` into ONNX bytes.
/// Nodes keep their index in the names (`n7`, `n7.weight`) so profiles map back to the IR.
pub fn export(graph: &Graph, weights: &Weights, batch: u64) -> Result<Vec<u8>, BackendError> {
    let mut b = Builder {
        graph: GraphProto {
            name: "spacetune".into(),
            ..Default::default()
        },
        weights,
        batch: batch as i64,
    };
    let last = graph
        .nodes
        .len()
        .checked_sub(1)
        .ok_or_else(|| BackendError::Unsupported("cannot export an empty graph".into()))?;
    for (h, node) in graph.nodes.iter() {
        let i = h.index();
        let name = if i == last {
            OUTPUT.to_string()
        } else {
            format!("n{i}")
        };
        let inputs: Vec<String> = node
            .inputs
            .iter()
            .map(|x| match graph.nodes[*x].op {
                Prim::Input => input_name(x.index()),
                _ => format!("n{}", x.index()),
            })
            .collect();
        let out = graph.shape(h);
        b.node(i, &node.op, &inputs, &name, out)?;
    }
    for (h, node) in graph.nodes.iter() {
        if node.op == Prim::Input {
            let info = value_info(&input_name(h.index()), batch as i64, graph.shape(h));
            b.graph.input.push(info);
        }
    }
    b.graph.output.push(value_info(
        OUTPUT,
        batch as i64,
        graph.shape(spacetune_ir::Handle::new(last)),
    ));
    let model = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
            ..Default::default()
        }],
        producer_name: "spacetune".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(b.graph).into(),
        ..Default::default()
    };
    model
        .write_to_bytes()
        .map_err(|e| BackendError::Unsupported(format!("ONNX serialisation failed: {e}")))
}

struct Builder<'a> {
    graph: GraphProto,
    weights: &'a Weights,
    batch: i64,
}

impl Builder<'_> {
    fn node(
        &mut self,
        i: usize,
        op: &Prim,
        inputs: &[String],
        out: &str,
        shape: Shape,
    ) -> Result<(), BackendError> {
        let x = inputs.first().cloned().unwrap_or_default();
        let n = |s: &str| format!("n{i}.{s}");
        match *op {
            Prim::Input => {
                // The input is the graph input itself; a network that is only its input
                // still needs a node producing the output.
                if out == OUTPUT {
                    self.op("Identity", &[INPUT.into()], out, vec![]);
                }
            }
            Prim::Conv {
                k,
                stride,
                pad,
                groups,
                dilation,
                ..
            } => {
                let w = self.param(i, "weight")?;
                self.op(
                    "Conv",
                    &[x, w],
                    out,
                    vec![
                        ints("kernel_shape", &[k, k]),
                        ints("strides", &[stride, stride]),
                        ints("pads", &[pad, pad, pad, pad]),
                        ints("dilations", &[dilation, dilation]),
                        int("group", groups as i64),
                    ],
                );
            }
            Prim::BatchNorm => {
                let names = ["weight", "bias", "running_mean", "running_var"]
                    .map(|s| self.param(i, s))
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()?;
                let mut all = vec![x];
                all.extend(names);
                self.op(
                    "BatchNormalization",
                    &all,
                    out,
                    vec![float("epsilon", 1e-5)],
                );
            }
            Prim::Relu => self.op("Relu", &[x], out, vec![]),
            Prim::Relu6 => {
                let lo = self.scalar("const.zero", 0.0);
                let hi = self.scalar("const.six", 6.0);
                self.op("Clip", &[x, lo, hi], out, vec![]);
            }
            Prim::Hswish => self.op("HardSwish", &[x], out, vec![]),
            Prim::Sigmoid => self.op("Sigmoid", &[x], out, vec![]),
            Prim::Add if inputs.len() == 2 => self.op("Add", inputs, out, vec![]),
            Prim::Add => self.op("Sum", inputs, out, vec![]),
            Prim::Concat => self.op("Concat", inputs, out, vec![int("axis", 1)]),
            Prim::MaxPool { k, stride, pad } | Prim::AvgPool { k, stride, pad } => {
                let kind = if matches!(op, Prim::MaxPool { .. }) {
                    "MaxPool"
                } else {
                    "AveragePool"
                };
                // AveragePool leaves count_include_pad at its default, 0: padding is not
                // counted (NAS-Bench-201's convention; tch does the same). It cannot be
                // written out: the messages are proto3-generated, so an int 0 is dropped and
                // some readers (TVM's) reject an attribute without a value.
                let attrs = vec![
                    ints("kernel_shape", &[k, k]),
                    ints("strides", &[stride, stride]),
                    ints("pads", &[pad, pad, pad, pad]),
                ];
                self.op(kind, &[x], out, attrs);
            }
            Prim::GlobalAvgPool => self.op("GlobalAveragePool", &[x], out, vec![]),
            Prim::Linear { .. } => {
                let flat = n("flat");
                self.op("Flatten", &[x], &flat, vec![int("axis", 1)]);
                let w = self.param(i, "weight")?;
                let bias = self.param(i, "bias")?;
                let gemm = n("gemm");
                self.op("Gemm", &[flat, w, bias], &gemm, vec![int("transB", 1)]);
                // Back to N×C×1×1, the IR's shape of a flat vector, so later ops agree.
                let to = self.shape_const(&n("shape"), &[self.batch, shape.c as i64, 1, 1]);
                self.op("Reshape", &[gemm, to], out, vec![]);
            }
            Prim::ChannelShuffle { groups } => {
                let (c, h, w) = (shape.c as i64, shape.h as i64, shape.w as i64);
                let g = groups as i64;
                let split = self.shape_const(&n("split"), &[self.batch, g, c / g, h, w]);
                let merged = self.shape_const(&n("merged"), &[self.batch, c, h, w]);
                let (a, t) = (n("grouped"), n("swapped"));
                self.op("Reshape", &[x, split], &a, vec![]);
                self.op(
                    "Transpose",
                    &[a],
                    &t,
                    vec![ints_i64("perm", &[0, 2, 1, 3, 4])],
                );
                self.op("Reshape", &[t, merged], out, vec![]);
            }
            Prim::SqueezeExcite { .. } => {
                let (w1, b1) = (
                    self.param(i, "reduce.weight")?,
                    self.param(i, "reduce.bias")?,
                );
                let (w2, b2) = (
                    self.param(i, "expand.weight")?,
                    self.param(i, "expand.bias")?,
                );
                let (p, r, a, e, s) = (n("pool"), n("reduce"), n("act"), n("expand"), n("gate"));
                self.op("GlobalAveragePool", std::slice::from_ref(&x), &p, vec![]);
                self.op(
                    "Conv",
                    &[p, w1, b1],
                    &r,
                    vec![ints("kernel_shape", &[1, 1])],
                );
                self.op("Relu", &[r], &a, vec![]);
                self.op(
                    "Conv",
                    &[a, w2, b2],
                    &e,
                    vec![ints("kernel_shape", &[1, 1])],
                );
                self.op("Sigmoid", &[e], &s, vec![]);
                self.op("Mul", &[x, s], out, vec![]);
            }
            Prim::Identity => self.op("Identity", &[x], out, vec![]),
            Prim::Shift => {
                let (h, w) = (shape.h as i64, shape.w as i64);
                let starts = self.shape_const(&n("starts"), &[1, 1]);
                let ends = self.shape_const(&n("ends"), &[h, w]);
                let axes = self.shape_const(&n("axes"), &[2, 3]);
                let cropped = n("cropped");
                self.op("Slice", &[x, starts, ends, axes], &cropped, vec![]);
                // Zeros after the last row and column, back to the input's size.
                let pads = self.shape_const(&n("pads"), &[0, 0, 0, 0, 0, 0, 1, 1]);
                self.op("Pad", &[cropped, pads], out, vec![]);
            }
            Prim::Zero if inputs.is_empty() => {
                // A pruned `zero`: a constant, so nothing upstream of it is computed.
                let dims = [self.batch, shape.c as i64, shape.h as i64, shape.w as i64];
                let zeros = self.tensor(
                    &n("zeros"),
                    &dims,
                    vec![0.0; dims.iter().product::<i64>() as usize],
                );
                self.op("Identity", &[zeros], out, vec![]);
            }
            Prim::Zero => {
                let zero = self.scalar("const.zero", 0.0);
                self.op("Mul", &[x, zero], out, vec![]);
            }
        }
        Ok(())
    }

    fn op(&mut self, kind: &str, inputs: &[String], out: &str, attribute: Vec<AttributeProto>) {
        self.graph.node.push(NodeProto {
            op_type: kind.into(),
            name: out.into(),
            input: inputs.to_vec(),
            output: vec![out.into()],
            attribute,
            ..Default::default()
        });
    }

    fn param(&mut self, node: usize, suffix: &str) -> Result<String, BackendError> {
        let name = format!("n{node}.{suffix}");
        let p = self.weights.get(node, suffix).ok_or_else(|| {
            BackendError::Unsupported(format!("the weights have no parameter `{name}`"))
        })?;
        Ok(self.tensor(&name, &p.dims, p.data.clone()))
    }

    fn tensor(&mut self, name: &str, dims: &[i64], data: Vec<f32>) -> String {
        if !self.graph.initializer.iter().any(|t| t.name == name) {
            let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.graph.initializer.push(TensorProto {
                name: name.into(),
                dims: dims.to_vec(),
                data_type: DataType::FLOAT as i32,
                raw_data: raw,
                ..Default::default()
            });
        }
        name.into()
    }

    fn scalar(&mut self, name: &str, v: f32) -> String {
        self.tensor(name, &[], vec![v])
    }

    fn shape_const(&mut self, name: &str, dims: &[i64]) -> String {
        self.graph.initializer.push(TensorProto {
            name: name.into(),
            dims: vec![dims.len() as i64],
            data_type: DataType::INT64 as i32,
            int64_data: dims.to_vec(),
            ..Default::default()
        });
        name.into()
    }
}

fn value_info(name: &str, batch: i64, s: Shape) -> ValueInfoProto {
    let dim = [batch, s.c as i64, s.h as i64, s.w as i64]
        .into_iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        type_: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::FLOAT as i32,
                shape: Some(TensorShapeProto {
                    dim,
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            })),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

fn attr(name: &str, kind: AttributeType) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: kind.into(),
        ..Default::default()
    }
}
fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: v,
        ..attr(name, AttributeType::INT)
    }
}
fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: v,
        ..attr(name, AttributeType::FLOAT)
    }
}
fn ints(name: &str, v: &[u64]) -> AttributeProto {
    ints_i64(name, &v.iter().map(|&x| x as i64).collect::<Vec<_>>())
}
fn ints_i64(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: v.to_vec(),
        ..attr(name, AttributeType::INTS)
    }
}

/// One line per ONNX node (`n7 = Conv(n6, n7.weight) kernel_shape=[3,3] ...`): the text form
/// of a lowered model, for snapshots and for reading what a backend receives.
pub fn summary(bytes: &[u8]) -> Result<String, BackendError> {
    let model = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| BackendError::Unsupported(format!("not an ONNX model: {e}")))?;
    let mut out = String::new();
    for node in &model.graph.node {
        let attrs: Vec<String> = node
            .attribute
            .iter()
            .map(|a| match a.type_.enum_value() {
                Ok(AttributeType::INT) => format!("{}={}", a.name, a.i),
                Ok(AttributeType::FLOAT) => format!("{}={}", a.name, a.f),
                Ok(AttributeType::INTS) => format!("{}={:?}", a.name, a.ints),
                _ => a.name.clone(),
            })
            .collect();
        out.push_str(&format!(
            "{} = {}({}) {}\n",
            node.output.join(", "),
            node.op_type,
            node.input.join(", "),
            attrs.join(" ")
        ));
    }
    Ok(out)
}
