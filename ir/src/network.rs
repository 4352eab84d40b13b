//! The concrete layer of the IR: primitive ops, shapes, and networks as DAGs of primitives.

use crate::arena::{Arena, Handle};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A feature-map shape, channels × height × width (batch is not part of it). A flat vector
/// (after `linear`) is `n×1×1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Shape {
    pub c: u64,
    pub h: u64,
    pub w: u64,
}

impl Shape {
    pub fn new(c: u64, h: u64, w: u64) -> Self {
        Shape { c, h, w }
    }
    pub fn elements(self) -> u64 {
        self.c.saturating_mul(self.h).saturating_mul(self.w)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.c, self.h, self.w)
    }
}

/// Largest channel count, spatial size or kernel the IR accepts; keeps every cost product
/// far from overflow and turns absurd inputs into diagnostics instead of huge allocations.
pub const MAX_DIM: u64 = 1 << 20;

/// A primitive op with every parameter resolved.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Prim {
    /// The network input.
    Input,
    Conv {
        out: u64,
        k: u64,
        stride: u64,
        pad: u64,
        groups: u64,
        dilation: u64,
    },
    BatchNorm,
    Relu,
    Relu6,
    Hswish,
    Sigmoid,
    Add,
    Concat,
    MaxPool {
        k: u64,
        stride: u64,
        pad: u64,
    },
    AvgPool {
        k: u64,
        stride: u64,
        pad: u64,
    },
    GlobalAvgPool,
    /// Flattens its input, then a fully connected layer with bias.
    Linear {
        out: u64,
    },
    ChannelShuffle {
        groups: u64,
    },
    /// Squeeze-excite: global pool, 1×1 conv to `mid` (ReLU), 1×1 conv back (sigmoid), scale.
    SqueezeExcite {
        mid: u64,
    },
    Identity,
    /// The input moved one pixel up and to the left, its last row and column zero: DARTS's
    /// factorised reduction reads `x[:, :, 1:, 1:]` in its second branch, and a stride-2
    /// 1×1 conv after the shift sees the odd pixels the first branch skips.
    Shift,
    /// Outputs zeros of its input's shape (NAS-Bench-201's `none`).
    Zero,
}

