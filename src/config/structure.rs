//! The structural pass over `sidecar.toml`: TOML syntax, unknown keys and wrong types.
//!
//! serde stops at the first problem, and one misspelled key would hide every other mistake in
//! the file. So the pass repairs as it goes: each structural error is recorded, the offending
//! entry is taken out of the parsed document (or, for a required key, stood in for by an empty
//! string), and the document is deserialized again. What survives is checked for meaning like
//! any other file, so `check` reports everything in one run. The key paths that were repaired
//! are returned so the semantic pass does not report the same key a second time.

use std::borrow::Cow;

use serde_path_to_error::Segment;
use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use super::diagnostic::Collector;
use super::raw::RawConfig;

/// More repairs than any real file needs; a bound so a pathological file cannot loop long.
const MAX_REPAIRS: usize = 200;

/// One step of a key path into the parsed document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Key paths (as written in diagnostics) that the structural pass already reported.
#[derive(Debug, Default)]
pub struct Repaired(Vec<String>);

impl Repaired {
    /// Whether a diagnostic at `key_path` is about a key already reported (or inside one).
    pub fn covers(&self, key_path: &str) -> bool {
        self.0.iter().any(|r| {
            key_path == r
                || key_path.strip_prefix(r.as_str()).is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    }

    /// Whether a semantic diagnostic repeats a structural one: it is at or inside a repaired
    /// key, or it says a key of its table is missing (`missing `ttl``) when that key was
    /// taken out for its type, or when a misspelling of it was reported as unknown.
    pub fn covers_diagnostic(&self, key_path: &str, message: &str) -> bool {
        if self.covers(key_path) {
            return true;
        }
        let Some(missing) = message.strip_prefix("missing `").and_then(|m| m.split('`').next()) else {
            return false;
        };
        self.0
            .iter()
            .filter_map(|r| r.strip_prefix(key_path)?.strip_prefix('.'))
            .any(|sibling| !sibling.contains(['.', '[']) && (sibling == missing || looks_like(sibling, missing)))
    }
}

/// Whether `a` is a likely misspelling of `b`: at most two single-character edits apart.
fn looks_like(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 2 {
        return false;
    }
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()] <= 2
}

/// Parses `text` into the file's shape, recording every structural problem in `c`.
///
/// Returns `None` when the TOML itself does not parse (meaning checks on a half-read file
/// would mislead) or when a problem could not be repaired.
pub fn parse(text: &str, c: &mut Collector<'_>) -> (Option<RawConfig>, Repaired) {
    let mut repaired = Repaired::default();
    let (mut root, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        // The parser often reports one mistake several ways on the same line; the first
        // report of each line is the one that names it.
        let mut lines = std::collections::BTreeSet::new();
        for e in &syntax_errors {
            let span = e.span().unwrap_or(0..0);
            if lines.insert(super::diagnostic::line_column(text, span.start).0) {
                c.error(span, "", e.message().trim());
            }
        }
        return (None, repaired);
    }
    for _ in 0..MAX_REPAIRS {
        let attempt = toml::de::Deserializer::from(root.clone());
        let error = match serde_path_to_error::deserialize::<_, RawConfig>(attempt) {
            Ok(raw) => return (Some(raw), repaired),
            Err(e) => e,
        };
        let mut steps = steps_of(error.path());
        let inner = error.into_inner();
        let message = inner.message().trim().replace("expected i64", "expected an integer");
        let span = inner.span().unwrap_or(0..0);
        let repair = if let Some(field) = quoted_after(&message, "unknown field `") {
            push_unless_last(&mut steps, field);
            Repair::Remove
        } else if let Some(field) = quoted_after(&message, "missing field `") {
            push_unless_last(&mut steps, field);
            Repair::StandIn
        } else {
            Repair::Remove
        };
        let key_path = display(&steps);
        if !repaired.covers(&key_path) {
            c.error(span.clone(), &key_path, message);
        }
        let done = match repair {
            Repair::Remove => remove(root.get_mut(), &steps),
            Repair::StandIn => stand_in(root.get_mut(), &steps, span),
        };
        repaired.0.push(key_path);
        if !done {
            return (None, repaired);
        }
    }
    (None, repaired)
}

enum Repair {
    /// Take the entry out, as if it had not been written.
    Remove,
    /// A required key is missing (or was removed): put an empty string in its place, which
    /// the semantic pass would refuse but [`Repaired`] keeps quiet.
    StandIn,
}

/// The steps of serde's path, without the private fields `Spanned` and datetimes add.
fn steps_of(path: &serde_path_to_error::Path) -> Vec<Step> {
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Map { key } if key.starts_with("$__") => None,
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Enum { variant } => Some(Step::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect()
}

/// `tokens.acme.claims`, `routes[2].host`: the form every diagnostic uses.
fn display(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// serde's path names the unknown key itself, but not a missing one; make both name it.
fn push_unless_last(steps: &mut Vec<Step>, field: String) {
    if steps.last() != Some(&Step::Key(field.clone())) {
        steps.push(Step::Key(field));
    }
}

/// The text between `prefix` and the next backtick.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let start = message.find(prefix)? + prefix.len();
    let len = message.get(start..)?.find('`')?;
    message.get(start..start + len).map(str::to_string)
}

/// The table or array that holds the last step.
fn parent_mut<'a, 'i>(root: &'a mut DeTable<'i>, steps: &[Step]) -> Option<&'a mut DeValue<'i>> {
    let (first, rest) = steps.split_first()?;
    let Step::Key(first) = first else { return None };
    let mut value = root.get_mut(first.as_str())?.get_mut();
    for step in rest {
        value = match (value, step) {
            (DeValue::Table(t), Step::Key(k)) => t.get_mut(k.as_str())?.get_mut(),
            (DeValue::Array(a), Step::Index(i)) => a.get_mut(*i)?.get_mut(),
            _ => return None,
        };
    }
    Some(value)
}

fn remove(root: &mut DeTable<'_>, steps: &[Step]) -> bool {
    match steps {
        [] => false,
        [Step::Key(k)] => root.remove(k.as_str()).is_some(),
        [Step::Index(_)] => false,
        [parents @ .., last] => match (parent_mut(root, parents), last) {
            (Some(DeValue::Table(t)), Step::Key(k)) => t.remove(k.as_str()).is_some(),
            (Some(DeValue::Array(a)), Step::Index(i)) if *i < a.len() => {
                *a = std::mem::replace(a, DeArray::new())
                    .into_iter()
                    .enumerate()
                    .filter_map(|(n, item)| (n != *i).then_some(item))
                    .collect();
                true
            }
            _ => false,
        },
    }
}

fn stand_in(root: &mut DeTable<'_>, steps: &[Step], span: std::ops::Range<usize>) -> bool {
    let Some((Step::Key(k), parents)) = steps.split_last() else { return false };
    let Some(DeValue::Table(t)) = parent_mut(root, parents) else { return false };
    if t.contains_key(k.as_str()) {
        // Present but still "missing": a shape we cannot repair; stop rather than loop.
        return false;
    }
    let key = Spanned::new(span.clone(), Cow::Owned(k.clone()));
    t.insert(key, Spanned::new(span, DeValue::String(Cow::Borrowed(""))));
    true
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn problems(text: &str) -> (bool, Vec<String>) {
        let mut c = Collector::new(Path::new("t.toml"), text);
        let (raw, _) = parse(text, &mut c);
        let found = match c.finish() {
            Ok(()) => Vec::new(),
            Err(e) => {
                e.0.into_iter().map(|d| format!("{}:{} {}: {}", d.line, d.column, d.key_path, d.message)).collect()
            }
        };
        (raw.is_some(), found)
    }

    #[test]
    fn every_unknown_key_and_wrong_type_is_reported_and_the_rest_still_parses() {
        let (parsed, found) = problems(
            "[proxy]\nlisen = \"x\"\nrequest_timeout = 5\n[admin]\nlisten = \"127.0.0.1:1\"\n[[routes]]\nhost = 42\n[[routes]]\nhots = \"a\"\nmethods = [\"GET\", 5]\n",
        );
        assert!(parsed, "the repaired document deserializes");
        let keys: Vec<&str> = found.iter().map(|f| f.split(' ').nth(1).unwrap_or("")).collect();
        assert_eq!(
            keys,
            [
                "proxy.lisen:",
                "proxy.request_timeout:",
                "routes[0].host:",
                "routes[1].host:",
                "routes[1].hots:",
                "routes[1].methods[1]:"
            ],
            "{found:#?}"
        );
        assert!(found[1].starts_with("3:19 "), "located at the value: {found:?}");
        assert!(found[3].contains("missing field `host`"), "{found:?}");
    }

    #[test]
    fn a_required_key_of_the_wrong_type_is_reported_once() {
        let (parsed, found) = problems("[[routes]]\nhost = 42\n");
        assert!(parsed);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("routes[0].host: invalid type: integer `42`, expected a string"), "{found:?}");
    }

    #[test]
    fn every_syntax_error_is_reported_and_nothing_is_checked_further() {
        let (parsed, found) = problems("a = \nb = = 2\n[proxy\n");
        assert!(!parsed);
        let lines: Vec<&str> = found.iter().map(|f| f.split(':').next().unwrap_or("")).collect();
        assert_eq!(lines, ["1", "2", "3"], "one report per line: {found:?}");
    }

    #[test]
    fn a_missing_key_is_not_reported_again_when_it_was_removed_or_misspelled() {
        let repaired = Repaired(vec!["tokens.a.ttl".into(), "tokens.b.key_typ".into()]);
        assert!(repaired.covers_diagnostic("tokens.a", "missing `ttl` (how long each token is valid)"));
        assert!(repaired.covers_diagnostic("tokens.b", "missing `key_type` (one of ...)"));
        assert!(!repaired.covers_diagnostic("tokens.b", "missing `algorithm`"));
        assert!(!repaired.covers_diagnostic("tokens.c", "missing `ttl`"));
        assert!(looks_like("key_typ", "key_type") && looks_like("tll", "ttl") && !looks_like("kid", "ttl"));
    }

    #[test]
    fn repaired_paths_cover_their_children_only() {
        let repaired = Repaired(vec!["routes[1].host".into(), "tokens.a".into()]);
        assert!(repaired.covers("routes[1].host"));
        assert!(repaired.covers("tokens.a.key_file"));
        assert!(repaired.covers("tokens.a[0]"));
        assert!(!repaired.covers("tokens.ab"));
        assert!(!repaired.covers("routes[1]"));
        assert!(!repaired.covers("routes[10].host"));
    }
}
