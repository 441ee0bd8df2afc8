//! The web client: the files of `web/app/`, embedded in the binary at build
//! time, served at `/` with content types, ETags, cache rules and a strict
//! Content-Security-Policy; unknown page paths asked for as HTML (browser
//! navigations to client-side routes) get the app's `index.html`, never
//! the API or operators' paths.
//!
//! The files are embedded by `rust-embed` with `debug-embed`, so debug and
//! release binaries serve the same bytes (each file is an `include_bytes!`:
//! editing one rebuilds the gateway). The service worker, `/sw.js`, is
//! served with a generated prologue naming the build (a hash of every file)
//! and the app shell to precache, so any change to the app installs a new
//! worker and a fresh cache.

use std::collections::HashMap;
use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, guard, web};
use rust_embed::Embed;
use sha2::{Digest, Sha256};

use crate::errors::ApiError;

/// The app's files, from `web/app/` (paths relative to it, `/`-separated).
#[derive(Embed)]
#[folder = "../web/app/"]
struct AppFiles;

/// The page every client-side route serves.
const INDEX: &str = "index.html";
/// The service worker; served from the root so its scope is the whole app.
const SERVICE_WORKER: &str = "sw.js";
/// Paths that belong to the API or the operators, never to the app.
const RESERVED_PREFIXES: [&str; 4] = ["/api", "/metrics", "/healthz", "/readyz"];
/// For files whose URL carries no version: always revalidate (cheap with the ETag).
const REVALIDATE: &str = "no-cache";
/// Icons change rarely and a stale one harms nothing.
const ICON_CACHE: &str = "public, max-age=86400";

/// Registers the app's routes: `GET` and `HEAD` of any path the routes
/// registered before did not take. Register it after the API and ops routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/{path:.*}", web::route().guard(guard::Any(guard::Get()).or(guard::Head())).to(serve));
}

/// One file ready to serve.
struct Asset {
    body: Vec<u8>,
    etag: String,
    content_type: &'static str,
    cache_control: &'static str,
}

/// Every file by path, built once from the embedded files.
static SITE: LazyLock<HashMap<String, Asset>> = LazyLock::new(build_site);

fn build_site() -> HashMap<String, Asset> {
    let mut paths: Vec<String> = AppFiles::iter().map(|path| path.into_owned()).collect();
    paths.sort();
    let mut build = Sha256::new();
    let mut site = HashMap::new();
    for path in &paths {
        let Some(file) = AppFiles::get(path) else { continue };
        let hash = file.metadata.sha256_hash();
        build.update(path.as_bytes());
        build.update([0]);
        build.update(hash);
        site.insert(path.clone(), asset(path, file.data.into_owned(), hash));
    }
    let build = hex(&build.finalize()[..8]);
    if let Some(worker) = site.get_mut(SERVICE_WORKER) {
        let shell: Vec<String> = paths
            .iter()
            .filter(|path| path.as_str() != SERVICE_WORKER)
            .map(|path| if path == INDEX { "/".to_string() } else { format!("/{path}") })
            .collect();
        let shell = serde_json::to_string(&shell).unwrap_or_else(|_| "[]".into());
        let mut body = format!("const BUILD = \"{build}\";\nconst SHELL = {shell};\n").into_bytes();
        body.extend_from_slice(&worker.body);
        let hash: [u8; 32] = Sha256::digest(&body).into();
        *worker = asset(SERVICE_WORKER, body, hash);
    }
    site
}

fn asset(path: &str, body: Vec<u8>, hash: [u8; 32]) -> Asset {
    let extension = path.rsplit_once('.').map(|(_, ext)| ext).unwrap_or_default();
    let cache_control = if path.starts_with("assets/icons/") { ICON_CACHE } else { REVALIDATE };
    Asset { body, etag: format!("\"{}\"", hex(&hash[..16])), content_type: content_type(extension), cache_control }
}

fn content_type(extension: &str) -> &'static str {
    match extension {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves a file of the app, or `index.html` for `/` and for a page path (no extension) asked for as HTML.
async fn serve(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let path = req.path();
    let reserved = RESERVED_PREFIXES
        .iter()
        .any(|prefix| path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')));
    if reserved {
        return Err(ApiError::NotFound);
    }
    let relative = path.trim_start_matches('/');
    let asset = match SITE.get(relative) {
        Some(asset) => asset,
        None if relative.is_empty() || (is_page(relative) && accepts_html(&req)) => {
            SITE.get(INDEX).ok_or(ApiError::NotFound)?
        }
        None => return Err(ApiError::NotFound),
    };
    let not_modified = etag_matches(&req, &asset.etag);
    let mut response = if not_modified { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    response
        .insert_header((header::ETAG, asset.etag.as_str()))
        .insert_header((header::CACHE_CONTROL, asset.cache_control))
        .insert_header((header::CONTENT_SECURITY_POLICY, content_security_policy(&req, &cluster_sockets(&req))))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    if not_modified {
        return Ok(response.finish());
    }
    Ok(response.content_type(asset.content_type).body(asset.body.clone()))
}

/// A client-side route: a path whose last segment has no file extension.
fn is_page(relative: &str) -> bool {
    !relative.rsplit('/').next().unwrap_or_default().contains('.')
}

/// A browser navigating (it asks for HTML); API clients and scripts asking
/// for anything else get the 404 problem for an unknown path.
fn accepts_html(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("text/html"))
}

/// `If-None-Match` names the current ETag (weak comparison, as for GET).
fn etag_matches(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

/// Cluster mode: the WebSocket origins of the live nodes, where the page
/// may be sent to connect (` ws://host:port`, each with a leading space).
fn cluster_sockets(req: &HttpRequest) -> String {
    let Some(state) = req.app_data::<web::Data<crate::state::AppState>>() else { return String::new() };
    let mut sockets = String::new();
    for url in state.engine.node_urls() {
        let socket = match url.strip_prefix("https://") {
            Some(host) => format!("wss://{host}"),
            None => url.strip_prefix("http://").map(|host| format!("ws://{host}")).unwrap_or_default(),
        };
        if !socket.is_empty() && socket.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]/".contains(&b)) {
            sockets.push(' ');
            sockets.push_str(&socket);
        }
    }
    sockets
}

/// Scripts, styles, workers and connections from this origin only; the
/// WebSocket of the same host is named explicitly for browsers whose
/// `'self'` does not cover `ws:`/`wss:`, and so are the other nodes of a
/// cluster (`cluster_sockets`), which a page may be sent to.
fn content_security_policy(req: &HttpRequest, cluster_sockets: &str) -> HeaderValue {
    let host =
        req.headers().get(header::HOST).and_then(|value| value.to_str().ok()).filter(|host| {
            !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    let sockets = host.map(|host| format!(" ws://{host} wss://{host}")).unwrap_or_default() + cluster_sockets;
    let policy = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'{sockets}; worker-src 'self'; manifest-src 'self'; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"))
}