impl Prim {
    pub fn name(&self) -> &'static str {
        match self {
            Prim::Input => "input",
            Prim::Conv { .. } => "conv",
            Prim::BatchNorm => "bn",
            Prim::Relu => "relu",
            Prim::Relu6 => "relu6",
            Prim::Hswish => "hswish",
            Prim::Sigmoid => "sigmoid",
            Prim::Add => "add",
            Prim::Concat => "concat",
            Prim::MaxPool { .. } => "maxpool",
            Prim::AvgPool { .. } => "avgpool",
            Prim::GlobalAvgPool => "gap",
            Prim::Linear { .. } => "linear",
            Prim::ChannelShuffle { .. } => "shuffle",
            Prim::SqueezeExcite { .. } => "se",
            Prim::Identity => "skip",
            Prim::Shift => "shift",
            Prim::Zero => "zero",
        }
    }

    /// The output shape for these input shapes, or why there is none.
    pub fn infer(&self, inputs: &[Shape]) -> Result<Shape, String> {
        let first = *inputs
            .first()
            .ok_or_else(|| format!("`{}` has no input", self.name()))?;
        let spatial = |k: u64, stride: u64, pad: u64, dilation: u64, s: Shape| {
            let reach = dilation * (k - 1) + 1;
            let padded = s.h + 2 * pad;
            let padded_w = s.w + 2 * pad;
            if reach > padded || reach > padded_w {
                return Err(format!(
                    "a {k}x{k} window does not fit the {}x{} input (padding {pad})",
                    s.h, s.w
                ));
            }
            Ok((
                (padded - reach) / stride + 1,
                (padded_w - reach) / stride + 1,
            ))
        };
        match *self {
            Prim::Input => Ok(first),
            Prim::Conv {
                out,
                k,
                stride,
                pad,
                groups,
                dilation,
            } => {
                if first.c % groups != 0 {
                    return Err(format!(
                        "channel mismatch: {} input channels are not divisible into {groups} groups",
                        first.c
                    ));
                }
                if out % groups != 0 {
                    return Err(format!(
                        "channel mismatch: {out} output channels are not divisible into {groups} groups"
                    ));
                }
                let (h, w) = spatial(k, stride, pad, dilation, first)?;
                Ok(Shape::new(out, h, w))
            }
            Prim::MaxPool { k, stride, pad } | Prim::AvgPool { k, stride, pad } => {
                let (h, w) = spatial(k, stride, pad, 1, first)?;
                Ok(Shape::new(first.c, h, w))
            }
            Prim::BatchNorm
            | Prim::Relu
            | Prim::Relu6
            | Prim::Hswish
            | Prim::Sigmoid
            | Prim::Identity
            | Prim::Shift
            | Prim::Zero
            | Prim::SqueezeExcite { .. } => Ok(first),
            Prim::ChannelShuffle { groups } => {
                if first.c % groups != 0 {
                    Err(format!(
                        "channel mismatch: {} channels cannot be shuffled in {groups} groups",
                        first.c
                    ))
                } else {
                    Ok(first)
                }
            }
            Prim::GlobalAvgPool => Ok(Shape::new(first.c, 1, 1)),
            Prim::Linear { out } => Ok(Shape::new(out, 1, 1)),
            Prim::Add => {
                if let Some(other) = inputs.iter().find(|s| **s != first) {
                    Err(format!("cannot add tensors of shapes {first} and {other}"))
                } else {
                    Ok(first)
                }
            }
            Prim::Concat => {
                if let Some(other) = inputs.iter().find(|s| s.h != first.h || s.w != first.w) {
                    return Err(format!(
                        "cannot concatenate tensors of shapes {first} and {other}: spatial sizes differ"
                    ));
                }
                let c = inputs.iter().map(|s| s.c).sum();
                Ok(Shape::new(c, first.h, first.w))
            }
        }
    }

    /// Multiply-accumulates for one inference.
    pub fn macs(&self, inputs: &[Shape], out: Shape) -> u64 {
        let cin = inputs.first().map_or(0, |s| s.c);
        match *self {
            Prim::Conv { k, groups, .. } => out
                .elements()
                .saturating_mul((cin / groups).saturating_mul(k * k)),
            Prim::Linear { out: n } => inputs.first().map_or(0, |s| s.elements()).saturating_mul(n),
            Prim::SqueezeExcite { mid } => 2 * cin * mid,
            _ => 0,
        }
    }

    /// Floating-point operations: two per multiply-accumulate, one per output element for
    /// element-wise ops, normalisation and pooling windows.
    pub fn flops(&self, inputs: &[Shape], out: Shape) -> u64 {
        let macs = self.macs(inputs, out);
        let elementwise = match *self {
            Prim::Input
            | Prim::Identity
            | Prim::Shift
            | Prim::Zero
            | Prim::ChannelShuffle { .. }
            | Prim::Concat => 0,
            Prim::Conv { .. } | Prim::Linear { .. } => 0,
            Prim::MaxPool { k, .. } | Prim::AvgPool { k, .. } => {
                out.elements().saturating_mul(k * k)
            }
            Prim::GlobalAvgPool => inputs.first().map_or(0, |s| s.elements()),
            Prim::Add => out
                .elements()
                .saturating_mul(inputs.len().max(1) as u64 - 1),
            Prim::SqueezeExcite { .. } => 2 * out.elements(),
            _ => out.elements(),
        };
        macs.saturating_mul(2).saturating_add(elementwise)
    }

    /// Trainable parameters (convs have no bias; batch norm has a scale and a shift).
    pub fn params(&self, inputs: &[Shape]) -> u64 {
        let cin = inputs.first().map_or(0, |s| s.c);
        match *self {
            Prim::Conv { out, k, groups, .. } => {
                out.saturating_mul(cin / groups).saturating_mul(k * k)
            }
            Prim::BatchNorm => 2 * cin,
            Prim::Linear { out } => inputs
                .first()
                .map_or(0, |s| s.elements())
                .saturating_mul(out)
                .saturating_add(out),
            Prim::SqueezeExcite { mid } => 2 * cin * mid + mid + cin,
            _ => 0,
        }
    }
}

impl fmt::Display for Prim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Prim::Conv {
                out,
                k,
                stride,
                pad,
                groups,
                dilation,
            } => {
                write!(f, "conv(out={out}, k={k}, stride={stride}, pad={pad}")?;
                if groups != 1 {
                    write!(f, ", groups={groups}")?;
                }
                if dilation != 1 {
                    write!(f, ", dilation={dilation}")?;
                }
                write!(f, ")")
            }
            Prim::MaxPool { k, stride, pad } | Prim::AvgPool { k, stride, pad } => {
                write!(f, "{}(k={k}, stride={stride}, pad={pad})", self.name())
            }
            Prim::Linear { out } => write!(f, "linear(out={out})"),
            Prim::ChannelShuffle { groups } => write!(f, "shuffle(groups={groups})"),
            Prim::SqueezeExcite { mid } => write!(f, "se(mid={mid})"),
            ref other => write!(f, "{}", other.name()),
        }
    }
}

