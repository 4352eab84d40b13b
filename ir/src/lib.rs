//! spacetune's IR: one [`Module`] per source file, from the search space the user wrote to
//! the concrete networks built from it.
//!
//! # Layers
//!
//! * **Templates** ([`template`]): blocks, cells, candidate spaces and the skeleton exactly as
//!   written, parametric and unevaluated. Expressions, statements, op calls, cell edges,
//!   candidate entries and skeleton parts live in arenas on the module, addressed by typed
//!   [`Handle`]s; the span of source text behind every item is stored beside it in its arena,
//!   so any pass can point a diagnostic at the user's text.
//! * **Decisions** ([`space_info`]), filled by `check`: each space resolved into its choice
//!   nodes. A [`Decision`] is one independent choice with an ordered option list and a
//!   default. A space's decisions are its searchable layers (which block fills layer *i*) in
//!   layer order, then its named `choice`s (cell edges, value choices) in declaration order.
//!   A named choice is *tied*: every place that uses the name takes the same option.
//! * **Networks** ([`network`]), filled by `expand`: concrete DAGs of primitive ops
//!   ([`Prim`]) in topological order, with shapes and skeleton regions as side tables, in
//!   an arena addressed by `Handle<Network>`; each knows its [`Origin`] (SSBN_0, a swap of
//!   one decision, a sampled point, a probe).
//! * **What was learned outside the source** ([`measured`], [`latency`]): side tables keyed
//!   by `Handle<Network>` — latencies (`measure`), the latency tables (`correct`),
//!   accuracies (`profile`), the ranked SSBNs and the winning space (`select`) — and the
//!   reduced module (`reduce`), a module of its own.
//!
//! # Phases
//!
//! [`Phase`] only moves forward: `Parsed` (templates only) → `Checked` (decisions and
//! shapes, every candidate known to build in every place it can go) → `Expanded` (SSBNs) →
//! `Measured` (a latency per SSBN, or why there is none) → `Annotated` (a latency table per
//! space: every (decision, option) with its corrected and naive cost on one backend) →
//! `Profiled` (an accuracy per SSBN) → `Selected` (SSBNs ranked by BBSSP's cost, a winning
//! space, the options it keeps) → `Reduced` (the winning space cut down to those options,
//! as a module of its own, checked and expanded) → `Searched` (θ per decision of the
//! searched space, argmax θ its chosen network) → `Chosen` (that network emitted, retrained
//! from scratch and measured, beside SSBN_0) → `Compared` (the baselines of the same run
//! added to its outcome table).
//!
//! # Invariants
//!
//! * Every handle stored in the module points into the module's own arenas.
//! * From `Checked` on, `spaces[i]` has exactly one [`SpaceInfo`] in `checked`, in order;
//!   every option of every decision builds with the shapes it meets.
//! * From `Expanded` on, `networks` holds, per space in order, SSBN_0 then SSBN_(i,j) for
//!   every decision i and every non-default option j in order: 1 + Σ (|options| − 1).
//! * From `Measured` on, `latencies` has a result (a latency or a failure) for every SSBN
//!   of every measured space; from `Profiled` on, `accuracies` has one for every SSBN.
//! * From `Selected` on, `selection` ranks every SSBN once and keeps each decision's
//!   default; from `Reduced` on, `reduced` expands to exactly 1 + Σ (|kept| − 1) SSBNs.
//! * Containers that are iterated are ordered; nothing depends on hash order.
//!
//! # Architecture keys
//!
//! A network's key has one token per decision of its space, separated by single spaces. A
//! layer decision's token names the chosen block: the block's name, then `_` + parameter
//! name + value for every parameter whose value differs from its declared default (so
//! `mbconv(k=5, e=6)` is `mbconv_k5_e6`; list values join with `-`). A named choice's token
//! is `name=token` (`e01=skip`, `w=0.5`).

pub mod arena;
pub mod diag;
pub mod dsl;
pub mod latency;
pub mod measured;
pub mod network;
pub mod print;
pub mod searched;
pub mod space_info;
pub mod span;
pub mod supernet;
pub mod template;
pub mod value;

pub use arena::{Arena, Handle};
pub use diag::{Diagnostic, Diagnostics, Severity};
pub use latency::{LutEntry, LutRow, ShareSource, SpaceLut};
pub use measured::{
    AccuracySource, AccuracyTable, FusionRules, Latency, LatencyTable, LayerTime, PairRule, Scored,
    SelectParams, Selection, Timed, Trained, CONSTANT,
};
pub use network::{Cost, Graph, Node, Prim, Region, Shape};
pub use searched::{Chosen, Outcome, SearchEpoch, Searched};
pub use space_info::{
    Alternative, Decision, DecisionKind, Network, Origin, Resolved, SlotShapes, SpaceInfo,
};
pub use span::{SourceMap, Span};
pub use supernet::{Mix, Supernet};
pub use template::*;
pub use value::Value;

