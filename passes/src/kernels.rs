//! The kernel model: a network as an egg term, a backend's detected fusion rules as
//! directional rewrites that build fused kernels, and extraction of the kernels the backend
//! runs — each one a small network of its own that can be timed once and reused.
//!
//! # Terms
//!
//! Node `i` of the pruned graph becomes `(op a<i> child…)`, a [`Term::Kernel`] of one op:
//! the [`Leaf`] `a<i>` names the node (its primitive and shapes live in the graph), so two
//! ops with equal shapes but their own weights stay two e-classes. Network inputs are
//! leaves `in<i>`, constant zeros `zero<i>`. A fused kernel is one e-node whose [`Chain`]
//! holds its ops (`conv+bn+relu`); its children are the ops' leaves, then the tensors it
//! reads from outside (the first op's
//! inputs, then one per `add` further down the chain). An `add` lists its operands in the
//! order the network computes them, and only the last one's kernel may take the add: a
//! kernel can add a tensor into its output only if that tensor already exists.
//!
//! # Shared values
//!
//! A value read by more than one op is wrapped once in `(share x)`, and every reader reads
//! the `share`. No rewrite matches through a `share`, so a value that other ops need is never
//! fused away into one of its readers — a compiler cannot do that without computing it twice.
//!
//! # Cost
//!
//! Extraction picks, per e-class, the e-node that needs the fewest kernels (egg's tree
//! extractor; a shared sub-term adds the same count to every alternative of a class, so the
//! choice is the same as a DAG-aware one). The *latency* of the extracted term is then
//! summed over its DAG: egg's extraction hash-conses the result, so each kernel — including
//! the producer of a residual input read by the block and by its skip — is counted once,
//! however many readers it has.

use egg::{define_language, rewrite, Extractor, Id, Language, RecExpr, Rewrite, Runner, Symbol};
pub use spacetune_ir::{FusionRules, CONSTANT};
use spacetune_ir::{Graph, Network, Node, Prim, Shape};
use std::collections::{BTreeMap, BTreeSet};

define_language! {
    /// A network as the kernel model sees it.
    pub enum Term {
        "share" = Share(Id),
        Leaf(Leaf),
        Kernel(Chain, Vec<Id>),
    }
}

/// A leaf of a term: the network node it stands for — an op (whose primitive and shapes
/// live in the graph), a network input, or a constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Leaf {
    Op(usize),
    Input(usize),
    Constant(usize),
}

impl Leaf {
    /// The network node's index.
    pub fn node(self) -> usize {
        match self {
            Leaf::Op(i) | Leaf::Input(i) | Leaf::Constant(i) => i,
        }
    }
}

impl std::fmt::Display for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leaf::Op(i) => write!(f, "a{i}"),
            Leaf::Input(i) => write!(f, "in{i}"),
            Leaf::Constant(i) => write!(f, "{CONSTANT}{i}"),
        }
    }
}

impl std::str::FromStr for Leaf {
    type Err = ();
    fn from_str(s: &str) -> Result<Leaf, ()> {
        let index = |prefix: &str| s.strip_prefix(prefix)?.parse().ok();
        index("a")
            .map(Leaf::Op)
            .or_else(|| index("in").map(Leaf::Input))
            .or_else(|| index(CONSTANT).map(Leaf::Constant))
            .ok_or(())
    }
}

/// The ops of one kernel, in the order they run: one op (`conv`) or a fused chain
/// (`conv+bn+relu`). Written joined by `+` in patterns and reports.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Chain(pub Vec<Symbol>);

impl Chain {
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// An activation run as the prologue of the kernel after it (`relu+conv+bn`).
    fn prologue(&self) -> bool {
        self.0.len() > 1 && matches!(self.0[0].as_str(), "relu" | "relu6")
    }
}

impl std::fmt::Display for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, op) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            f.write_str(op.as_str())?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Chain {
    type Err = ();
    fn from_str(s: &str) -> Result<Chain, ()> {
        let ops: Vec<Symbol> = s.split('+').map(Symbol::from).collect();
        if ops.iter().any(|o| o.as_str().is_empty()) {
            return Err(());
        }
        Ok(Chain(ops))
    }
}

/// Ops a chain can hold: one output, one input (or two for `add`). `concat` (any number of
/// inputs) and constants are never fused.
fn fusible(op: &str) -> bool {
    !matches!(op, "input" | "zero" | "concat" | "skip")
}

/// The longest chain of ops fused into one kernel the model builds.
pub const MAX_CHAIN: usize = 4;

