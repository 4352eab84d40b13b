//! The one diagnostic type of spacetune, and its rendering (codespan-reporting).

use crate::span::{SourceMap, Span};
use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label as CsLabel};
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term::{self, termcolor};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Label {
    pub span: Span,
    pub message: String,
    pub primary: bool,
}

/// A message about the user's input: lowercase, no trailing period; labels point into the
/// source; notes give context; `help` says what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub labels: Vec<Label>,
    pub notes: Vec<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            labels: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }
    pub fn with_label(mut self, span: Span, message: impl Into<String>) -> Self {
        let primary = self.labels.is_empty();
        self.labels.push(Label {
            span,
            message: message.into(),
            primary,
        });
        self
    }
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    pub fn primary_span(&self) -> Option<Span> {
        self.labels.iter().find(|l| l.primary).map(|l| l.span)
    }

    /// Renders as text without colour: `error: ...`, `┌─ file:line:col`, the source line
    /// with the label under it, then notes and help.
    pub fn render(&self, sources: &SourceMap) -> String {
        let mut buffer = termcolor::Buffer::no_color();
        self.emit(sources, &mut buffer);
        String::from_utf8_lossy(buffer.as_slice()).into_owned()
    }

    /// Renders to a terminal stream (colour when it is one).
    pub fn emit(&self, sources: &SourceMap, out: &mut dyn termcolor::WriteColor) {
        let mut files = SimpleFiles::new();
        for f in &sources.files {
            files.add(f.name.clone(), f.text.clone());
        }
        let severity = match self.severity {
            Severity::Error => codespan_reporting::diagnostic::Severity::Error,
            Severity::Warning => codespan_reporting::diagnostic::Severity::Warning,
        };
        let labels = self
            .labels
            .iter()
            .filter(|l| (l.span.file as usize) < sources.files.len())
            .map(|l| {
                let range = clamp(l.span, sources);
                let label = if l.primary {
                    CsLabel::primary(l.span.file as usize, range)
                } else {
                    CsLabel::secondary(l.span.file as usize, range)
                };
                label.with_message(l.message.clone())
            })
            .collect();
        let mut notes = self.notes.clone();
        if let Some(help) = &self.help {
            notes.push(format!("help: {help}"));
        }
        let diagnostic = CsDiagnostic::new(severity)
            .with_message(self.message.clone())
            .with_labels(labels)
            .with_notes(notes);
        let config = term::Config::default();
        // Writing to an in-memory buffer or a terminal only fails on a closed pipe,
        // where there is nobody left to tell.
        let _ = term::emit_to_write_style(out, &config, &files, &diagnostic);
    }
}

fn clamp(span: Span, sources: &SourceMap) -> std::ops::Range<usize> {
    let len = sources.file(span.file).text.len();
    let start = (span.start as usize).min(len);
    let end = (span.end as usize).clamp(start, len);
    start..end
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// Several diagnostics, in source order; what the front end and passes return on failure.
#[derive(Clone, Debug, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn render(&self, sources: &SourceMap) -> String {
        self.0
            .iter()
            .map(|d| d.render(sources))
            .collect::<Vec<_>>()
            .join("")
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        match self.0.first() {
            Some(first) if n == 1 => write!(f, "{first}"),
            Some(first) => write!(f, "{first} (and {} more)", n - 1),
            None => write!(f, "no diagnostics"),
        }
    }
}

impl std::error::Error for Diagnostics {}