/// Which part of the skeleton a node belongs to; latency tables are built per region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "index", rename_all = "snake_case")]
pub enum Region {
    /// The network input node.
    Input,
    /// The n-th fixed part of the skeleton (stem, reductions, head).
    Fixed(u32),
    /// Searchable layer n.
    Layer(u32),
    /// Cell instance n.
    Cell(u32),
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Region::Input => write!(f, "input"),
            Region::Fixed(i) => write!(f, "fixed{i}"),
            Region::Layer(i) => write!(f, "layer{i}"),
            Region::Cell(i) => write!(f, "cell{i}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub op: Prim,
    pub inputs: Vec<Handle<Node>>,
}

impl Node {
    /// A constant: a `zero` that [`Graph::pruned`] has cut from its input (a `none` edge).
    pub fn is_constant(&self) -> bool {
        self.op == Prim::Zero && self.inputs.is_empty()
    }
}

/// A concrete network: nodes in topological order (inputs before users), the last node is
/// the output. The span of the op call that produced a node is kept in the arena; shapes and
/// regions are side tables indexed like the nodes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Graph {
    pub nodes: Arena<Node>,
    pub shapes: Vec<Shape>,
    pub regions: Vec<Region>,
    /// The cell edge each node was built for (the index of its `Handle<Edge>`), indexed
    /// like the nodes; empty where the graph was not elaborated from cells (probes,
    /// kernels). Not part of what a backend runs (nor of the content hash): it lets weights
    /// move between networks by their place in the IR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<Option<u32>>,
}

/// Totals of a graph's costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    pub flops: u64,
    pub macs: u64,
    pub params: u64,
}

impl Graph {
    /// The cell edge node `i` was built for, if any.
    pub fn edge(&self, i: usize) -> Option<u32> {
        self.edges.get(i).copied().flatten()
    }
    pub fn output(&self) -> Option<Handle<Node>> {
        self.nodes.len().checked_sub(1).map(Handle::new)
    }
    pub fn shape(&self, node: Handle<Node>) -> Shape {
        self.shapes[node.index()]
    }
    pub fn input_shapes(&self, node: &Node) -> Vec<Shape> {
        node.inputs.iter().map(|&h| self.shape(h)).collect()
    }
    pub fn cost(&self) -> Cost {
        let mut total = Cost::default();
        for (h, node) in self.nodes.iter() {
            let inputs = self.input_shapes(node);
            let out = self.shape(h);
            total.flops = total.flops.saturating_add(node.op.flops(&inputs, out));
            total.macs = total.macs.saturating_add(node.op.macs(&inputs, out));
            total.params = total.params.saturating_add(node.op.params(&inputs));
        }
        total
    }
}

impl Graph {
    /// The graph a backend actually runs: `zero` nodes lose their inputs (they are constants),
    /// ops that keep zeros zero (convs without bias, activations with f(0) = 0, pools,
    /// shuffles) become constant zeros when they read one, additions drop their zero terms,
    /// `skip` nodes are bypassed, and nodes that no longer reach the output are removed.
    /// Batch norm and linear layers (a shift, a bias) stop the propagation. Shapes and regions follow the nodes that stay.
    ///
    /// NB201-style cells need this: a `none` edge makes a whole sub-graph dead, and a backend
    /// timing the unpruned graph would charge for work no compiler would keep.
    pub fn pruned(&self) -> Graph {
        let n = self.nodes.len();
        // What each node stands for after simplification (itself, or the node it forwards to).
        let mut alias: Vec<usize> = (0..n).collect();
        let mut ops: Vec<Node> = Vec::with_capacity(n);
        for (h, node) in self.nodes.iter() {
            let i = h.index();
            let inputs: Vec<usize> = node.inputs.iter().map(|x| alias[x.index()]).collect();
            let is_zero = |j: usize| ops[j].op == Prim::Zero;
            let mut op = node.op.clone();
            let mut kept: Vec<usize> = inputs.clone();
            // Ops that map zeros to zeros (no bias, no shift) on a constant-zero input are
            // constant zeros themselves: a `none` edge silences what only reads it.
            let zero_in = !inputs.is_empty() && inputs.iter().all(|&j| is_zero(j));
            let keeps_zero = matches!(
                node.op,
                Prim::Relu
                    | Prim::Relu6
                    | Prim::Hswish
                    | Prim::Conv { .. }
                    | Prim::MaxPool { .. }
                    | Prim::AvgPool { .. }
                    | Prim::GlobalAvgPool
                    | Prim::ChannelShuffle { .. }
                    | Prim::Shift
                    | Prim::SqueezeExcite { .. }
                    | Prim::Concat
            );
            match node.op {
                _ if zero_in && keeps_zero => {
                    op = Prim::Zero;
                    kept.clear();
                }
                Prim::Zero => kept.clear(),
                Prim::Identity => alias[i] = inputs[0],
                Prim::Add => {
                    kept.retain(|&j| !is_zero(j));
                    match kept.len() {
                        0 => op = Prim::Zero,
                        1 => alias[i] = kept[0],
                        _ => {}
                    }
                }
                _ => {}
            }
            ops.push(Node {
                op,
                inputs: kept.into_iter().map(Handle::new).collect(),
            });
        }
        // Walk back from the output; a forwarded node is never reached, only its target.
        let out = alias[n - 1];
        let mut live = vec![false; n];
        live[out] = true;
        for i in (0..n).rev() {
            if live[i] {
                for x in &ops[i].inputs {
                    live[x.index()] = true;
                }
            }
        }
        // The network input stays even when nothing reads it, so the signature is unchanged.
        live[0] = true;
        let mut renumber = vec![usize::MAX; n];
        let mut graph = Graph::default();
        for i in (0..n).filter(|&i| live[i]) {
            renumber[i] = graph.nodes.len();
            let node = Node {
                op: ops[i].op.clone(),
                inputs: ops[i]
                    .inputs
                    .iter()
                    .map(|x| Handle::new(renumber[x.index()]))
                    .collect(),
            };
            graph.nodes.append(node, self.nodes.span(Handle::new(i)));
            graph.shapes.push(self.shapes[i]);
            graph.regions.push(self.regions[i]);
            if !self.edges.is_empty() {
                graph.edges.push(self.edge(i));
            }
        }
        // The output must stay last: a forwarded output (a trailing skip) is moved there.
        if renumber[out] != graph.nodes.len() - 1 {
            let last = graph.nodes.len();
            graph.nodes.append(
                Node {
                    op: Prim::Identity,
                    inputs: vec![Handle::new(renumber[out])],
                },
                self.nodes.span(Handle::new(n - 1)),
            );
            graph.shapes.push(self.shapes[n - 1]);
            graph.regions.push(self.regions[n - 1]);
            if !self.edges.is_empty() {
                graph.edges.push(None);
            }
            debug_assert_eq!(last + 1, graph.nodes.len());
        }
        graph
    }
}