/// The rewrites of `rules` over the op names in `ops`: every chain of up to [`MAX_CHAIN`]
/// ops that the rules build one op at a time (`conv`, then `(conv, bn)`, then
/// `(conv+bn, relu)`), with at most two `add`s.
pub fn rewrites(rules: &FusionRules, ops: &BTreeSet<String>) -> Vec<Rewrite<Term, ()>> {
    let ops: Vec<&String> = ops.iter().filter(|o| fusible(o)).collect();
    let mut chains: Vec<Vec<&str>> = ops.iter().map(|o| vec![o.as_str()]).collect();
    let mut out = Vec::new();
    let mut k = 0;
    while k < chains.len() {
        let chain = chains[k].clone();
        k += 1;
        if chain.len() >= MAX_CHAIN {
            continue;
        }
        // Rules speak of `add`; terms of `add`, `add3`, ... (an add of n tensors).
        let joined = chain.iter().map(|o| base(o)).collect::<Vec<_>>().join("+");
        for &b in &ops {
            if !rules.fuses(&joined, base(b)) {
                continue;
            }
            let adds = chain.iter().filter(|&&o| add_arity(o).is_some()).count()
                + usize::from(add_arity(b).is_some());
            if adds > 2 {
                continue;
            }
            let externals = externals(&chain);
            let attrs: Vec<String> = (0..chain.len()).map(|i| format!("?a{i}")).collect();
            let ext: Vec<String> = (0..externals).map(|i| format!("?e{i}")).collect();
            let inner = format!(
                "({} {} {})",
                chain.join("+"),
                attrs.join(" "),
                ext.join(" ")
            );
            let mut fused = chain.clone();
            fused.push(b.as_str());
            let name = fused.join("+");
            let mut searchers = Vec::new();
            if let Some(n) = add_arity(b) {
                // Terms list an add's operands in the order they are computed; only the
                // kernel that runs last can take the add, when the others exist.
                let ys: Vec<String> = (1..n).map(|i| format!("?y{i}")).collect();
                let ys = ys.join(" ");
                let result = format!("({name} {} ?b {} {ys})", attrs.join(" "), ext.join(" "));
                searchers.push((format!("({b} ?b {ys} {inner})"), result));
            } else {
                let result = format!("({name} {} ?b {})", attrs.join(" "), ext.join(" "));
                searchers.push((format!("({b} ?b {inner})"), result));
            }
            for (i, (lhs, rhs)) in searchers.into_iter().enumerate() {
                let lhs: egg::Pattern<Term> = lhs.parse().expect("generated patterns parse");
                let rhs: egg::Pattern<Term> = rhs.parse().expect("generated patterns parse");
                out.push(rewrite!(format!("{name}#{i}"); lhs => rhs));
            }
            chains.push(fused);
        }
    }
    out
}

/// Tensors a chain reads from outside: its first op's inputs, plus the other operands of
/// every later add.
fn externals(chain: &[&str]) -> usize {
    let first = add_arity(chain[0]).unwrap_or(1);
    first
        + chain[1..]
            .iter()
            .filter_map(|o| add_arity(o))
            .map(|n| n - 1)
            .sum::<usize>()
}

/// The operator of a node in terms: its op's name, except that an add of n > 2 tensors is
/// `add<n>` (`add3`), so that patterns match its number of operands.
fn term_name(node: &Node) -> String {
    match node.op {
        Prim::Add if node.inputs.len() != 2 => format!("add{}", node.inputs.len()),
        _ => node.op.name().to_string(),
    }
}

/// How many tensors an add term name adds (`None` for other ops).
fn add_arity(op: &str) -> Option<usize> {
    match op.strip_prefix("add")? {
        "" => Some(2),
        n => n.parse().ok(),
    }
}

/// The op name the fusion rules use for a term name.
fn base(op: &str) -> &str {
    if add_arity(op).is_some() {
        "add"
    } else {
        op
    }
}

