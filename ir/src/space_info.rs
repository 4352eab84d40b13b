//! Side tables the passes fill in: resolved decisions and shapes (check), networks (expand).

use crate::arena::{Arena, Handle};
use crate::network::{Cost, Graph, Shape};
use crate::span::Span;
use crate::template::Space;
use crate::value::Value;
use serde::{Deserialize, Serialize};

/// A candidate with every argument evaluated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Resolved {
    /// A block or primitive op, with its arguments by parameter name, in declaration order.
    Call {
        name: String,
        args: Vec<(String, Value)>,
    },
    /// A plain value (a value choice such as a width multiplier).
    Value(Value),
}

/// One option of a decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    /// The option's name in architecture keys, e.g. `mbconv_k5_e6`.
    pub token: String,
    pub resolved: Resolved,
    /// The candidate entry it came from.
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "index", rename_all = "snake_case")]
pub enum DecisionKind {
    /// Which block fills searchable layer n.
    Layer(u32),
    /// A named `choice`, shared by every place that uses its name.
    Named,
}

/// A choice node: one decision of a space, its options and its default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub name: String,
    pub kind: DecisionKind,
    pub options: Vec<Alternative>,
    pub default: u32,
}

/// A searchable layer as seen in the default network of a space.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotShapes {
    pub layer: u32,
    pub input: Shape,
    pub output: Shape,
    pub stride: u64,
    /// The span of the skeleton part (`search` or `stage`) that declares the layer.
    pub part: Span,
    /// Per option of the layer's decision: its cost in this slot.
    pub costs: Vec<Cost>,
}

/// What `check` learned about one space.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SpaceInfo {
    /// The space; `None` for a file without spaces (one fixed network).
    pub space: Option<Handle<Space>>,
    pub name: String,
    /// Layer decisions first (in layer order), then named choices in declaration order.
    pub decisions: Arena<Decision>,
    pub slots: Vec<SlotShapes>,
    /// Shape of the network output (default choices).
    pub output: Shape,
}

impl SpaceInfo {
    /// 1 + Σ (options − 1): the number of SSBNs this space expands to.
    pub fn ssbn_count(&self) -> usize {
        1 + self
            .decisions
            .iter()
            .map(|(_, d)| d.options.len() - 1)
            .sum::<usize>()
    }

    /// Π options: the number of networks in the space (saturating).
    pub fn size(&self) -> u64 {
        self.decisions.iter().fold(1u64, |n, (_, d)| {
            n.saturating_mul(d.options.len().max(1) as u64)
        })
    }
}

/// Where a network comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// SSBN_0: every decision at its default.
    Base,
    /// SSBN_(i,j): decision `decision` takes option `option`; all others at their defaults.
    Swap {
        decision: Handle<Decision>,
        option: u32,
    },
    /// A point of the space drawn at random (latency evaluation), not an SSBN.
    Sampled,
    /// A network built by program to time a part of a space (a block alone, a fusion probe,
    /// a kernel): it belongs to no decision.
    Probe,
}

impl Origin {
    pub fn is_ssbn(self) -> bool {
        matches!(self, Origin::Base | Origin::Swap { .. })
    }
}

/// A concrete network (phase Expanded and later).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Network {
    /// Stable id: `space-0` for SSBN_0, `space-i-j` for SSBN_(i,j).
    pub id: String,
    /// Index of the space's entry in [`crate::Module::checked`].
    pub space: u32,
    pub origin: Origin,
    /// The option taken by each decision of the space.
    pub choices: Vec<u32>,
    /// Canonical architecture key: one token per decision, space-separated.
    pub key: String,
    pub cost: Cost,
    pub graph: Graph,
}

impl Network {
    /// A probe: a network with no choices around a graph built by program.
    pub fn fixed(id: impl Into<String>, graph: Graph) -> Network {
        Network {
            id: id.into(),
            space: 0,
            origin: Origin::Probe,
            choices: Vec::new(),
            key: String::new(),
            cost: graph.cost(),
            graph,
        }
    }
}
