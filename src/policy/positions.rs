//! Where in a request a token may be written: a route's `substitute_in`.
//!
//! A token is published when it is written where the upstream shows it to others (an agent
//! told to "post `{/github_token}` as a comment"). A route can say its tokens go only into
//! some headers, the query, the path, the body, or the strings at given JSON Pointers of a
//! JSON body; a placeholder of a bound token found anywhere else refuses the request (403
//! `placeholder_not_allowed_here`) before anything is forwarded.
//!
//! The scanners that find placeholders are not changed: each part of the request is
//! substituted through a [`Placed`] resolver that knows which part it is, and refuses a
//! restricted token outside its places before asking the request's token resolver. JSON
//! Pointers need the body parsed: a whole (buffered) body with a JSON content type is split
//! into the strings the pointers name and the rest, each judged on its own. A body that is
//! streamed (larger than `max_buffered_body`), not JSON, or not valid JSON has no such
//! strings: there a restricted token is allowed only where the route allows `body`.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderName};
use serde_json::value::RawValue;

use crate::config::{Position, RouteDefinition};
use crate::error::ProxyError;
use crate::substitute::{
    substitute_header_map, substitute_header_map_by_name, substitute_uri_within, Bounded, RefusalKind, Refused,
    Resolution, Resolve, OUTSIDE_REGIONS,
};

/// Deepest JSON nesting walked for pointers (serde_json's own parse limit).
const MAX_DEPTH: usize = 128;

/// Where one restricted token may go, compiled.
#[derive(Debug, Default)]
struct Allowed {
    headers: bool,
    header_names: Vec<HeaderName>,
    query: bool,
    path: bool,
    body: bool,
    /// Indexes into the route's pointer list.
    pointers: Vec<usize>,
    /// As configured, for messages.
    written: Vec<String>,
}

/// A route's `substitute_in`, ready for the request path.
#[derive(Debug, Default)]
pub struct RoutePositions {
    /// Placeholder names (tokens and aliases) whose token is restricted.
    restricted: Vec<(Box<str>, Arc<Allowed>)>,
    /// Every JSON Pointer the route names; a body region's index is its place here.
    pointers: Vec<String>,
    /// Header names some restriction names, or the route sets itself.
    named_headers: Vec<HeaderName>,
    /// Headers the route's own `set_headers` writes: the operator's templates go where the
    /// operator put them.
    set_headers: Vec<HeaderName>,
}

impl RoutePositions {
    /// The positions of `route`, or `None` when its tokens may be written anywhere.
    pub fn compile(route: &RouteDefinition) -> Option<Arc<RoutePositions>> {
        let restrictions = &route.policy.substitute_in;
        if restrictions.is_empty() {
            return None;
        }
        let mut rules = RoutePositions {
            set_headers: route.set_headers.iter().map(|(n, _)| n.clone()).collect(),
            ..RoutePositions::default()
        };
        let mut by_token: Vec<(&str, Arc<Allowed>)> = Vec::new();
        for (token, places) in restrictions {
            let mut allowed =
                Allowed { written: places.iter().map(ToString::to_string).collect(), ..Allowed::default() };
            for place in places {
                match place {
                    Position::Headers => allowed.headers = true,
                    Position::Header(name) => {
                        allowed.header_names.push(name.clone());
                        if !rules.named_headers.contains(name) {
                            rules.named_headers.push(name.clone());
                        }
                    }
                    Position::Query => allowed.query = true,
                    Position::Path => allowed.path = true,
                    Position::Body => allowed.body = true,
                    Position::Json(pointer) => {
                        let index = match rules.pointers.iter().position(|p| p == pointer) {
                            Some(i) => i,
                            None => {
                                rules.pointers.push(pointer.clone());
                                rules.pointers.len() - 1
                            }
                        };
                        allowed.pointers.push(index);
                    }
                }
            }
            by_token.push((token, Arc::new(allowed)));
        }
        for name in &rules.set_headers {
            if !rules.named_headers.contains(name) {
                rules.named_headers.push(name.clone());
            }
        }
        for (placeholder, token) in &route.bindings {
            if let Some((_, allowed)) = by_token.iter().find(|(t, _)| *t == token.as_str()) {
                rules.restricted.push((placeholder.as_str().into(), Arc::clone(allowed)));
            }
        }
        Some(Arc::new(rules))
    }

    /// The restriction of a placeholder name (`NAME` or `NAME.field`), if its token has one.
    fn restriction(&self, name: &str) -> Option<&Arc<Allowed>> {
        let find = |n: &str| self.restricted.iter().find(|(p, _)| &**p == n).map(|(_, a)| a);
        find(name).or_else(|| name.rsplit_once('.').and_then(|(token, _)| find(token)))
    }
}