/// `graph` (pruned) as a term; the root is the output node.
pub fn term(graph: &Graph) -> RecExpr<Term> {
    let mut readers = vec![0usize; graph.nodes.len()];
    for (_, n) in graph.nodes.iter() {
        for x in &n.inputs {
            readers[x.index()] += 1;
        }
    }
    let mut expr = RecExpr::default();
    // The id consumers read for each node: the node itself, its `share`, or (for skips)
    // whatever it forwards.
    let mut value: Vec<Id> = Vec::with_capacity(graph.nodes.len());
    for (h, n) in graph.nodes.iter() {
        let i = h.index();
        let id = match n.op {
            Prim::Input => expr.add(Term::Leaf(Leaf::Input(i))),
            Prim::Zero => expr.add(Term::Leaf(Leaf::Constant(i))),
            Prim::Identity => {
                value.push(value[n.inputs[0].index()]);
                continue;
            }
            ref op => {
                let mut children = vec![expr.add(Term::Leaf(Leaf::Op(i)))];
                let mut inputs: Vec<usize> = n.inputs.iter().map(|x| x.index()).collect();
                if matches!(op, Prim::Add) {
                    // Operands in the order they are computed (see `rewrites`).
                    inputs.sort_unstable();
                }
                children.extend(inputs.iter().map(|&x| value[x]));
                let op = Chain(vec![Symbol::from(term_name(n))]);
                expr.add(Term::Kernel(op, children))
            }
        };
        let read_as = if readers[i] > 1 && !matches!(n.op, Prim::Input | Prim::Zero) {
            expr.add(Term::Share(id))
        } else {
            id
        };
        value.push(read_as);
    }
    expr
}

/// One kernel the backend runs: its ops (node indices of the network, in order) and the
/// network nodes whose values it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// `conv+bn+relu`.
    pub name: String,
    pub ops: Vec<usize>,
    pub reads: Vec<usize>,
}

impl Kernel {
    /// The kernel as a network of its own: one input per tensor it reads, its ops chained
    /// as in the network, regions `Fixed(0)` (so equal kernels get equal content hashes).
    /// A constant it reads (a pruned edge's zeros) stays a constant: a backend need not
    /// fetch it like a tensor computed at run time (the sim loads nothing for it).
    pub fn graph(&self, net: &Graph) -> Graph {
        let mut g = Graph::default();
        let constant = |r: usize| is_constant(net, r);
        let inputs: Vec<_> = self
            .reads
            .iter()
            .map(|&r| {
                let x = g.input(net.shapes[r]);
                if constant(r) {
                    g.push(Prim::Zero, &[x], spacetune_ir::Region::Fixed(0))
                        .expect("zeros of any shape")
                } else {
                    x
                }
            })
            .collect();
        let mut next = inputs.iter().copied();
        let mut cur = None;
        for &op in &self.ops {
            let node = &net.nodes[spacetune_ir::Handle::<Node>::new(op)];
            let mut args: Vec<_> = cur.into_iter().collect();
            while args.len() < node.inputs.len() {
                args.push(next.next().expect("a kernel reads what its ops need"));
            }
            let h = g
                .push(node.op.clone(), &args, spacetune_ir::Region::Fixed(0))
                .expect("a kernel's ops have the network's shapes");
            cur = Some(h);
        }
        if self.reads.iter().any(|&r| constant(r)) {
            // A constant's input was only there to give it a shape.
            g = g.pruned();
        }
        g
    }
}

/// Whether network node `r` is a constant (a pruned edge's zeros).
fn is_constant(net: &Graph, r: usize) -> bool {
    net.nodes[spacetune_ir::Handle::<Node>::new(r)].is_constant()
}

/// What the kernel model makes of one network.
#[derive(Clone, Debug)]
pub struct Kernels {
    pub kernels: Vec<Kernel>,
    /// E-graph size after saturation, for reports.
    pub egraph_nodes: usize,
}

/// The kernels a backend with `rules` runs for `graph` (pruned).
pub fn kernels(graph: &Graph, rules: &FusionRules) -> Kernels {
    let start = term(graph);
    let ops: BTreeSet<String> = graph.nodes.iter().map(|(_, n)| term_name(n)).collect();
    let runner = Runner::default()
        .with_iter_limit(MAX_CHAIN + 2)
        .with_node_limit(200_000)
        .with_expr(&start)
        .run(&rewrites(rules, &ops));
    let root = runner.roots[0];
    let extractor = Extractor::new(&runner.egraph, KernelCount);
    let (_, best) = extractor.find_best(root);
    Kernels {
        kernels: read_kernels(&best, rules.folds_constants()),
        egraph_nodes: runner.egraph.total_number_of_nodes(),
    }
}

/// Extraction cost: the number of kernels. An activation fused into the kernel *after* it
/// (`relu+conv+bn`) costs a hair more than one kernel: where both groupings of
/// `conv→bn→relu→conv→bn` have two kernels, compilers run the activation as the epilogue
/// of its producer (`conv+bn+relu`, `conv+bn`), and the detector's `relu→conv` (an
/// activation's output handed over on chip) must not take it from there.
struct KernelCount;

/// The extra cost of a prologue-fused activation (far below one kernel).
const PROLOGUE: f64 = 1e-3;

