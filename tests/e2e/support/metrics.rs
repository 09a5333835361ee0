//! `/metrics`: a strict parser of the Prometheus text exposition format, so every scrape also
//! checks the page is valid.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use http::StatusCode;

use super::client::admin_get;

/// `/metrics`, parsed (and checked to be valid exposition text).
pub async fn scrape(admin: SocketAddr) -> Metrics {
    let reply = admin_get(admin, "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    Metrics::parse(&reply.text()).unwrap_or_else(|e| panic!("/metrics is not valid exposition text: {e}"))
}

/// One sample line.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    /// Metric family name -> type, from `# TYPE` lines.
    pub types: BTreeMap<String, String>,
}

impl Metrics {
    /// Parses Prometheus text format 0.0.4 strictly: every non-comment line is
    /// `name{labels} value [timestamp]` or `name value [timestamp]`, `# TYPE` lines name a
    /// valid type, and every sample belongs to a declared family.
    pub fn parse(text: &str) -> Result<Metrics, String> {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let at = |msg: String| format!("line {}: {msg}: {line:?}", i + 1);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let words: Vec<&str> = comment.split_whitespace().collect();
                match words.first() {
                    Some(&"TYPE") => {
                        let [_, name, kind] = words[..] else { return Err(at("malformed # TYPE".into())) };
                        if !valid_metric_name(name) {
                            return Err(at(format!("invalid metric name {name:?}")));
                        }
                        if !matches!(kind, "counter" | "gauge" | "histogram" | "summary" | "untyped") {
                            return Err(at(format!("invalid type {kind:?}")));
                        }
                        if types.insert(name.to_string(), kind.to_string()).is_some() {
                            return Err(at(format!("second # TYPE for {name}")));
                        }
                    }
                    Some(&"HELP") if words.get(1).is_none_or(|n| !valid_metric_name(n)) => {
                        return Err(at("malformed # HELP".into()));
                    }
                    _ => {}
                }
                continue;
            }
            samples.push(parse_sample(line).map_err(at)?);
        }
        for s in &samples {
            let family = family_of(&s.name, &types);
            let Some(kind) = types.get(family) else {
                return Err(format!("sample {} has no # TYPE line", s.name));
            };
            if kind == "histogram" && s.name.ends_with("_bucket") && !s.labels.contains_key("le") {
                return Err(format!("histogram bucket {} without an le label", s.name));
            }
        }
        Ok(Metrics { samples, types })
    }

    /// The sum of every sample named `name` whose labels include all of `labels`
    /// (`None` when there is no such sample).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v)))
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// Like [`Metrics::value`], with absent counted as zero (for deltas).
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v)))
            .collect()
    }
}

fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    if types.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|k| k == "histogram" || k == "summary") {
                return base;
            }
        }
    }
    name
}

fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let close;
        loop {
            let Some(&(start, c)) = chars.peek() else { return Err("unterminated label set".into()) };
            if c == '}' {
                close = start;
                break;
            }
            let eq = inner[start..].find('=').ok_or("label without '='")? + start;
            let key = &inner[start..eq];
            let key_ok = key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !key_ok {
                return Err(format!("invalid label name {key:?}"));
            }
            if inner.as_bytes().get(eq + 1) != Some(&b'"') {
                return Err(format!("label {key} value is not quoted"));
            }
            while chars.peek().is_some_and(|&(i, _)| i <= eq + 1) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    None => return Err("unterminated label value".into()),
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((_, c)) => value.push(c),
                }
            }
            if labels.insert(key.to_string(), value).is_some() {
                return Err(format!("label {key} given twice"));
            }
            if chars.peek().is_some_and(|&(_, c)| c == ',') {
                chars.next();
            }
        }
        rest = &inner[close + 1..];
    }
    let mut fields = rest.split_whitespace();
    if !rest.starts_with(' ') {
        return Err("no space before the value".into());
    }
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|e| format!("timestamp {ts:?}: {e}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing text after the value".into());
    }
    Ok(Sample { name: name.to_string(), labels, value })
}