/// A part of the request.
#[derive(Debug, Clone)]
enum Place {
    /// A header named in some rule (or set by the route), or `None` for any other header
    /// (whose name is then in [`Placed::current_header`]).
    Header(Option<HeaderName>),
    Path,
    Query,
    Body,
}

/// The refusal a request met, for a message that says where and what is allowed.
#[derive(Debug)]
struct Refusal {
    name: String,
    place: String,
    allowed: String,
}

/// A resolver for one part of the request.
pub struct Placed {
    tokens: Arc<dyn Resolve>,
    rules: Arc<RoutePositions>,
    place: Place,
    /// For a JSON body: whether it may be split into pointer regions.
    json: bool,
    /// The body region being substituted.
    region: AtomicUsize,
    /// For headers no rule names: the one being substituted, for messages.
    current_header: Mutex<Option<HeaderName>>,
    refusal: Arc<Mutex<Option<Refusal>>>,
}

impl Placed {
    fn allows(&self, allowed: &Allowed) -> bool {
        match &self.place {
            Place::Header(name) => {
                allowed.headers
                    || name
                        .as_ref()
                        .is_some_and(|n| allowed.header_names.contains(n) || self.rules.set_headers.contains(n))
            }
            Place::Path => allowed.path,
            Place::Query => allowed.query,
            Place::Body => {
                let region = self.region.load(Ordering::Relaxed);
                allowed.body || (region != OUTSIDE_REGIONS && allowed.pointers.contains(&region))
            }
        }
    }

    fn describe(&self) -> String {
        match &self.place {
            Place::Header(Some(name)) => format!("header {name}"),
            Place::Header(None) => match self.current_header.lock().ok().and_then(|n| n.clone()) {
                Some(name) => format!("header {name}"),
                None => "a header".to_string(),
            },
            Place::Path => "the path".to_string(),
            Place::Query => "the query".to_string(),
            Place::Body => match self.rules.pointers.get(self.region.load(Ordering::Relaxed)) {
                Some(pointer) => format!("the body (the JSON string at {pointer})"),
                None => "the body".to_string(),
            },
        }
    }
}

impl Resolve for Placed {
    fn resolve(&self, name: &str) -> Resolution {
        if let Some(allowed) = self.rules.restriction(name) {
            if !self.allows(allowed) {
                if let Ok(mut slot) = self.refusal.lock() {
                    slot.get_or_insert_with(|| Refusal {
                        name: name.to_string(),
                        place: self.describe(),
                        allowed: allowed.written.join(", "),
                    });
                }
                return Resolution::Refused(RefusalKind::NotAllowedHere);
            }
        }
        self.tokens.resolve(name)
    }

    fn body_regions(&self, body: &[u8]) -> Option<Vec<(Range<usize>, usize)>> {
        if !matches!(self.place, Place::Body) || !self.json || self.rules.pointers.is_empty() {
            return None;
        }
        json_regions(body, &self.rules.pointers)
    }

    fn enter_region(&self, region: usize) {
        self.region.store(region, Ordering::Relaxed);
    }
}

/// The resolvers of one request on a route with `substitute_in`.
pub struct PlacedResolvers {
    path: Placed,
    query: Placed,
    other_headers: Placed,
    named_headers: Vec<Placed>,
    body: Arc<Placed>,
    refusal: Arc<Mutex<Option<Refusal>>>,
}

impl PlacedResolvers {
    /// Resolvers over `tokens` for each part of a request whose headers are `headers` (a
    /// body is split by JSON Pointers only when its `Content-Type` says JSON).
    pub fn new(rules: &Arc<RoutePositions>, tokens: Arc<dyn Resolve>, headers: &HeaderMap) -> PlacedResolvers {
        let refusal = Arc::new(Mutex::new(None));
        let placed = |place: Place| Placed {
            tokens: Arc::clone(&tokens),
            rules: Arc::clone(rules),
            place,
            json: false,
            region: AtomicUsize::new(OUTSIDE_REGIONS),
            current_header: Mutex::new(None),
            refusal: Arc::clone(&refusal),
        };
        let mut body = placed(Place::Body);
        body.json = is_json(headers);
        PlacedResolvers {
            path: placed(Place::Path),
            query: placed(Place::Query),
            other_headers: placed(Place::Header(None)),
            named_headers: rules.named_headers.iter().map(|n| placed(Place::Header(Some(n.clone())))).collect(),
            body: Arc::new(body),
            refusal,
        }
    }

    /// The resolver for the header `name`.
    pub fn header(&self, name: &HeaderName) -> &dyn Resolve {
        let named = self.named_headers.iter().find(|p| matches!(&p.place, Place::Header(Some(n)) if n == name));
        match named {
            Some(placed) => placed,
            None => {
                if let Ok(mut current) = self.other_headers.current_header.lock() {
                    *current = Some(name.clone());
                }
                &self.other_headers
            }
        }
    }

