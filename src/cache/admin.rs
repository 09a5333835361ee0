//! The cache's admin endpoints: `GET /cache` (what is held, per route), `DELETE /cache`
//! (purge everything) and `DELETE /cache/ROUTE` (purge one route's entries).
//!
//! With the Redis backend a purge also retires the fleet's entries of the routes it names
//! (see [`super::shared`]): every sidecar stops answering from them within about a second.
//! The answer says whether Redis could be told (`"shared_purged"`); when it could not, only
//! this sidecar's entries are gone.
//!
//! Nothing here shows a key, a request or a stored body: only names, counts and sizes.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use super::store::Purge;
use super::{Purged, RouteCache};
use crate::admin::{json, text};
use crate::snapshot::Snapshot;

/// Answers a request for `/cache` or `/cache/...`.
pub async fn serve(method: &Method, path: &str, snapshot: &Snapshot) -> Response<Full<Bytes>> {
    let route = path.strip_prefix("/cache/").map(percent_decode);
    match (method, route) {
        (&Method::GET | &Method::HEAD, None) => json(&report(snapshot)),
        (&Method::DELETE, None) => {
            let purged = snapshot.cache.purge(Purge::All, &cached_routes(snapshot, None)).await;
            tracing::info!(purged = purged.removed, shared = ?purged.shared, "cache purged (admin)");
            json(&answer(serde_json::json!({ "purged": purged.removed }), purged))
        }
        (&Method::DELETE, Some(Some(name))) => {
            let cached = snapshot.compiled.iter().any(|c| c.cache.is_some() && *c.name == *name);
            if !cached {
                let mut r = json(&serde_json::json!({
                    "error": "unknown_route",
                    "message": format!("no cached route named {name:?}; GET /cache lists them"),
                }));
                *r.status_mut() = StatusCode::NOT_FOUND;
                return r;
            }
            let routes = cached_routes(snapshot, Some(&name));
            let purged = snapshot.cache.purge(Purge::Route(name.clone()), &routes).await;
            tracing::info!(route = %name, purged = purged.removed, shared = ?purged.shared, "cache purged for a route (admin)");
            json(&answer(serde_json::json!({ "route": name, "purged": purged.removed }), purged))
        }
        (_, Some(None)) => text(StatusCode::BAD_REQUEST, "the route name is not valid percent-encoded UTF-8\n"),
        (_, Some(Some(_))) => not_allowed("DELETE"),
        (_, None) => not_allowed("GET, HEAD, DELETE"),
    }
}

/// The cached routes of the snapshot, or those named `name`.
fn cached_routes(snapshot: &Snapshot, name: Option<&str>) -> Vec<std::sync::Arc<RouteCache>> {
    let routes = snapshot.compiled.iter().filter_map(|c| c.cache.as_ref());
    routes.filter(|rc| name.is_none_or(|n| *rc.name == *n)).cloned().collect()
}

/// A purge's answer, with `shared_purged` when the fleet's entries were to be retired too.
fn answer(mut body: serde_json::Value, purged: Purged) -> serde_json::Value {
    if let (Some(shared), Some(fields)) = (purged.shared, body.as_object_mut()) {
        fields.insert("shared_purged".into(), shared.into());
    }
    body
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, &format!("only {allow}\n"));
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// `GET /cache`: the budget, what is held in total, and per cached route.
fn report(snapshot: &Snapshot) -> serde_json::Value {
    let usage = snapshot.cache.usage();
    let routes: Vec<serde_json::Value> = snapshot
        .compiled
        .iter()
        .filter_map(|c| c.cache.as_ref())
        .map(|rc| {
            let held = usage.routes.get(&rc.name).copied().unwrap_or_default();
            serde_json::json!({
                "route": &*rc.name,
                "entries": held.entries,
                "bytes": held.bytes,
                "ttl_seconds": rc.settings.ttl.as_secs_f64(),
            })
        })
        .collect();
    let (fetching, waiting) = snapshot.cache.coalescing();
    serde_json::json!({
        "backend": snapshot.cache.backend(),
        "max_bytes": snapshot.cache.max_bytes(),
        "bytes": usage.bytes,
        "entries": usage.entries,
        "fetching": fetching,
        "waiting": waiting,
        "waiting_on_fleet": snapshot.cache.waiting_on_fleet(),
        "routes": routes,
    })
}

/// Decodes `%XX` escapes (route names such as `routes[0]` arrive as `routes%5B0%5D`).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_are_percent_decoded() {
        assert_eq!(percent_decode("routes%5B0%5D").as_deref(), Some("routes[0]"));
        assert_eq!(percent_decode("lookup").as_deref(), Some("lookup"));
        assert_eq!(percent_decode("caf%C3%A9").as_deref(), Some("café"));
        for bad in ["%", "%4", "%zz", "%FF", "%C3"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }
}
