//! Parameters of a network, by node: seeded random ones for timing and agreement tests, or
//! trained ones handed over from tch. One layout for every backend.

use spacetune_ir::{Graph, Prim, Region};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One parameter tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub dims: Vec<i64>,
    pub data: Vec<f32>,
}

/// Every parameter of a graph, named `n<node>.<what>` (`n3.weight`, `n4.running_var`,
/// `n9.reduce.bias` for squeeze-excite). Node indices are those of the graph the weights
/// were made for — backends lower the pruned graph, so weights are made for that one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    pub params: BTreeMap<String, Param>,
}

/// The parameters a primitive needs, with their shapes: (suffix, dims, fan-in or 0 for
/// batch-norm statistics).
pub fn param_specs(op: &Prim, cin: u64) -> Vec<(&'static str, Vec<i64>, Init)> {
    let i = |x: u64| x as i64;
    match *op {
        Prim::Conv { out, k, groups, .. } => {
            let fan_in = cin / groups * k * k;
            vec![(
                "weight",
                vec![i(out), i(cin / groups), i(k), i(k)],
                Init::He(fan_in),
            )]
        }
        Prim::BatchNorm => vec![
            ("weight", vec![i(cin)], Init::Around(1.0, 0.2)),
            ("bias", vec![i(cin)], Init::Around(0.0, 0.1)),
            ("running_mean", vec![i(cin)], Init::Around(0.0, 0.1)),
            ("running_var", vec![i(cin)], Init::Around(1.0, 0.2)),
        ],
        Prim::Linear { out } => vec![
            ("weight", vec![i(out), i(cin)], Init::He(cin)),
            ("bias", vec![i(out)], Init::Around(0.0, 0.1)),
        ],
        Prim::SqueezeExcite { mid } => vec![
            ("reduce.weight", vec![i(mid), i(cin), 1, 1], Init::He(cin)),
            ("reduce.bias", vec![i(mid)], Init::Around(0.0, 0.1)),
            ("expand.weight", vec![i(cin), i(mid), 1, 1], Init::He(mid)),
            ("expand.bias", vec![i(cin)], Init::Around(0.0, 0.1)),
        ],
        _ => Vec::new(),
    }
}

/// How a parameter starts out.
#[derive(Clone, Copy, Debug)]
pub enum Init {
    /// Uniform with variance 2/fan-in (He), so activations keep their scale through depth.
    He(u64),
    /// Uniform in `centre ± half_width`.
    Around(f32, f32),
}

impl Weights {
    /// Seeded random parameters for every node of `graph`. The generator is spacetune's own
    /// (SplitMix64), so a seed means the same weights in every version and on every machine.
    pub fn random(graph: &Graph, seed: u64) -> Weights {
        let mut rng = Rng::new(seed ^ 0x5eed_5eed_5eed_5eed);
        let mut params = BTreeMap::new();
        for (h, node) in graph.nodes.iter() {
            let cin = input_channels(graph, node);
            for (suffix, dims, init) in param_specs(&node.op, cin) {
                let n: i64 = dims.iter().product();
                let (centre, half) = match init {
                    Init::He(fan_in) => (0.0, (6.0 / fan_in.max(1) as f32).sqrt()),
                    Init::Around(c, w) => (c, w),
                };
                let data = (0..n).map(|_| centre + half * rng.symmetric()).collect();
                params.insert(format!("n{}.{suffix}", h.index()), Param { dims, data });
            }
        }
        Weights { params }
    }

    pub fn get(&self, node: usize, suffix: &str) -> Option<&Param> {
        self.params.get(&format!("n{node}.{suffix}"))
    }
}

/// The channel count a node's parameters are shaped by: its first input's elements for
/// `linear` (it flattens), its first input's channels otherwise.
pub fn input_channels(graph: &Graph, node: &spacetune_ir::Node) -> u64 {
    let first = node.inputs.first().map(|&x| graph.shape(x));
    match (&node.op, first) {
        (Prim::Linear { .. }, Some(s)) => s.elements(),
        (_, Some(s)) => s.c,
        (_, None) => 0,
    }
}

/// `batch` seeded standard-ish inputs (uniform, unit variance) of shape `shape`, NCHW.
pub fn random_input(shape: spacetune_ir::Shape, batch: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let n = batch * shape.elements() as usize;
    (0..n).map(|_| 3f32.sqrt() * rng.symmetric()).collect()
}