    /// The resolver for the body (and its trailers).
    pub fn body(&self) -> Arc<dyn Resolve> {
        Arc::clone(&self.body) as Arc<dyn Resolve>
    }

    /// Substitutes a request target, its path and query each by its own rule, keeping the
    /// result within `max` bytes.
    pub fn substitute_target<'a>(&self, target: &'a str, max: usize) -> Result<std::borrow::Cow<'a, str>, Bounded> {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let new_path = substitute_uri_within(path, &self.path, max)?;
        let Some(query) = query else { return Ok(new_path) };
        let room = max.saturating_sub(new_path.len() + 1);
        let new_query = substitute_uri_within(query, &self.query, room)?;
        if matches!((&new_path, &new_query), (std::borrow::Cow::Borrowed(_), std::borrow::Cow::Borrowed(_))) {
            return Ok(std::borrow::Cow::Borrowed(target));
        }
        Ok(std::borrow::Cow::Owned(format!("{new_path}?{new_query}")))
    }

    /// Turns this request's refusal by position into an error that names the place and
    /// the allowed places.
    pub fn explainer(&self) -> Explainer {
        Explainer(Arc::clone(&self.refusal))
    }
}

/// Names the place of a refusal by position (see [`PlacedResolvers::explainer`]).
pub struct Explainer(Arc<Mutex<Option<Refusal>>>);

impl Explainer {
    /// `error`, with the place and the allowed places named when it is a refusal by position.
    pub fn explain(&self, error: ProxyError) -> ProxyError {
        let refused_here = matches!(&error, ProxyError::Refused(Refused { kind: RefusalKind::NotAllowedHere, .. }));
        if !refused_here {
            return error;
        }
        match self.0.lock().ok().and_then(|mut slot| slot.take()) {
            Some(r) => ProxyError::NotAllowedHere { name: r.name, place: r.place, allowed: r.allowed },
            None => error,
        }
    }
}

/// The resolvers of one request: its tokens, seen through the route's `substitute_in` when
/// it has one.
pub enum RequestResolvers {
    Anywhere(Arc<dyn Resolve>),
    Placed(Box<PlacedResolvers>),
}

impl RequestResolvers {
    pub fn new(tokens: Arc<dyn Resolve>, positions: Option<&Arc<RoutePositions>>, headers: &HeaderMap) -> Self {
        match positions {
            None => RequestResolvers::Anywhere(tokens),
            Some(rules) => RequestResolvers::Placed(Box::new(PlacedResolvers::new(rules, tokens, headers))),
        }
    }

    /// Substitutes the request target within `max` bytes.
    pub fn target<'a>(&self, target: &'a str, max: usize) -> Result<std::borrow::Cow<'a, str>, Bounded> {
        match self {
            RequestResolvers::Anywhere(tokens) => substitute_uri_within(target, tokens, max),
            RequestResolvers::Placed(placed) => placed.substitute_target(target, max),
        }
    }

    /// Substitutes the request headers within `max` bytes.
    pub fn headers(&self, headers: &mut HeaderMap, max: usize) -> Result<(), Bounded> {
        match self {
            RequestResolvers::Anywhere(tokens) => substitute_header_map(headers, &**tokens, max),
            RequestResolvers::Placed(placed) => substitute_header_map_by_name(headers, &|n| placed.header(n), max),
        }
    }

    /// The resolver of the body.
    pub fn body(&self) -> Arc<dyn Resolve> {
        match self {
            RequestResolvers::Anywhere(tokens) => Arc::clone(tokens),
            RequestResolvers::Placed(placed) => placed.body(),
        }
    }

    pub fn explainer(&self) -> Option<Explainer> {
        match self {
            RequestResolvers::Anywhere(_) => None,
            RequestResolvers::Placed(placed) => Some(placed.explainer()),
        }
    }
}

/// Whether `Content-Type` names JSON (`application/json`, `application/*+json`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Splits a JSON document into the string literals at `pointers` (region = the pointer's
/// index) and the rest ([`OUTSIDE_REGIONS`]), in order and covering `body`. `None` when the
/// body is not valid JSON.
pub fn json_regions(body: &[u8], pointers: &[String]) -> Option<Vec<(Range<usize>, usize)>> {
    let text = std::str::from_utf8(body).ok()?;
    let root: &RawValue = serde_json::from_str(text).ok()?;
    let mut found = Vec::new();
    let mut pointer = String::new();
    walk(root, text.as_ptr() as usize, &mut pointer, pointers, 0, &mut found)?;
    found.sort_by_key(|(range, _): &(Range<usize>, usize)| range.start);
    let mut regions = Vec::with_capacity(found.len() * 2 + 1);
    let mut at = 0;
    for (range, index) in found {
        if range.start > at {
            regions.push((at..range.start, OUTSIDE_REGIONS));
        }
        at = range.end;
        regions.push((range, index));
    }
    if at < body.len() {
        regions.push((at..body.len(), OUTSIDE_REGIONS));
    }
    Some(regions)
}

