//! Diagnostics about a user's project: what is wrong, in which file, at which line and column,
//! and what to do about it.
//!
//! A compile collects every diagnostic it finds instead of stopping at the first one, so a user
//! fixes a whole batch of mistakes per round trip. Rendering goes through miette's graphical
//! handler, which shows the offending snippet under the message.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
use serde::Serialize;

/// How serious a diagnostic is: errors fail the command, warnings are printed and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The command cannot succeed until this is fixed.
    Error,
    /// Suspicious but not fatal.
    Warning,
}

/// A source text that diagnostics can point into, shared cheaply between diagnostics.
#[derive(Debug, Clone)]
pub struct SourceText {
    /// Path shown to the user, relative to the project folder.
    pub path: PathBuf,
    /// The full text of the file.
    pub text: Arc<str>,
}

impl SourceText {
    /// Wraps the text of the file at `path` (relative to the project folder).
    pub fn new(path: impl Into<PathBuf>, text: impl Into<Arc<str>>) -> Self {
        Self {
            path: path.into(),
            text: text.into(),
        }
    }

    /// Converts a 1-based line and column (in characters) into a byte offset, clamped to the
    /// text so that a location from a parser can never index out of bounds.
    pub fn offset_of(&self, line: u32, column: u32) -> usize {
        let line = line.max(1) as usize;
        let mut offset = 0usize;
        for (index, text_line) in self.text.split_inclusive('\n').enumerate() {
            if index + 1 == line {
                let column = column.max(1) as usize - 1;
                let within: usize = text_line
                    .chars()
                    .take(column)
                    .map(char::len_utf8)
                    .sum::<usize>();
                return offset + within;
            }
            offset += text_line.len();
        }
        self.text.len()
    }

    /// Converts a byte offset into a 1-based (line, column) pair.
    pub fn line_column_of(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |at| at + 1);
        let column = before[line_start..].chars().count() + 1;
        (line as u32, column as u32)
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// One problem found in a project.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectDiagnostic {
    /// Whether the problem fails the command.
    pub severity: Severity,
    /// A stable machine-readable code, such as `strata::unknown_ref`.
    pub code: &'static str,
    /// What is wrong, lowercase, without a trailing period.
    pub message: String,
    /// The file, relative to the project folder, when the problem is in one.
    pub file: Option<PathBuf>,
    /// 1-based line, when known.
    pub line: Option<u32>,
    /// 1-based column, when known.
    pub column: Option<u32>,
    /// What the user can do about it.
    pub hint: Option<String>,
    #[serde(skip)]
    source: Option<SourceText>,
    #[serde(skip)]
    span: Option<(usize, usize)>,
}

impl ProjectDiagnostic {
    /// Creates an error diagnostic with a code and a message.
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code,
            message: message.into(),
            file: None,
            line: None,
            column: None,
            hint: None,
            source: None,
            span: None,
        }
    }

    /// Creates a warning diagnostic with a code and a message.
    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, message)
        }
    }

    /// Points the diagnostic at a file without a precise location.
    pub fn in_file(mut self, path: impl AsRef<Path>) -> Self {
        self.file = Some(path.as_ref().to_path_buf());
        self
    }

    /// Points the diagnostic at a 1-based line and column of a source text.
    pub fn at(mut self, source: &SourceText, line: u32, column: u32) -> Self {
        let offset = source.offset_of(line, column);
        let length = token_length(&source.text[offset..]);
        self.file = Some(source.path.clone());
        self.line = Some(line.max(1));
        self.column = Some(column.max(1));
        self.span = Some((offset, length));
        self.source = Some(source.clone());
        self
    }

    /// Points the diagnostic at a byte range of a source text.
    pub fn at_range(mut self, source: &SourceText, start: usize, end: usize) -> Self {
        let start = floor_char_boundary(&source.text, start.min(source.text.len()));
        let end = floor_char_boundary(&source.text, end.clamp(start, source.text.len()));
        let (line, column) = source.line_column_of(start);
        self.file = Some(source.path.clone());
        self.line = Some(line);
        self.column = Some(column);
        self.span = Some((start, end - start));
        self.source = Some(source.clone());
        self
    }

    /// Shows the snippet from the original of a file whose text was rewritten with the same
    /// byte offsets (a snapshot block with the rest of its file blanked out).
    pub fn with_original_text(mut self, originals: &[SourceText]) -> Self {
        if let Some(source) = &mut self.source
            && let Some(original) = originals.iter().find(|original| {
                original.path == source.path && original.text.len() == source.text.len()
            })
        {
            *source = original.clone();
        }
        self
    }

    /// Whether the problem fails the command.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Adds a hint telling the user what to do.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Returns `file:line:column` (as much of it as is known), for one-line summaries.
    pub fn location(&self) -> String {
        match (&self.file, self.line, self.column) {
            (Some(file), Some(line), Some(column)) => {
                format!("{}:{line}:{column}", file.display())
            }
            (Some(file), Some(line), None) => format!("{}:{line}", file.display()),
            (Some(file), None, _) => file.display().to_string(),
            _ => String::from("<project>"),
        }
    }
}