impl egg::CostFunction<Term> for KernelCount {
    type Cost = f64;
    fn cost<C: FnMut(Id) -> f64>(&mut self, enode: &Term, mut costs: C) -> f64 {
        let own = match enode {
            Term::Share(_) | Term::Leaf(_) => 0.0,
            Term::Kernel(chain, _) if chain.prologue() => 1.0 + PROLOGUE,
            Term::Kernel(..) => 1.0,
        };
        enode.children().iter().fold(own, |acc, &c| acc + costs(c))
    }
}

/// The kernels of an extracted term, each once (the term is hash-consed). With `fold`, a
/// kernel that reads only constants (a `none` edge's zeros and what is computed from them
/// alone) is computed when the network is compiled: it is not a kernel the network runs,
/// and its output is a constant too.
fn read_kernels(expr: &RecExpr<Term>, fold: bool) -> Vec<Kernel> {
    let nodes = expr.as_ref();
    // The network node whose value each term node stands for, and whether it is constant.
    let mut source: Vec<usize> = Vec::with_capacity(nodes.len());
    let mut constant: Vec<bool> = Vec::with_capacity(nodes.len());
    let mut kernels = Vec::new();
    for node in nodes {
        let (chain, children) = match node {
            Term::Leaf(leaf) => {
                source.push(leaf.node());
                constant.push(matches!(leaf, Leaf::Constant(_)));
                continue;
            }
            Term::Share(c) => {
                source.push(source[usize::from(*c)]);
                constant.push(constant[usize::from(*c)]);
                continue;
            }
            Term::Kernel(chain, children) => (chain, children),
        };
        let n_ops = chain.len();
        let ops: Vec<usize> = children[..n_ops]
            .iter()
            .map(|&c| source[usize::from(c)])
            .collect();
        let reads = children[n_ops..]
            .iter()
            .map(|&c| source[usize::from(c)])
            .collect();
        source.push(*ops.last().expect("a kernel has ops"));
        let folded = fold && children[n_ops..].iter().all(|&c| constant[usize::from(c)]);
        constant.push(folded);
        if folded {
            continue;
        }
        kernels.push(Kernel {
            name: chain.to_string(),
            ops,
            reads,
        });
    }
    kernels
}

/// Consecutive kernels whose output is handed straight to the next one: `(a, b)` (indices
/// into `kernels`) where, in the order the network's nodes run, `b` starts right after `a`
/// and reads `a`'s output, and nothing else does. An accelerator keeps such an output on
/// chip (a DPU's feature buffer), a CPU finds it in cache, a layout-converting runtime
/// skips the conversion back and forth between the two; a kernel timed alone shows none of
/// this. Kernels that read a constant are left out (their pair would be folded apart).
pub fn handovers(net: &Graph, kernels: &[Kernel]) -> Vec<(usize, usize)> {
    let output = |k: &Kernel| *k.ops.last().expect("a kernel has ops");
    // A kernel starts at its first op (one that takes an add runs after the add's other
    // operands: it is the branch computed last).
    let mut order: Vec<usize> = (0..kernels.len()).collect();
    order.sort_by_key(|&k| kernels[k].ops[0]);
    let constant = |k: &Kernel| k.reads.iter().any(|&r| is_constant(net, r));
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); net.nodes.len()];
    for (h, node) in net.nodes.iter() {
        for x in &node.inputs {
            readers[x.index()].push(h.index());
        }
    }
    order
        .windows(2)
        .map(|w| (w[0], w[1]))
        .filter(|&(a, b)| {
            let (ka, kb) = (&kernels[a], &kernels[b]);
            let r = &readers[output(ka)];
            !r.is_empty() && r.iter().all(|n| kb.ops.contains(n)) && !constant(ka) && !constant(kb)
        })
        .collect()
}

/// Kernels `a` then `b` of `net` as a network of their own (`b` reading `a`'s output), to
/// time the hand-over between them.
pub fn pair_graph(net: &Graph, a: &Kernel, b: &Kernel) -> Graph {
    net.extract(|i| a.ops.contains(&i) || b.ops.contains(&i))
        .expect("a kernel has ops")
}

/// Kernel counts by name, for reports and tests (`{"conv+bn+relu": 3, "add": 1}`).
pub fn census(kernels: &[Kernel]) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for k in kernels {
        *c.entry(k.name.clone()).or_insert(0) += 1;
    }
    c
}

/// A shape-level description of a kernel, for reports.
pub fn describe(k: &Kernel, net: &Graph) -> String {
    let reads: Vec<String> = k.reads.iter().map(|&r| net.shapes[r].to_string()).collect();
    let out: Shape = net.shapes[*k.ops.last().expect("a kernel has ops")];
    format!("{}({}) -> {out}", k.name, reads.join(", "))
}