/// spacetune's random numbers: SplitMix64 (Steele, Lea, Flood 2014) — tiny, fast, and fixed
/// forever, so a seed means the same weights, splits and batch order in every version.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn symmetric(&mut self) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        2.0 * unit - 1.0
    }
    /// Uniform in 0..n (n > 0), by rejection so there is no modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
    /// A uniformly random permutation of 0..n (Fisher–Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
        v
    }
}

/// Which nodes of the network being fine-tuned start afresh: those of a swapped layer, or
/// of the cell edges a swapped tied choice fills (in every cell).
#[derive(Clone, Debug, PartialEq)]
pub enum Fresh {
    Nothing,
    Region(Region),
    CellEdges(BTreeSet<u32>),
}

impl Fresh {
    fn covers(&self, region: Region, edge: Option<u32>) -> bool {
        match self {
            Fresh::Nothing => false,
            Fresh::Region(r) => *r == region,
            Fresh::CellEdges(edges) => {
                matches!(region, Region::Cell(_)) && edge.is_some_and(|e| edges.contains(&e))
            }
        }
    }
}

/// A node's place in the IR: its region, the cell edge it was built for (if any), its op
/// kind, and its position among the nodes of that kind in that region and edge. Inside a
/// cell an edge's ops are numbered on their own, so an edge that became `zero` or `skip`
/// does not shift the places of the others; and ops are numbered per kind, so an edge
/// whose input became a constant (a `zero` edge before it: relu and conv of zeros fold
/// away, its batch norm stays) still finds its batch norm's weights.
type Place = (Region, Option<u32>, &'static str, usize);

fn places(g: &Graph) -> Vec<Place> {
    let mut seen: HashMap<(Region, Option<u32>, &'static str), usize> = HashMap::new();
    g.nodes
        .iter()
        .enumerate()
        .map(|(i, (_, node))| {
            let key = (g.regions[i], g.edge(i), node.op.name());
            let k = seen.entry(key).or_default();
            *k += 1;
            (key.0, key.1, key.2, *k - 1)
        })
        .collect()
}

/// What [`transfer`] did: the parameter tensors copied and, for each, the place in `to`
/// it went to and the node of `from` it came from.
#[derive(Clone, Debug, Default)]
pub struct Transferred {
    pub tensors: usize,
    /// Parameters (elements) copied.
    pub elements: usize,
    /// Tensors outside the fresh nodes that found no counterpart (no node at the same
    /// place, another op, other shapes): they keep `to`'s initial weights.
    pub unmatched: usize,
    pub copies: Vec<(usize, usize)>,
}

/// BBSSP's fine-tuning start: weights for `to` taken from `from` (a network over the same
/// skeleton) wherever a node has the same place in the IR — region, cell edge, position —
/// and the same op with the same parameter shapes, except the nodes `fresh` covers, which
/// keep `to`'s initial weights.
pub fn transfer(
    from: &Graph,
    from_weights: &Weights,
    to: &Graph,
    to_weights: &Weights,
    fresh: &Fresh,
) -> (Weights, Transferred) {
    let from_at: HashMap<Place, usize> = places(from)
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p, i))
        .collect();
    let mut out = to_weights.clone();
    let mut done = Transferred::default();
    for ((h, node), place) in to.nodes.iter().zip(places(to)) {
        if fresh.covers(place.0, place.1) {
            continue;
        }
        let cin = input_channels(to, node);
        let specs = param_specs(&node.op, cin);
        let source = from_at
            .get(&place)
            .copied()
            .filter(|&j| from.nodes[spacetune_ir::Handle::new(j)].op == node.op);
        let Some(j) = source else {
            done.unmatched += specs.len();
            continue;
        };
        for (suffix, dims, _) in specs {
            let Some(p) = from_weights.get(j, suffix).filter(|p| p.dims == dims) else {
                done.unmatched += 1;
                continue;
            };
            out.params
                .insert(format!("n{}.{suffix}", h.index()), p.clone());
            done.tensors += 1;
            done.elements += p.dims.iter().product::<i64>() as usize;
            done.copies.push((h.index(), j));
        }
    }
    (out, done)
}
