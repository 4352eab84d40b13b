//! The search-space layer of the IR: what the user wrote, parametric and unevaluated.
//!
//! Blocks, cells, spaces and the skeleton refer to expressions, statements and op calls by
//! handle into the module's arenas; the spans of those live beside them in the arenas.

use crate::arena::Handle;
use crate::span::Span;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnaryOp {
    Neg,
    Not,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Add => "+",
            Sub => "-",
            Mul => "*",
            Div => "/",
            Rem => "%",
            Eq => "==",
            Ne => "!=",
            Lt => "<",
            Le => "<=",
            Gt => ">",
            Ge => ">=",
            And => "and",
            Or => "or",
        }
    }
    /// Binding strength; higher binds tighter. Used by the parser's grammar levels and by
    /// the printer to decide where parentheses are needed.
    pub fn precedence(self) -> u8 {
        use BinaryOp::*;
        match self {
            Or => 1,
            And => 2,
            Eq | Ne | Lt | Le | Gt | Ge => 4,
            Add | Sub => 5,
            Mul | Div | Rem => 6,
        }
    }
}

/// An expression. Names are resolved when evaluated: a bound variable (block parameter,
/// `in`/`out`/`stride`, loop variable, `let`, value choice) or, failing that, the name of an
/// op or block used as a value (`act=hswish`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    Int(i64),
    /// The float and the text it was written as, so printing gives back the same digits.
    Float(f64, String),
    Name(String),
    List(Vec<Handle<Expr>>),
    Unary(UnaryOp, Handle<Expr>),
    Binary(BinaryOp, Handle<Expr>, Handle<Expr>),
    /// `then if cond else otherwise`
    Cond {
        then: Handle<Expr>,
        cond: Handle<Expr>,
        otherwise: Handle<Expr>,
    },
    /// A builtin function: `min`, `max`, `round`, `len`.
    Call(String, Vec<Handle<Expr>>),
}

/// One argument of an op call, positional or `name=value`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Arg {
    pub name: Option<String>,
    pub value: Handle<Expr>,
}

/// `name` or `name(args)`: a primitive op, a block, or a parameter naming one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpCall {
    pub name: String,
    pub args: Vec<Arg>,
    /// Whether parentheses were written (`relu` vs `relu()`), kept for faithful printing.
    pub parens: bool,
}

/// A sequence of op calls joined by `|`; data flows left to right.
pub type Pipeline = Vec<Handle<OpCall>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MergeKind {
    Add,
    Concat,
}

impl MergeKind {
    pub fn keyword(self) -> &'static str {
        match self {
            MergeKind::Add => "add",
            MergeKind::Concat => "concat",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StmtKind {
    Pipe(Pipeline),
    /// Branches that each take the current value, merged by `add` or `concat`.
    Merge {
        kind: MergeKind,
        branches: Vec<Vec<Handle<Stmt>>>,
    },
    /// Add the block's input to the current value.
    Residual,
    /// `for [index,] var in list { body }`
    For {
        index: Option<String>,
        var: String,
        list: Handle<Expr>,
        body: Vec<Handle<Stmt>>,
    },
}

/// A statement of a block body; skipped when its guard (`if expr`) is false.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stmt {
    pub kind: StmtKind,
    pub guard: Option<Handle<Expr>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Param {
    pub name: String,
    pub default: Option<Handle<Expr>>,
}

/// `block name(params) { body }`. Inside, `in` is the input channel count, `out` and
/// `stride` come from the slot (or from `out=`/`stride=` arguments where it is called).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockDef {
    pub name: String,
    pub params: Vec<Param>,
    pub body: Vec<Handle<Stmt>>,
    /// The source file that defined it (0 is the main file; others were imported).
    pub file: u32,
}

/// `edge from -> to = pipeline`; the pipeline may be a single name of a choice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub from: u32,
    pub to: u32,
    pub op: Pipeline,
}

/// A cell has at most this many input nodes.
pub const MAX_CELL_INPUTS: u32 = 8;

/// A DAG cell: nodes `0..inputs` are the cell's inputs, every other node sums its incoming
/// edges, and the cell hands on its declared output (or, without one, its highest node).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellDef {
    pub name: String,
    /// How many input nodes: fed by the outputs of that many skeleton parts before the cell.
    pub inputs: u32,
    /// Where `inputs k` was written (None: the default, one input).
    pub inputs_span: Option<Span>,
    pub edges: Vec<Handle<Edge>>,
    pub output: Option<CellOutput>,
    pub file: u32,
}

/// `output concat 2, 3, 4, 5`, `output add 2, 3` or `output 5`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellOutput {
    /// How several nodes merge (None for a single node).
    pub merge: Option<MergeKind>,
    pub nodes: Vec<u32>,
    pub span: Span,
}

/// What a candidate entry offers: a block or op call, or a plain value (value choices).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Offer {
    Call(Handle<OpCall>),
    Value(Handle<Expr>),
}

/// `offer [for x in list, y in list] [if guard]`: a grid is the cartesian product of its
/// bindings, in order, the last binding varying fastest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateEntry {
    pub offer: Offer,
    pub grid: Vec<(String, Handle<Expr>)>,
    pub guard: Option<Handle<Expr>>,
}

/// `layer N { entries }`: layer N's own candidate list, overriding `candidates`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerList {
    pub layer: Handle<Expr>,
    pub entries: Vec<Handle<CandidateEntry>>,
}

/// `choice a, b { entries } default x`: one decision per name; every place that uses a
/// name shares its decision (a tied choice).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChoiceDecl {
    pub names: Vec<String>,
    pub entries: Vec<Handle<CandidateEntry>>,
    pub default: Offer,
}

/// A candidate space over the skeleton.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Space {
    pub name: String,
    pub candidates: Vec<Handle<CandidateEntry>>,
    pub default: Option<Handle<OpCall>>,
    pub layers: Vec<LayerList>,
    pub choices: Vec<ChoiceDecl>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FixedRole {
    Stem,
    Fixed,
    Head,
}

impl FixedRole {
    pub fn keyword(self) -> &'static str {
        match self {
            FixedRole::Stem => "stem",
            FixedRole::Fixed => "fixed",
            FixedRole::Head => "head",
        }
    }
}

/// One part of the skeleton, in network order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Part {
    /// Ops that are never searched (stem, head, reduction blocks).
    Fixed { role: FixedRole, ops: Pipeline },
    /// `search out=[..] stride=[..]`: one searchable layer per list element.
    Search {
        out: Handle<Expr>,
        stride: Handle<Expr>,
    },
    /// `stage out=C repeat=N stride=S`: N searchable layers, the first with stride S.
    Stage {
        out: Handle<Expr>,
        repeat: Handle<Expr>,
        stride: Handle<Expr>,
    },
    /// `cells name out=C repeat=N [stride=S]`: N instances of a cell, each node of C
    /// channels; with a stride, the first instance is a reduction cell (the edges out of its
    /// input nodes stride).
    Cells {
        cell: String,
        out: Handle<Expr>,
        repeat: Handle<Expr>,
        stride: Handle<Expr>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skeleton {
    pub parts: Vec<Handle<Part>>,
}

/// `let name = expr`: a constant (a space's `choice` of the same name overrides it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Let {
    pub name: String,
    pub value: Handle<Expr>,
}

/// `import "path"` as written; its blocks and cells are merged into the module.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Import {
    pub path: String,
}