/// A hand-over of one network: the pair's key and the two kernels (indices).
type Handover = (String, usize, usize);

/// What the kernel model times for a set of networks, and how it sums the timings: every
/// distinct kernel (by content hash) once, and every distinct pair of consecutive kernels
/// that hands its output straight over, timed as a network of two.
pub struct Plan {
    pub kernels: BTreeMap<String, Graph>,
    /// Each kernel's name (`relu+conv+bn`), by key.
    pub names: BTreeMap<String, String>,
    pub pairs: BTreeMap<String, Graph>,
    /// Per network: its kernels' keys, and its hand-overs (pair key, kernel a, kernel b).
    per_net: Vec<(Vec<String>, Vec<Handover>)>,
}

impl Plan {
    /// The plan for the pruned `graphs` on a backend with `rules`.
    pub fn new(graphs: impl Iterator<Item = Graph>, rules: &FusionRules) -> Plan {
        let hash = |g: &Graph| spacetune_backends::network_hash(g, 1);
        let mut plan = Plan {
            kernels: BTreeMap::new(),
            names: BTreeMap::new(),
            pairs: BTreeMap::new(),
            per_net: Vec::new(),
        };
        for g in graphs {
            let ks = kernels(&g, rules).kernels;
            let mut keys = Vec::new();
            for k in &ks {
                let kg = k.graph(&g);
                let key = hash(&kg);
                plan.kernels.entry(key.clone()).or_insert(kg);
                plan.names
                    .entry(key.clone())
                    .or_insert_with(|| k.name.clone());
                keys.push(key);
            }
            let mut pairs = Vec::new();
            for (a, b) in handovers(&g, &ks) {
                let pg = pair_graph(&g, &ks[a], &ks[b]);
                let key = hash(&pg);
                plan.pairs.entry(key.clone()).or_insert(pg);
                pairs.push((key, a, b));
            }
            plan.per_net.push((keys, pairs));
        }
        plan
    }

    /// The networks to time: the distinct kernels, then the distinct pairs.
    pub fn probes(&self) -> Vec<Network> {
        let kernels = self
            .kernels
            .iter()
            .map(|(key, g)| (format!("kernel-{key}"), g));
        let pairs = self.pairs.iter().map(|(key, g)| (format!("pair-{key}"), g));
        kernels
            .chain(pairs)
            .map(|(id, g)| Network::fixed(id, g.clone()))
            .collect()
    }

    /// Kernels per network.
    pub fn counts(&self) -> Vec<f64> {
        self.per_net.iter().map(|(k, _)| k.len() as f64).collect()
    }

    /// Per network: the kernel model's time by kernel name (each kernel net of the
    /// per-call cost), where the model spends it. `ms` are the probes' timings.
    pub fn by_name(&self, call: f64, ms: &[f64]) -> Vec<BTreeMap<String, f64>> {
        let time = net_of_call(self.kernels.keys(), ms, call);
        self.per_net
            .iter()
            .map(|(keys, _)| {
                let mut by: BTreeMap<String, f64> = BTreeMap::new();
                for k in keys {
                    *by.entry(self.names[k].clone()).or_default() += time[k];
                }
                by
            })
            .collect()
    }

    /// Per network: the kernel model (the per-call cost once, plus every kernel net of
    /// it), and the same less what its hand-overs save. `ms` are the probes' timings.
    pub fn predict(&self, call: f64, ms: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let by_key = net_of_call(self.kernels.keys(), ms, call);
        let pair_by_key = net_of_call(self.pairs.keys(), &ms[self.kernels.len()..], call);
        self.per_net
            .iter()
            .map(|(keys, pairs)| {
                let alone = call + keys.iter().map(|k| by_key[k]).sum::<f64>();
                // A hand-over saves what the pair runs faster than its two kernels alone.
                // Not clamped at zero: on a noisy backend that would turn noise into a
                // saving on every pair.
                let saved =
                    |(p, a, b): &Handover| by_key[&keys[*a]] + by_key[&keys[*b]] - pair_by_key[p];
                (alone, alone - pairs.iter().map(saved).sum::<f64>())
            })
            .unzip()
    }
}