use serde::{Deserialize, Serialize};

/// How far a module has come through the pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    #[default]
    Parsed,
    Checked,
    Expanded,
    /// SSBNs timed on a backend (`measure`).
    Measured,
    /// Latency tables attached (`correct`).
    Annotated,
    /// SSBN accuracies attached (`profile`).
    Profiled,
    /// SSBNs ranked, a space chosen (`select`).
    Selected,
    /// The chosen space cut down to its picks (`reduce`).
    Reduced,
    /// θ learned by the gradient search (`search`).
    Searched,
    /// The chosen network emitted, retrained and measured (`emit`).
    Chosen,
    /// The baselines searched, retrained and measured beside it (`compare`).
    Compared,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Parsed => "parsed",
            Phase::Checked => "checked",
            Phase::Expanded => "expanded",
            Phase::Measured => "measured",
            Phase::Annotated => "annotated",
            Phase::Profiled => "profiled",
            Phase::Selected => "selected",
            Phase::Reduced => "reduced",
            Phase::Searched => "searched",
            Phase::Chosen => "chosen",
            Phase::Compared => "compared",
        }
    }
}

/// `input CxHxW` as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputDecl {
    pub shape: Shape,
    pub span: Span,
}

/// One search-space program and everything the passes have learned about it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Module {
    pub phase: Phase,
    pub input: Option<InputDecl>,
    pub classes: Option<Handle<Expr>>,
    /// `select thres=0.8 ...`: the file's selection knobs, in source order.
    pub select: Vec<SelectKnob>,
    pub imports: Arena<Import>,
    pub lets: Arena<Let>,
    pub blocks: Arena<BlockDef>,
    pub cells: Arena<CellDef>,
    pub spaces: Arena<Space>,
    pub skeleton: Option<Skeleton>,
    /// Span of the `skeleton` keyword, for diagnostics about the skeleton as a whole.
    pub skeleton_span: Span,

    pub exprs: Arena<Expr>,
    pub stmts: Arena<Stmt>,
    pub ops: Arena<OpCall>,
    pub edges: Arena<Edge>,
    pub entries: Arena<CandidateEntry>,
    pub parts: Arena<Part>,

    /// Side table of `check`: one entry per space, in order.
    pub checked: Vec<SpaceInfo>,
    /// Side table of `expand`: the SSBNs of every space, in order.
    pub networks: Arena<Network>,
    /// Side table of `measure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latencies: Option<LatencyTable>,
    /// Side table of `correct`: one latency table per measured space, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub luts: Vec<SpaceLut>,
    /// Side table of `profile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracies: Option<AccuracyTable>,
    /// Side table of `select`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
    /// What `reduce` made of the selection: the winning space alone, each decision cut down
    /// to its kept options, checked and expanded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduced: Option<Box<Module>>,
    /// Side table of `search`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub searched: Option<Searched>,
    /// Side table of `emit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen: Option<Chosen>,
}

/// One selection knob set in the file (`select lambda=0.02`); the value is a number literal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectKnob {
    pub name: String,
    pub value: f64,
    /// The literal as written, so printing is faithful.
    pub text: String,
    pub span: Span,
}

/// The knobs `select` accepts.
pub const SELECT_KNOBS: &[&str] = &["thres", "scale", "lambda", "picks"];

impl Module {
    pub fn new() -> Self {
        Module::default()
    }
    /// Moves the phase forward; moving backwards is a bug in a pass.
    pub fn advance(&mut self, to: Phase) {
        assert!(
            to >= self.phase,
            "phase moves only forward: {:?} -> {:?}",
            self.phase,
            to
        );
        self.phase = to;
    }
    pub fn block(&self, name: &str) -> Option<Handle<BlockDef>> {
        self.blocks
            .iter()
            .find(|(_, b)| b.name == name)
            .map(|(h, _)| h)
    }
    pub fn cell(&self, name: &str) -> Option<Handle<CellDef>> {
        self.cells
            .iter()
            .find(|(_, c)| c.name == name)
            .map(|(h, _)| h)
    }
    pub fn space(&self, name: &str) -> Option<Handle<Space>> {
        self.spaces
            .iter()
            .find(|(_, s)| s.name == name)
            .map(|(h, _)| h)
    }
    pub fn network(&self, id: &str) -> Option<&Network> {
        self.networks.values().find(|n| n.id == id)
    }
    /// The networks of space `space` (an index into `checked`), in order.
    pub fn networks_of(&self, space: u32) -> impl Iterator<Item = (Handle<Network>, &Network)> {
        self.networks.iter().filter(move |(_, n)| n.space == space)
    }
}
