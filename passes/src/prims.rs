//! The primitive ops of the language: their signatures, and how bound arguments become a
//! [`Prim`].

use spacetune_ir::network::MAX_DIM;
use spacetune_ir::{Prim, Shape, Value};

/// A parameter's default: `None` means required.
pub type Params = &'static [(&'static str, Option<Default>)];

#[derive(Clone, Copy, Debug)]
pub enum Default {
    Int(i64),
    Float(f64),
    /// Padding that keeps the spatial size at stride 1: dilation·(k−1)/2.
    Auto,
}

impl Default {
    pub fn value(self) -> Value {
        match self {
            Default::Int(i) => Value::Int(i),
            Default::Float(f) => Value::Float(f),
            Default::Auto => Value::Sym("auto".into()),
        }
    }
}

const NONE: Params = &[];
const CONV: Params = &[
    ("out", None),
    ("k", Some(Default::Int(1))),
    ("stride", Some(Default::Int(1))),
    ("groups", Some(Default::Int(1))),
    ("dilation", Some(Default::Int(1))),
    ("pad", Some(Default::Auto)),
];
const DWCONV: Params = &[
    ("k", Some(Default::Int(3))),
    ("stride", Some(Default::Int(1))),
    ("dilation", Some(Default::Int(1))),
    ("pad", Some(Default::Auto)),
];
const POOL: Params = &[
    ("k", Some(Default::Int(3))),
    ("stride", Some(Default::Int(1))),
    ("pad", Some(Default::Auto)),
];
const LINEAR: Params = &[("out", None)];
const SHUFFLE: Params = &[("groups", None)];
const SE: Params = &[("ratio", Some(Default::Float(0.25)))];

/// The canonical name for an alias (`identity` → `skip`, `none` → `zero`).
pub fn canonical(name: &str) -> &str {
    match name {
        "identity" => "skip",
        "none" => "zero",
        other => other,
    }
}

pub fn signature(name: &str) -> Option<Params> {
    Some(match canonical(name) {
        "conv" => CONV,
        "dwconv" => DWCONV,
        "maxpool" | "avgpool" => POOL,
        "linear" => LINEAR,
        "shuffle" => SHUFFLE,
        "se" => SE,
        "bn" | "relu" | "relu6" | "hswish" | "sigmoid" | "gap" | "skip" | "shift" | "zero" => NONE,
        _ => return None,
    })
}

/// Every primitive name, for suggestions.
pub const NAMES: &[&str] = &[
    "conv", "dwconv", "bn", "relu", "relu6", "hswish", "sigmoid", "maxpool", "avgpool", "gap",
    "linear", "shuffle", "se", "skip", "identity", "shift", "zero", "none",
];

/// A parameter that is out of range: which one, and why.
pub struct BadArg {
    pub param: &'static str,
    pub message: String,
}

fn get<'a>(args: &'a [(String, Value)], name: &str) -> &'a Value {
    &args
        .iter()
        .find(|(n, _)| n == name)
        .expect("bound arguments cover the signature")
        .1
}

/// Reads a size parameter: a positive integer no larger than MAX_DIM. Channel counts may be
/// fractional (`in * 0.75`) and round to the nearest integer; other sizes must be whole.
fn dim(
    args: &[(String, Value)],
    param: &'static str,
    min: u64,
    round: bool,
) -> Result<u64, BadArg> {
    let bad = |message: String| BadArg { param, message };
    let v = match get(args, param) {
        Value::Int(i) => *i as f64,
        Value::Float(f) if round => f.round(),
        Value::Float(f) if f.fract() == 0.0 => *f,
        other => {
            return Err(bad(format!(
                "`{param}` must be a whole number, found {other}"
            )))
        }
    };
    if !v.is_finite() || v < min as f64 || v > MAX_DIM as f64 {
        return Err(bad(format!(
            "`{param}` is out of range: {} (allowed {min} to {MAX_DIM})",
            crate::eval::number(v)
        )));
    }
    Ok(v as u64)
}

fn pad(args: &[(String, Value)], k: u64, dilation: u64) -> Result<u64, BadArg> {
    match get(args, "pad") {
        Value::Sym(s) if s == "auto" => Ok(dilation * (k - 1) / 2),
        _ => dim(args, "pad", 0, false),
    }
}

/// Builds the primitive from arguments bound to its signature, given its input shape.
pub fn build(name: &str, args: &[(String, Value)], input: Shape) -> Result<Prim, BadArg> {
    Ok(match canonical(name) {
        "conv" => {
            let (k, dilation) = (dim(args, "k", 1, false)?, dim(args, "dilation", 1, false)?);
            Prim::Conv {
                out: dim(args, "out", 1, true)?,
                k,
                stride: dim(args, "stride", 1, false)?,
                pad: pad(args, k, dilation)?,
                groups: dim(args, "groups", 1, false)?,
                dilation,
            }
        }
        "dwconv" => {
            let (k, dilation) = (dim(args, "k", 1, false)?, dim(args, "dilation", 1, false)?);
            Prim::Conv {
                out: input.c,
                k,
                stride: dim(args, "stride", 1, false)?,
                pad: pad(args, k, dilation)?,
                groups: input.c,
                dilation,
            }
        }
        "maxpool" | "avgpool" => {
            let k = dim(args, "k", 1, false)?;
            let (stride, pad) = (dim(args, "stride", 1, false)?, pad(args, k, 1)?);
            if pad * 2 > k {
                return Err(BadArg {
                    param: "pad",
                    message: format!(
                        "`pad` is out of range: {pad} is more than half the window {k}"
                    ),
                });
            }
            if canonical(name) == "maxpool" {
                Prim::MaxPool { k, stride, pad }
            } else {
                Prim::AvgPool { k, stride, pad }
            }
        }
        "linear" => Prim::Linear {
            out: dim(args, "out", 1, true)?,
        },
        "shuffle" => Prim::ChannelShuffle {
            groups: dim(args, "groups", 1, false)?,
        },
        "se" => {
            let ratio = match get(args, "ratio") {
                Value::Int(i) => *i as f64,
                Value::Float(f) => *f,
                other => {
                    return Err(BadArg {
                        param: "ratio",
                        message: format!("`ratio` must be a number, found {other}"),
                    })
                }
            };
            if !(ratio > 0.0 && ratio <= 1.0) {
                return Err(BadArg {
                    param: "ratio",
                    message: format!("`ratio` is out of range: {ratio} (allowed above 0 up to 1)"),
                });
            }
            Prim::SqueezeExcite {
                mid: ((input.c as f64 * ratio).round() as u64).max(1),
            }
        }
        "bn" => Prim::BatchNorm,
        "relu" => Prim::Relu,
        "relu6" => Prim::Relu6,
        "hswish" => Prim::Hswish,
        "sigmoid" => Prim::Sigmoid,
        "gap" => Prim::GlobalAvgPool,
        "skip" => Prim::Identity,
        "shift" => Prim::Shift,
        "zero" => Prim::Zero,
        other => unreachable!("`{other}` has a signature but no builder"),
    })
}