/// The probes `keys` timed as `ms` (in order), each net of the per-call cost `call`.
fn net_of_call<'k>(
    keys: impl Iterator<Item = &'k String>,
    ms: &[f64],
    call: f64,
) -> BTreeMap<&'k String, f64> {
    keys.zip(ms.iter().map(|t| (t - call).max(0.0))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use spacetune_ir::Region;

    fn rules(pairs: &[(&str, &str)]) -> FusionRules {
        FusionRules {
            fused: pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    fn conv(out: u64) -> Prim {
        Prim::Conv {
            out,
            k: 3,
            stride: 1,
            pad: 1,
            groups: 1,
            dilation: 1,
        }
    }

    /// in → conv → bn → relu
    fn chain() -> Graph {
        let mut g = Graph::with_input(Shape::new(8, 16, 16));
        let r = Region::Fixed(0);
        let c = g.push(conv(8), &[spacetune_ir::Handle::new(0)], r).unwrap();
        let b = g.push(Prim::BatchNorm, &[c], r).unwrap();
        g.push(Prim::Relu, &[b], r).unwrap();
        g
    }

    fn names(k: &Kernels) -> Vec<&str> {
        k.kernels.iter().map(|k| k.name.as_str()).collect()
    }

    #[test]
    fn conv_bn_relu_fuses_into_one_kernel() {
        let k = kernels(&chain(), &rules(&[("conv", "bn"), ("conv+bn", "relu")]));
        assert_eq!(names(&k), ["conv+bn+relu"]);
        assert_eq!(k.kernels[0].ops, [1, 2, 3]);
        assert_eq!(k.kernels[0].reads, [0]);
    }

    #[test]
    fn without_rules_every_op_is_a_kernel() {
        let k = kernels(&chain(), &FusionRules::default());
        assert_eq!(names(&k), ["conv", "bn", "relu"]);
    }

    #[test]
    fn a_missing_link_splits_the_chain() {
        let k = kernels(&chain(), &rules(&[("bn", "relu")]));
        assert_eq!(names(&k), ["conv", "bn+relu"]);
        // bn→relu fused after a lone bn says nothing about after conv+bn: two kernels
        // either way, never conv+bn+relu.
        let k = kernels(&chain(), &rules(&[("conv", "bn"), ("bn", "relu")]));
        assert_eq!(k.kernels.len(), 2);
        assert!(!names(&k).contains(&"conv+bn+relu"));
    }

    /// in → conv → bn → relu → conv → bn
    fn two_convs() -> Graph {
        let mut g = chain();
        let r = Region::Fixed(0);
        let c = g.push(conv(8), &[spacetune_ir::Handle::new(3)], r).unwrap();
        g.push(Prim::BatchNorm, &[c], r).unwrap();
        g
    }

    /// conv→bn→relu→conv→bn with rules for both groupings: the activation stays the
    /// epilogue of its producer.
    #[test]
    fn an_activation_goes_with_its_producer() {
        let g = two_convs();
        let r = Region::Fixed(0);
        let table = rules(&[
            ("conv", "bn"),
            ("conv+bn", "relu"),
            ("relu", "conv"),
            ("relu+conv", "bn"),
        ]);
        let k = kernels(&g, &table);
        assert_eq!(names(&k), ["conv+bn+relu", "conv+bn"]);
        // With nothing to fuse it into, a relu still joins the conv after it.
        let mut g = Graph::with_input(Shape::new(8, 16, 16));
        let a = g
            .push(Prim::Relu, &[spacetune_ir::Handle::new(0)], r)
            .unwrap();
        let c = g.push(conv(8), &[a], r).unwrap();
        g.push(Prim::BatchNorm, &[c], r).unwrap();
        assert_eq!(names(&kernels(&g, &table)), ["relu+conv+bn"]);
    }

    /// in → conv → bn → add(bn, in) → relu: a residual block.
    fn residual() -> Graph {
        let mut g = Graph::with_input(Shape::new(8, 16, 16));
        let (r, x) = (Region::Fixed(0), spacetune_ir::Handle::new(0));
        let c = g.push(conv(8), &[x], r).unwrap();
        let b = g.push(Prim::BatchNorm, &[c], r).unwrap();
        let a = g.push(Prim::Add, &[b, x], r).unwrap();
        g.push(Prim::Relu, &[a], r).unwrap();
        g
    }

    #[test]
    fn residual_add_joins_the_kernel_and_reads_the_skip() {
        let all = rules(&[("conv", "bn"), ("conv+bn", "add"), ("conv+bn+add", "relu")]);
        let k = kernels(&residual(), &all);
        assert_eq!(names(&k), ["conv+bn+add+relu"]);
        assert_eq!(k.kernels[0].reads, [0, 0]);
        let g = k.kernels[0].graph(&residual());
        assert_eq!(g.nodes.len(), 6, "two inputs and four ops:\n{g}");
        let k = kernels(&residual(), &rules(&[("conv", "bn"), ("add", "relu")]));
        assert_eq!(names(&k), ["conv+bn", "add+relu"]);
    }

    /// A value with two readers is computed once: it is not fused into either reader, and
    /// the kernel producing it is listed (and so costed) once.
    #[test]
    fn shared_values_stay_kernel_outputs() {
        let mut g = Graph::with_input(Shape::new(8, 16, 16));
        let (r, x) = (Region::Fixed(0), spacetune_ir::Handle::new(0));
        let c = g.push(conv(8), &[x], r).unwrap();
        let b = g.push(Prim::BatchNorm, &[c], r).unwrap();
        let left = g.push(Prim::Relu, &[b], r).unwrap();
        let c2 = g.push(conv(8), &[left], r).unwrap();
        g.push(Prim::Add, &[c2, b], r).unwrap();
        let all = rules(&[("conv", "bn"), ("conv+bn", "relu"), ("conv", "add")]);
        let k = kernels(&g, &all);
        assert_eq!(
            census(&k.kernels),
            BTreeMap::from([
                ("conv+add".to_string(), 1),
                ("conv+bn".to_string(), 1),
                ("relu".to_string(), 1)
            ])
        );
    }

    /// Of two branches meeting in an add, the one computed last takes the add.
    #[test]
    fn the_add_goes_to_the_branch_computed_last() {
        let mut g = Graph::with_input(Shape::new(8, 16, 16));
        let (r, x) = (Region::Fixed(0), spacetune_ir::Handle::new(0));
        let c1 = g.push(conv(8), &[x], r).unwrap();
        let first = g.push(Prim::BatchNorm, &[c1], r).unwrap();
        let c2 = g.push(conv(8), &[x], r).unwrap();
        let second = g.push(Prim::BatchNorm, &[c2], r).unwrap();
        g.push(Prim::Add, &[second, first], r).unwrap();
        let k = kernels(&g, &rules(&[("conv", "bn"), ("conv+bn", "add")]));
        let fused = k.kernels.iter().find(|k| k.name == "conv+bn+add").unwrap();
        assert_eq!(fused.ops, [c2.index(), second.index(), 5]);
        assert_eq!(names(&k).len(), 2);
    }

    /// The rewrites on terms as written, egg style: start term ⇒ the fused kernel, found
    /// equivalent by the rules and extracted as the cheapest form.
    fn rewrites_to(rules: &FusionRules, start: &str, expect: &str) {
        let start: RecExpr<Term> = start.parse().unwrap();
        let expect: RecExpr<Term> = expect.parse().unwrap();
        let ops = ["conv", "bn", "relu", "add", "add3", "gap", "linear"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let runner = Runner::default()
            .with_expr(&start)
            .run(&rewrites(rules, &ops));
        let root = runner.roots[0];
        assert_eq!(
            runner.egraph.lookup_expr(&expect),
            Some(runner.egraph.find(root)),
            "{start} should be equivalent to {expect}"
        );
        let (_, best) = Extractor::new(&runner.egraph, KernelCount).find_best(root);
        assert_eq!(best.to_string(), expect.to_string());
    }

    #[test]
    fn rule_table_as_terms() {
        let r = rules(&[
            ("conv", "bn"),
            ("conv+bn", "relu"),
            ("conv+bn", "add"),
            ("conv+bn+add", "relu"),
        ]);
        rewrites_to(
            &r,
            "(relu a3 (bn a2 (conv a1 in0)))",
            "(conv+bn+relu a1 a2 a3 in0)",
        );
        // A residual block: the skip is the add's first operand (computed first).
        rewrites_to(
            &r,
            "(relu a4 (add a3 in0 (bn a2 (conv a1 in0))))",
            "(conv+bn+add+relu a1 a2 a3 a4 in0 in0)",
        );
        // Not the other way round: a kernel cannot add what is computed after it.
        rewrites_to(
            &r,
            "(add a3 (bn a2 (conv a1 in0)) (share (gap a4 in0)))",
            "(add a3 (conv+bn a1 a2 in0) (share (gap a4 in0)))",
        );
        // An add of three tensors (a cell node with three incoming edges) goes the same way.
        rewrites_to(
            &r,
            "(add3 a3 in0 in0 (bn a2 (conv a1 in0)))",
            "(conv+bn+add3 a1 a2 a3 in0 in0 in0)",
        );
        // Nothing fuses through a value other ops read too.
        rewrites_to(
            &r,
            "(relu a3 (share (bn a2 (conv a1 in0))))",
            "(relu a3 (share (conv+bn a1 a2 in0)))",
        );
        // No rule, no fusion: gap→linear stays two kernels.
        rewrites_to(&r, "(linear a2 (gap a1 in0))", "(linear a2 (gap a1 in0))");
    }

    /// A branch computed from a `none` edge's zeros alone: folded away when the backend
    /// folds constants, three kernels' worth of ops when it does not.
    #[test]
    fn constant_branches_fold_when_the_backend_folds() {
        let mut g = Graph::with_input(Shape::new(8, 16, 16));
        let (r, x) = (Region::Fixed(0), spacetune_ir::Handle::new(0));
        let z = g.push(Prim::Zero, &[x], r).unwrap();
        let b = g.push(Prim::BatchNorm, &[z], r).unwrap();
        let k = g.push(Prim::Relu, &[b], r).unwrap();
        let c = g.push(conv(8), &[x], r).unwrap();
        let b2 = g.push(Prim::BatchNorm, &[c], r).unwrap();
        g.push(Prim::Add, &[b2, k], r).unwrap();
        let g = g.pruned();
        let fusing = [("conv", "bn"), ("conv+bn", "add")];
        let k = kernels(&g, &rules(&fusing));
        assert_eq!(names(&k), ["bn", "relu", "conv+bn+add"]);
        // Timed alone, the batch norm still reads a constant, not a tensor fed in.
        let alone = k.kernels[0].graph(&g);
        assert!(
            alone.nodes.iter().any(|(_, n)| n.op == Prim::Zero),
            "{alone}"
        );
        let folding = rules(&[fusing[0], fusing[1], (CONSTANT, "bn")]);
        let k = kernels(&g, &folding);
        assert_eq!(names(&k), ["conv+bn+add"]);
        // The fused kernel still reads the folded branch (a constant of the compiled model).
        assert_eq!(k.kernels[0].reads.len(), 2);
        // A network whose output is constant runs no kernel at all.
        let mut g = Graph::with_input(Shape::new(8, 16, 16));
        let z = g.push(Prim::Zero, &[x], r).unwrap();
        let b = g.push(Prim::BatchNorm, &[z], r).unwrap();
        g.push(Prim::Relu, &[b], r).unwrap();
        assert!(kernels(&g.pruned(), &folding).kernels.is_empty());
    }

    /// Two ops with equal shapes and inputs but their own weights are two kernels.
    #[test]
    fn equal_ops_on_one_input_are_not_merged() {
        let mut g = Graph::with_input(Shape::new(8, 16, 16));
        let (r, x) = (Region::Fixed(0), spacetune_ir::Handle::new(0));
        let a = g.push(conv(8), &[x], r).unwrap();
        let b = g.push(conv(8), &[x], r).unwrap();
        g.push(Prim::Add, &[a, b], r).unwrap();
        let k = kernels(&g, &rules(&[("conv", "add")]));
        assert_eq!(
            census(&k.kernels).values().sum::<usize>(),
            2,
            "{:?}",
            names(&k)
        );
        assert!(names(&k).contains(&"conv+add"));
    }

    #[test]
    fn an_output_read_only_by_the_next_kernel_is_handed_over() {
        // conv → bn → relu → conv → bn, and a residual block: no rules, every op a kernel.
        let g = two_convs();
        let r = Region::Fixed(0);
        let k = kernels(&g, &rules(&[]));
        assert_eq!(names(&k), ["conv", "bn", "relu", "conv", "bn"]);
        assert_eq!(handovers(&g, &k.kernels), [(0, 1), (1, 2), (2, 3), (3, 4)]);
        let pair = pair_graph(&g, &k.kernels[2], &k.kernels[3]);
        let ops: Vec<&str> = pair.nodes.iter().map(|(_, n)| n.op.name()).collect();
        assert_eq!(ops, ["input", "relu", "conv"]);
        // The residual block's input is read by the conv and by the add: no hand-over from
        // what computes it; the add reads the bn's output and the skip: the bn hands over.
        let all = rules(&[("conv", "bn")]);
        let k = kernels(&residual(), &all);
        assert_eq!(names(&k), ["conv+bn", "add", "relu"]);
        assert_eq!(handovers(&residual(), &k.kernels), [(0, 1), (1, 2)]);
        let mut g = residual();
        let skip = g
            .push(Prim::Relu, &[spacetune_ir::Handle::new(2)], r)
            .unwrap();
        let out = g.output().unwrap();
        g.push(Prim::Add, &[out, skip], r).unwrap();
        // The bn's output now has two readers (the add and the new relu).
        let k = kernels(&g, &all);
        let h = handovers(&g, &k.kernels);
        assert!(
            h.iter().all(|&(a, _)| k.kernels[a].name != "conv+bn"),
            "{h:?}"
        );
    }
}