impl Graph {
    /// A graph holding only the network input.
    pub fn with_input(shape: Shape) -> Graph {
        let mut g = Graph::default();
        g.input(shape);
        g
    }

    /// Appends `op` reading `inputs`, inferring its shape; for graphs built by program
    /// (micro-benchmarks, fusion probes) rather than from a `.space` file.
    pub fn push(
        &mut self,
        op: Prim,
        inputs: &[Handle<Node>],
        region: Region,
    ) -> Result<Handle<Node>, String> {
        let shapes: Vec<Shape> = inputs.iter().map(|&h| self.shape(h)).collect();
        let shape = op.infer(&shapes)?;
        let h = self.nodes.append(
            Node {
                op,
                inputs: inputs.to_vec(),
            },
            crate::Span::default(),
        );
        self.shapes.push(shape);
        self.regions.push(region);
        Ok(h)
    }
}

impl Graph {
    /// The nodes for which `keep(index)` holds, as a network of their own (for timing a
    /// part of a network alone: a layer, a fixed part, one kernel). Every value they read
    /// from outside the set becomes an input of the new graph, in order of first use, so
    /// the first one is node 0. All ops get region `Fixed(0)`: what runs, not where it came
    /// from, decides the new graph's content hash, so equal parts share one measurement.
    /// `None` when no op is kept.
    pub fn extract(&self, keep: impl Fn(usize) -> bool) -> Option<Graph> {
        let mut g = Graph::default();
        let mut map: Vec<Option<Handle<Node>>> = vec![None; self.nodes.len()];
        let mut any = false;
        for (h, node) in self.nodes.iter() {
            if !keep(h.index()) || node.op == Prim::Input {
                continue;
            }
            any = true;
            let mut inputs = Vec::with_capacity(node.inputs.len());
            for &x in &node.inputs {
                let mapped = match map[x.index()] {
                    Some(m) => m,
                    None => {
                        let m = g.input(self.shape(x));
                        map[x.index()] = Some(m);
                        m
                    }
                };
                inputs.push(mapped);
            }
            let m = g.nodes.append(
                Node {
                    op: node.op.clone(),
                    inputs,
                },
                crate::Span::default(),
            );
            g.shapes.push(self.shape(h));
            g.regions.push(Region::Fixed(0));
            map[h.index()] = Some(m);
        }
        any.then_some(g)
    }
}

impl Graph {
    /// Appends another network input (a kernel timed alone may read several tensors).
    pub fn input(&mut self, shape: Shape) -> Handle<Node> {
        let h = self.nodes.append(
            Node {
                op: Prim::Input,
                inputs: Vec::new(),
            },
            crate::Span::default(),
        );
        self.shapes.push(shape);
        self.regions.push(Region::Input);
        h
    }
}
