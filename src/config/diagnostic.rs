//! Config errors that point at the exact place in the file.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a config file, located by line and column (both 1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, such as `tokens.acme.algorithm`; empty for whole-file errors.
    pub key_path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key_path.is_empty() {
            write!(f, "{}: ", self.key_path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one file, so users fix them all in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects diagnostics against one source text.
pub struct Collector<'a> {
    file: &'a Path,
    text: &'a str,
    found: Vec<Diagnostic>,
}

impl<'a> Collector<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Collector { file, text, found: Vec::new() }
    }

    /// Records a problem at a byte span of the source.
    pub fn error(&mut self, span: Range<usize>, key_path: impl Into<String>, message: impl Into<String>) {
        let (line, column) = line_column(self.text, span.start);
        self.found.push(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            key_path: key_path.into(),
            message: message.into(),
        });
    }

    pub fn len(&self) -> usize {
        self.found.len()
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Drops the problems recorded after the first `kept` that `already_reported` says were
    /// reported in another form.
    pub fn forget_after(&mut self, kept: usize, already_reported: impl Fn(&Diagnostic) -> bool) {
        let mut index = 0;
        self.found.retain(|d| {
            index += 1;
            index <= kept || !already_reported(d)
        });
    }

    /// The problems found when the file could not be checked to the end; never empty.
    pub fn failed(mut self) -> ConfigErrors {
        if self.found.is_empty() {
            self.error(0..0, "", "the file could not be read as a token-sidecar config");
        }
        match self.finish() {
            Err(errors) => errors,
            Ok(()) => ConfigErrors(Vec::new()),
        }
    }

    /// All problems, in file order.
    pub fn finish(mut self) -> Result<(), ConfigErrors> {
        self.found.sort_by_key(|d| (d.line, d.column));
        if self.found.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(self.found))
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 11), (2, 6));
    }
}
