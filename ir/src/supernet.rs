//! The supernet of a space: one graph holding every option of every place a decision acts,
//! each place closed by a *mix* node that weighs its options' outputs, and the guards that
//! say which nodes a given architecture runs. The search trains it; [`Supernet::fixed`]
//! cuts the network of one architecture back out of it, node for node.

use crate::arena::Handle;
use crate::network::{Graph, Node};
use serde::{Deserialize, Serialize};

/// What one input of a mix stands for: the (decision, option) pairs that must all hold for
/// it to be the one taken. Its weight is the product of those options' probabilities (one
/// pair at a layer or a cell edge; one per value choice where whole networks are mixed).
pub type Term = Vec<(u32, u32)>;

/// A place where a decision acts: node `node` of the supernet's graph (an `add` in the
/// graph, so shapes check) whose inputs are the outputs of the place's options, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mix {
    pub node: u32,
    pub terms: Vec<Term>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Supernet {
    pub graph: Graph,
    /// In node order.
    pub mixes: Vec<Mix>,
    /// Per node: the (decision, option) pairs an architecture must take for it to run.
    pub guards: Vec<Term>,
    /// Options per decision of the space.
    pub options: Vec<u32>,
}

impl Supernet {
    /// The mix closing node `n`, if it is one.
    pub fn mix_at(&self, n: usize) -> Option<&Mix> {
        self.mixes
            .binary_search_by_key(&(n as u32), |m| m.node)
            .ok()
            .map(|i| &self.mixes[i])
    }

    /// Whether node `n` runs in the architecture `choices` (mix nodes never do: the taken
    /// option's output stands in their place).
    pub fn runs(&self, n: usize, choices: &[u32]) -> bool {
        self.mix_at(n).is_none() && holds(&self.guards[n], choices)
    }

    /// The network of architecture `choices` and, per node of it, the supernet node it is.
    /// The nodes keep the supernet's order, so it is the network `expand` builds for the
    /// same choices when the supernet was built the way `expand` builds (tests hold it to
    /// that).
    pub fn fixed(&self, choices: &[u32]) -> (Graph, Vec<usize>) {
        let n = self.graph.nodes.len();
        // What each supernet node is in the fixed network: itself, or for a mix, the node
        // of the option taken.
        let mut to_fixed: Vec<Option<usize>> = vec![None; n];
        let mut origin = Vec::new();
        let mut g = Graph::default();
        for (h, node) in self.graph.nodes.iter() {
            let i = h.index();
            if let Some(mix) = self.mix_at(i) {
                let taken = mix
                    .terms
                    .iter()
                    .position(|t| holds(t, choices))
                    .expect("every mix has an input for every architecture");
                to_fixed[i] = to_fixed[node.inputs[taken].index()];
                continue;
            }
            if !holds(&self.guards[i], choices) {
                continue;
            }
            let inputs = node
                .inputs
                .iter()
                .map(|x| Handle::new(to_fixed[x.index()].expect("inputs run before users")))
                .collect();
            to_fixed[i] = Some(g.nodes.len());
            g.nodes.append(
                Node {
                    op: node.op.clone(),
                    inputs,
                },
                self.graph.nodes.span(h),
            );
            g.shapes.push(self.graph.shapes[i]);
            g.regions.push(self.graph.regions[i]);
            origin.push(i);
        }
        // When the supernet ends in a mix, the taken option's output is already last: the
        // options are built one after another and the later ones do not run.
        (g, origin)
    }
}

fn holds(term: &[(u32, u32)], choices: &[u32]) -> bool {
    term.iter().all(|&(d, o)| choices[d as usize] == o)
}