/// Length of the token that starts `text`, so that a label underlines a word, not one byte.
fn token_length(text: &str) -> usize {
    let word: usize = text
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ',' && *c != ')')
        .map(char::len_utf8)
        .sum();
    word.max(text.chars().next().map_or(0, char::len_utf8))
}

impl fmt::Display for ProjectDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location(), self.message)
    }
}

impl std::error::Error for ProjectDiagnostic {}

impl Diagnostic for ProjectDiagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.hint
            .as_ref()
            .map(|hint| Box::new(hint) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source
            .as_ref()
            .map(|source| &source.text as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let (offset, length) = self.span?;
        let label = LabeledSpan::new_with_span(Some(String::from("here")), (offset, length));
        Some(Box::new(std::iter::once(label)))
    }
}

/// Every diagnostic of one command, in a stable order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Diagnostics {
    items: Vec<ProjectDiagnostic>,
}

impl Diagnostics {
    /// Adds a diagnostic.
    pub fn push(&mut self, diagnostic: ProjectDiagnostic) {
        self.items.push(diagnostic);
    }

    /// Adds every diagnostic of `other`.
    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    /// Returns true when at least one diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.items
            .iter()
            .any(|item| item.severity == Severity::Error)
    }

    /// Returns the number of errors.
    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|item| item.severity == Severity::Error)
            .count()
    }

    /// Returns true when there is no diagnostic at all.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Iterates over the diagnostics.
    pub fn iter(&self) -> impl Iterator<Item = &ProjectDiagnostic> {
        self.items.iter()
    }

    /// Sorts by file, line and column so that output does not depend on traversal order.
    pub fn sort(&mut self) {
        self.items.sort_by(|a, b| {
            (&a.file, a.line, a.column, a.severity, &a.message)
                .cmp(&(&b.file, b.line, b.column, b.severity, &b.message))
        });
        self.items.dedup_by(|a, b| {
            a.file == b.file && a.line == b.line && a.column == b.column && a.message == b.message
        });
    }

    /// Renders every diagnostic with its snippet, as a person reads it in a terminal.
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
        let mut out = String::new();
        for item in &self.items {
            let named = NamedDiagnostic {
                inner: item,
                named_source: item.source.as_ref().map(|source| {
                    NamedSource::new(source.path.display().to_string(), source.text.clone())
                }),
            };
            if handler.render_report(&mut out, &named).is_err() {
                out.push_str(&item.to_string());
            }
            out.push('\n');
        }
        out
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.items {
            writeln!(f, "{item}")?;
        }
        Ok(())
    }
}

/// Adapter that names the source after its file so the snippet header shows the path.
#[derive(Debug)]
struct NamedDiagnostic<'a> {
    inner: &'a ProjectDiagnostic,
    named_source: Option<NamedSource<Arc<str>>>,
}

impl fmt::Display for NamedDiagnostic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.inner.source, &self.inner.file) {
            (None, Some(file)) => write!(f, "{}: {}", file.display(), self.inner.message),
            _ => f.write_str(&self.inner.message),
        }
    }
}

impl std::error::Error for NamedDiagnostic<'_> {}

impl Diagnostic for NamedDiagnostic<'_> {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.inner.code()
    }
    fn severity(&self) -> Option<miette::Severity> {
        self.inner.severity()
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.inner.help()
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.named_source
            .as_ref()
            .map(|named| named as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.inner.labels()
    }
}

impl IntoIterator for Diagnostics {
    type Item = ProjectDiagnostic;
    type IntoIter = std::vec::IntoIter<ProjectDiagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_line_columns_round_trip() {
        let source = SourceText::new("m.sql", "select 1\nfrom é x\n");
        let offset = source.offset_of(2, 8);
        assert_eq!(&source.text[offset..offset + 1], "x");
        assert_eq!(source.line_column_of(offset), (2, 8));
        assert_eq!(source.offset_of(99, 1), source.text.len());
    }

    #[test]
    fn rendering_shows_file_snippet_and_hint() {
        let source = SourceText::new("models/a.sql", "select * from {{ ref('nope') }}\n");
        let mut all = Diagnostics::default();
        all.push(
            ProjectDiagnostic::error("strata::unknown_ref", "unknown model 'nope'")
                .at(&source, 1, 18)
                .with_hint("did you mean 'a'?"),
        );
        let text = all.render(false);
        assert!(text.contains("models/a.sql:1:18"), "{text}");
        assert!(text.contains("unknown model 'nope'"), "{text}");
        assert!(text.contains("did you mean 'a'?"), "{text}");
        assert!(text.contains("select * from"), "{text}");
    }
}
