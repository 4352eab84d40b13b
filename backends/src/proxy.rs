//! Zero-cost accuracy proxies: a score for an untrained network from one mini-batch, in
//! about a second — SynFlow (Tanaka et al., NeurIPS 2020; as a NAS proxy, Abdelfattah et
//! al., ICLR 2021) and NASWOT (Mellor et al., ICML 2021). Higher is predicted better; the
//! scores rank networks, they are not accuracies.

use crate::data::Dataset;
use crate::torch::TchNet;
use crate::train::{batch, check_fit};
use crate::weights::{Rng, Weights};
use crate::{BackendError, Result};
use serde::{Deserialize, Serialize};
use spacetune_ir::{Graph, Prim};
use tch::{nn, Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proxy {
    /// ln Σ |θ ⊙ ∂R/∂θ| with every parameter made positive and R the sum of the outputs
    /// for an all-ones input, in double precision: data-free, it measures how much signal
    /// the architecture lets through without layer collapse.
    Synflow,
    /// ln |det K| where K\[i,j\] counts the rectifiers on which images i and j of a batch
    /// agree (both active or both inactive): networks that tell inputs apart at
    /// initialisation train to higher accuracy.
    Naswot,
}

impl Proxy {
    pub const ALL: [Proxy; 2] = [Proxy::Synflow, Proxy::Naswot];

    pub fn name(self) -> &'static str {
        match self {
            Proxy::Synflow => "synflow",
            Proxy::Naswot => "naswot",
        }
    }

    pub fn named(name: &str) -> Option<Proxy> {
        Proxy::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether the score reads images (SynFlow's input is all ones).
    pub fn reads_data(self) -> bool {
        self == Proxy::Naswot
    }

    /// The score of `graph` initialised with `weights`; `data` gives NASWOT its batch of
    /// `batch_size` images (a seeded draw).
    pub fn score(
        self,
        graph: &Graph,
        weights: &Weights,
        data: &Dataset,
        batch_size: usize,
        seed: u64,
    ) -> Result<f64> {
        match self {
            Proxy::Synflow => synflow(graph, weights),
            Proxy::Naswot => naswot(graph, weights, data, batch_size, seed),
        }
    }
}

fn synflow(graph: &Graph, weights: &Weights) -> Result<f64> {
    let mut vs = nn::VarStore::new(tch::Device::Cpu);
    let net = TchNet::new(&vs.root(), graph, weights)?;
    // Converted in place: the net's parameter handles share the variables' storage.
    vs.set_kind(Kind::Double);
    tch::no_grad(|| {
        for (_, v) in vs.variables() {
            let _ = v.shallow_clone().abs_();
        }
    });
    let s = graph.shapes[0];
    let x = Tensor::ones(
        [1, s.c as i64, s.h as i64, s.w as i64],
        (Kind::Double, tch::Device::Cpu),
    );
    // Batch norm with its running statistics: one all-ones image has no batch statistics.
    let r = net.forward_t(&x, false).sum(Kind::Double);
    r.backward();
    let mut total = 0.0;
    for v in vs.trainable_variables() {
        let g = v.grad();
        if g.defined() {
            total += (&v * &g).abs().sum(Kind::Double).double_value(&[]);
        }
    }
    if !total.is_finite() {
        return Err(BackendError::Unsupported(format!(
            "synflow overflowed double precision ({total})"
        )));
    }
    // ln: the raw sums span hundreds of orders of magnitude between networks.
    Ok(if total > 0.0 {
        total.ln()
    } else {
        f64::NEG_INFINITY
    })
}

fn naswot(
    graph: &Graph,
    weights: &Weights,
    data: &Dataset,
    batch_size: usize,
    seed: u64,
) -> Result<f64> {
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let net = TchNet::new(&vs.root(), graph, weights)?;
    check_fit(&net, data)?;
    let n = batch_size.min(data.len());
    if n < 2 {
        return Err(BackendError::Unsupported(format!(
            "naswot needs a batch of at least 2 images, {} has {}",
            data.name,
            data.len()
        )));
    }
    let mut order = Rng::new(seed ^ 0x4a5_3d07).permutation(data.len());
    order.truncate(n);
    let (x, _) = batch(data, &order);
    let values = tch::no_grad(|| net.values(&x, true));
    let mut k = Tensor::zeros([n as i64, n as i64], (Kind::Double, tch::Device::Cpu));
    let mut units = 0;
    for (h, node) in graph.nodes.iter() {
        // The rectifiers: units that are on or off (h-swish is 0 below −3 and x-shaped
        // above, so its sign is its on/off code too).
        if !matches!(node.op, Prim::Relu | Prim::Relu6 | Prim::Hswish) {
            continue;
        }
        let Some(y) = &values[h.index()] else {
            continue;
        };
        let c = y.flatten(1, -1).gt(0.0).to_kind(Kind::Double);
        units += c.size()[1];
        let off = c.ones_like() - &c;
        k += c.matmul(&c.tr()) + off.matmul(&off.tr());
    }
    if units == 0 {
        return Err(BackendError::Unsupported(
            "naswot needs rectifiers (relu, relu6, hswish); the network has none".into(),
        ));
    }
    let (_, logdet) = k.slogdet();
    Ok(logdet.double_value(&[]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use spacetune_ir::{Graph, Handle, Region, Shape};

    fn add(g: &mut Graph, op: Prim, x: Handle<spacetune_ir::Node>) -> Handle<spacetune_ir::Node> {
        g.push(op, &[x], Region::Fixed(0)).unwrap()
    }

    fn conv_net(width: u64, depth: usize) -> Graph {
        let mut g = Graph::with_input(Shape::new(1, 8, 8));
        let mut x = Handle::new(0);
        for _ in 0..depth {
            x = add(
                &mut g,
                Prim::Conv {
                    out: width,
                    k: 3,
                    stride: 1,
                    pad: 1,
                    groups: 1,
                    dilation: 1,
                },
                x,
            );
            x = add(&mut g, Prim::Relu, x);
        }
        let x = add(&mut g, Prim::GlobalAvgPool, x);
        add(&mut g, Prim::Linear { out: 10 }, x);
        g
    }

    #[test]
    fn synflow_grows_with_width_and_is_the_log_of_the_path_sum() {
        // One 1×1-input linear map: R = Σ_o Σ_i |w_oi| + Σ_o |b_o|, and θ·∂R/∂θ sums to R.
        let mut g = Graph::with_input(Shape::new(3, 1, 1));
        add(&mut g, Prim::Linear { out: 2 }, Handle::new(0));
        let w = Weights::random(&g, 1);
        let by_hand: f64 = w
            .params
            .values()
            .flat_map(|p| &p.data)
            .map(|v| v.abs() as f64)
            .sum();
        let s = synflow(&g, &w).unwrap();
        assert!((s - by_hand.ln()).abs() < 1e-6, "{s} vs ln {by_hand}");
        let narrow = synflow(&conv_net(4, 3), &Weights::random(&conv_net(4, 3), 0)).unwrap();
        let wide = synflow(&conv_net(16, 3), &Weights::random(&conv_net(16, 3), 0)).unwrap();
        assert!(wide > narrow + 1.0, "wide {wide}, narrow {narrow}");
    }

    #[test]
    fn naswot_is_higher_for_a_network_that_separates_its_inputs() {
        let data = Dataset::synthetic(64, Shape::new(1, 8, 8), 10, 3);
        let g = conv_net(8, 2);
        let w = Weights::random(&g, 0);
        let score = naswot(&g, &w, &data, 32, 0).unwrap();
        // K's diagonal is the number of rectifier units, so ln det K ≤ n ln(units)
        // (Hadamard), with equality only when all codes are orthogonal.
        let units = (2 * 8 * 8 * 8) as f64;
        assert!(score.is_finite() && score < 32.0 * units.ln(), "{score}");
        // A network whose rectifiers all see the same input agrees on every pair of images:
        // K is rank one and the score collapses.
        let mut flat = Graph::with_input(Shape::new(1, 8, 8));
        let x = add(&mut flat, Prim::GlobalAvgPool, Handle::new(0));
        let x = add(&mut flat, Prim::Zero, x);
        let x = add(&mut flat, Prim::Relu, x);
        add(&mut flat, Prim::Linear { out: 10 }, x);
        let dead = naswot(&flat, &Weights::random(&flat, 0), &data, 32, 0).unwrap();
        assert!(dead < score - 10.0, "dead {dead}, live {score}");
    }
}