/// Collects the string literals under `raw` whose pointer is one of `pointers`. Only
/// subtrees some pointer reaches into are parsed.
fn walk(
    raw: &RawValue,
    base: usize,
    pointer: &mut String,
    pointers: &[String],
    depth: usize,
    found: &mut Vec<(Range<usize>, usize)>,
) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    let text = raw.get();
    let start = (text.as_ptr() as usize).checked_sub(base)?;
    let reached = |p: &String| p == pointer;
    match text.as_bytes().first()? {
        b'"' => {
            if let Some(index) = pointers.iter().position(reached) {
                found.push((start..start + text.len(), index));
            }
        }
        b'{' => {
            let members: std::collections::BTreeMap<std::borrow::Cow<'_, str>, &RawValue> =
                serde_json::from_str(text).ok()?;
            for (key, value) in members {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                if pointers.iter().any(|p| p.starts_with(pointer.as_str())) {
                    walk(value, base, pointer, pointers, depth + 1, found)?;
                }
                pointer.truncate(len);
            }
        }
        b'[' => {
            let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
            for (i, value) in items.into_iter().enumerate() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&i.to_string());
                if pointers.iter().any(|p| p.starts_with(pointer.as_str())) {
                    walk(value, base, pointer, pointers, depth + 1, found)?;
                }
                pointer.truncate(len);
            }
        }
        _ => {}
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions(body: &str, pointers: &[&str]) -> Option<Vec<(String, usize)>> {
        let pointers: Vec<String> = pointers.iter().map(|p| p.to_string()).collect();
        json_regions(body.as_bytes(), &pointers)
            .map(|r| r.into_iter().map(|(range, i)| (body[range].to_string(), i)).collect())
    }

    const OUT: usize = OUTSIDE_REGIONS;

    #[test]
    fn pointed_strings_become_regions_and_the_rest_covers_the_body() {
        let body = r#"{"b": {"t": "{/x}"}, "a": ["z", "y{/x}"], "t": 5}"#;
        let found = regions(body, &["/a/1", "/b/t", "/t"]).unwrap();
        assert_eq!(
            found,
            [
                (r#"{"b": {"t": "#.to_string(), OUT),
                (r#""{/x}""#.to_string(), 1),
                (r#"}, "a": ["z", "#.to_string(), OUT),
                (r#""y{/x}""#.to_string(), 0),
                (r#"], "t": 5}"#.to_string(), OUT),
            ],
            "a number at a pointer is no region"
        );
        let joined: String = found.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(joined, body);
    }

    #[test]
    fn escapes_keys_and_whole_documents() {
        let body = r#"{"a/b": "1", "m~n": "2", "a": {"b": "3"}}"#;
        let found = regions(body, &["/a~1b", "/m~0n"]).unwrap();
        let strings: Vec<&str> = found.iter().filter(|(_, i)| *i != OUT).map(|(s, _)| s.as_str()).collect();
        assert_eq!(strings, [r#""1""#, r#""2""#]);
        assert_eq!(regions(r#" "{/x}" "#, &[""]).unwrap()[1], (r#""{/x}""#.to_string(), 0));
        // Keys are never regions, even when they spell a pointed member.
        let keys = regions(r#"{"{/x}": "v"}"#, &["/{~1x}"]).unwrap();
        assert!(keys.iter().all(|(s, i)| *i == OUT || s == r#""v""#), "{keys:?}");
    }

    #[test]
    fn duplicate_keys_and_bad_documents() {
        // Only the member a JSON parser keeps (the last) is a region.
        let found = regions(r#"{"t": "{/x}", "t": "{/x}"}"#, &["/t"]).unwrap();
        assert_eq!(found.iter().filter(|(_, i)| *i == 0).count(), 1);
        assert_eq!(found.last().map(|(s, i)| (s.as_str(), *i)), Some(("}", OUT)));
        assert!(regions(r#"{"t": "{/x}""#, &["/t"]).is_none());
        assert!(regions("not json", &["/t"]).is_none());
        // Deep nesting is skipped without recursion, and walked no deeper than 128 levels.
        let deep = format!("{}\"x\"{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(regions(&deep, &["/0/0"]).unwrap().iter().all(|(_, i)| *i == OUT));
        assert!(regions(&deep, &["/0".repeat(200).as_str()]).is_none());
    }
}
