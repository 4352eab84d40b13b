//! pest errors turned into spacetune diagnostics, with rule names users can read.

use crate::Rule;
use pest::error::{ErrorVariant, InputLocation};
use spacetune_ir::{Diagnostic, Span};

/// What a user should read for a grammar rule in "expected ..." messages.
fn describe(rule: &Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::file | Rule::item => "a declaration",
        Rule::import => "`import`",
        Rule::input_decl => "`input`",
        Rule::classes_decl => "`classes`",
        Rule::let_decl => "`let`",
        Rule::select_decl | Rule::kw_select => "`select`",
        Rule::select_knob => "a knob like `lambda=0.01`",
        Rule::block_def => "`block`",
        Rule::cell_def => "`cell`",
        Rule::space_def => "`space`",
        Rule::skeleton => "`skeleton`",
        Rule::keyword => "a keyword",
        Rule::ident => "a name",
        Rule::int => "an integer",
        Rule::float => "a number",
        Rule::string | Rule::string_body => "a quoted path",
        Rule::dims => "a shape like `3x32x32`",
        Rule::param => "a parameter",
        Rule::body => "`{`",
        Rule::stmt => "a statement",
        Rule::guard => "`if`",
        Rule::residual => "`residual`",
        Rule::merge_stmt | Rule::merge_kind => "`add {` or `concat {`",
        Rule::for_stmt => "`for`",
        Rule::pipeline | Rule::op_call => "an op",
        Rule::call_args => "`(`",
        Rule::arg => "an argument",
        Rule::edge => "`edge`",
        Rule::cell_item => "`inputs`, `edge` or `output`",
        Rule::cell_inputs | Rule::kw_inputs => "`inputs`",
        Rule::cell_output | Rule::kw_output => "`output`",
        Rule::cell_merge => "`concat` or `add`",
        Rule::candidates => "`candidates`",
        Rule::default_decl => "`default`",
        Rule::layer_list => "`layer`",
        Rule::choice_decl => "`choice`",
        Rule::entry | Rule::offer | Rule::value_offer => "a candidate",
        Rule::grid => "`for`",
        Rule::binding => "a binding like `k in [3, 5]`",
        Rule::stem => "`stem`",
        Rule::head => "`head`",
        Rule::fixed => "`fixed`",
        Rule::search => "`search`",
        Rule::stage => "`stage`",
        Rule::cells => "`cells`",
        Rule::setting => "a setting like `out=16`",
        Rule::expr
        | Rule::or_expr
        | Rule::and_expr
        | Rule::not_expr
        | Rule::cmp_expr
        | Rule::sum
        | Rule::product
        | Rule::unary
        | Rule::primary => "an expression",
        Rule::list => "a list",
        Rule::func_call => "a function call",
        Rule::or_op => "`or`",
        Rule::and_op => "`and`",
        Rule::not_op => "`not`",
        Rule::neg_op => "`-`",
        Rule::cmp_op => "a comparison",
        Rule::add_op => "`+` or `-`",
        Rule::mul_op => "`*`, `/` or `%`",
        Rule::WHITESPACE | Rule::COMMENT => "whitespace",
        Rule::ident_char => "a letter, digit or `_`",
        Rule::kw_if => "`if`",
        Rule::kw_else => "`else`",
        Rule::kw_for => "`for`",
        Rule::kw_in => "`in`",
        Rule::space_item => "`candidates`, `default`, `layer` or `choice`",
        Rule::part => "`stem`, `search`, `stage`, `cells`, `fixed` or `head`",
    }
}

pub(crate) fn from_pest(error: pest::error::Error<Rule>, file: u32, text: &str) -> Diagnostic {
    let (start, end) = match error.location {
        InputLocation::Pos(p) => (p, p),
        InputLocation::Span((s, e)) => (s, e),
    };
    // Point at the whole offending token, not an empty position, so the label is visible.
    let token_end = text[start..]
        .char_indices()
        .find(|&(i, c)| i > 0 && !(c.is_alphanumeric() || c == '_'))
        .map_or(text.len(), |(i, _)| start + i)
        .max(end);
    let found = if start >= text.len() {
        "end of file".to_string()
    } else {
        // At most 24 characters (not bytes: the token may hold any UTF-8).
        let token: String = text[start..token_end].chars().take(24).collect();
        format!("`{token}`")
    };
    let message = match &error.variant {
        ErrorVariant::ParsingError {
            positives,
            negatives,
        } => {
            let mut names: Vec<&str> = positives.iter().map(describe).collect();
            names.sort_unstable();
            names.dedup();
            if !names.is_empty() {
                format!("expected {}, found {found}", join_or(&names))
            } else if !negatives.is_empty() {
                let mut names: Vec<&str> = negatives.iter().map(describe).collect();
                names.sort_unstable();
                names.dedup();
                format!("unexpected {}", join_or(&names))
            } else {
                format!("unexpected {found}")
            }
        }
        ErrorVariant::CustomError { message } => message.clone(),
    };
    Diagnostic::error(message).with_label(Span::new(file, start, token_end), "here")
}

fn join_or(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
