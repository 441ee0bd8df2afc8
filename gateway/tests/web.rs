//! The web client as the node serves it: the app's files embedded in the
//! binary, with content types, ETags, cache rules and a strict
//! Content-Security-Policy, page paths falling back to the app, and the API
//! and operators' paths never shadowed by it.
#![allow(clippy::unwrap_used)]

mod common;

use actix_web::web::Bytes;
use awc::http::Method;
use common::TestServer;

#[actix_web::test]
async fn the_root_serves_the_app_with_a_strict_content_security_policy() {
    let server = TestServer::start().await;
    let index = server.get_full("/", None).await;
    assert_eq!(index.status, 200);
    assert_eq!(index.content_type(), "text/html; charset=utf-8");
    let html = std::str::from_utf8(&index.body).unwrap();
    assert!(html.contains(r#"<script type="module" src="/assets/js/main.js">"#), "{html}");
    assert!(html.contains(r#"<link rel="manifest" href="/manifest.webmanifest">"#), "{html}");
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    assert_eq!(index.header("x-content-type-options"), Some("nosniff"));

    let csp = index.header("content-security-policy").unwrap();
    let host = server.base.trim_start_matches("http://");
    assert!(csp.starts_with("default-src 'self'; script-src 'self'"), "{csp}");
    assert!(csp.contains(&format!("connect-src 'self' ws://{host} wss://{host};")), "{csp}");
    assert!(csp.contains("object-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
}

#[actix_web::test]
async fn modules_styles_and_the_manifest_have_their_content_types() {
    let server = TestServer::start().await;
    let module = server.get_full("/assets/js/main.js", None).await;
    assert_eq!(module.status, 200);
    assert_eq!(module.content_type(), "text/javascript; charset=utf-8");
    assert!(std::str::from_utf8(&module.body).unwrap().contains("import "));
    let style = server.get_full("/assets/css/base.css", None).await;
    assert_eq!((style.status, style.content_type()), (200, "text/css; charset=utf-8"));
    let icon = server.get_full("/assets/icons/icon-192.png", None).await;
    assert_eq!((icon.status, icon.content_type()), (200, "image/png"));
    assert!(icon.body.starts_with(b"\x89PNG"));

    let manifest = server.get_full("/manifest.webmanifest", None).await;
    assert_eq!((manifest.status, manifest.content_type()), (200, "application/manifest+json"));
    let manifest = manifest.json();
    assert_eq!(manifest["start_url"], "/");
    assert_eq!(manifest["display"], "standalone");
    for icon in manifest["icons"].as_array().unwrap() {
        let src = icon["src"].as_str().unwrap();
        assert_eq!(server.get_full(src, None).await.status, 200, "manifest icon {src}");
    }
}

#[actix_web::test]
async fn a_matching_etag_gets_304_without_a_body() {
    let server = TestServer::start().await;
    let first = server.get_full("/assets/js/main.js", None).await;
    let etag = first.header("etag").unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "strong ETag: {etag}");

    let again = server.request(Method::GET, "/assets/js/main.js", &[("if-none-match", &etag)], Bytes::new()).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let weak = format!("W/{etag}");
    let listed = format!("\"other\", {weak}");
    let again = server.request(Method::GET, "/assets/js/main.js", &[("if-none-match", &listed)], Bytes::new()).await;
    assert_eq!(again.status, 304, "any listed tag, weakly compared");

    let stale =
        server.request(Method::GET, "/assets/js/main.js", &[("if-none-match", "\"stale\"")], Bytes::new()).await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, first.body);
}

#[actix_web::test]
async fn the_service_worker_names_the_build_and_the_shell_and_is_never_cached() {
    let server = TestServer::start().await;
    let worker = server.get_full("/sw.js", None).await;
    assert_eq!((worker.status, worker.content_type()), (200, "text/javascript; charset=utf-8"));
    assert_eq!(worker.header("cache-control"), Some("no-cache"));
    let text = std::str::from_utf8(&worker.body).unwrap();
    let mut lines = text.lines();
    let build = lines.next().unwrap();
    assert!(build.starts_with("const BUILD = \"") && build.len() == "const BUILD = \"\";".len() + 16, "{build}");
    let shell: Vec<String> =
        serde_json::from_str(lines.next().unwrap().trim_start_matches("const SHELL = ").trim_end_matches(';')).unwrap();
    assert!(shell.contains(&"/".to_string()) && shell.contains(&"/assets/js/main.js".to_string()), "{shell:?}");
    assert!(!shell.iter().any(|path| path.ends_with("sw.js") || path.ends_with("index.html")), "{shell:?}");
    for path in &shell {
        assert_eq!(server.get_full(path, None).await.status, 200, "shell file {path}");
    }
}

/// What a browser sends when it navigates to a page.
const NAVIGATION: (&str, &str) = ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8");

#[actix_web::test]
async fn page_paths_fall_back_to_the_app_for_browsers_but_missing_files_are_404() {
    let server = TestServer::start().await;
    let index = server.get_full("/", None).await;
    for page in ["/login", "/chats/7263548651380510721", "/friends"] {
        let response = server.request(Method::GET, page, &[NAVIGATION], Bytes::new()).await;
        assert_eq!((response.status, response.content_type()), (200, "text/html; charset=utf-8"), "{page}");
        assert_eq!(response.body, index.body, "{page}");
        // A script or API client asking for something else gets the problem.
        server.get_full(page, None).await.assert_problem(404, "not_found");
    }
    for missing in ["/assets/js/missing.js", "/favicon.ico"] {
        server.request(Method::GET, missing, &[NAVIGATION], Bytes::new()).await.assert_problem(404, "not_found");
    }
}

#[actix_web::test]
async fn the_api_and_the_operators_paths_are_never_the_app() {
    let server = TestServer::start().await;
    for path in ["/api/v1/unknown", "/api/v1/chats/1/nothing", "/api", "/api/v2/chats", "/metrics/extra", "/healthz/x"]
    {
        server.get_full(path, None).await.assert_problem(404, "not_found");
        server.request(Method::GET, path, &[NAVIGATION], Bytes::new()).await.assert_problem(404, "not_found");
    }
    // Methods other than GET and HEAD are not the app's either.
    server.call("POST", "/friends", None, None).await.assert_problem(404, "not_found");
    let (status, _, body) = server.get_raw("/healthz", None).await;
    assert_eq!((status, &body[..]), (200, &b"ok"[..]));
    let head = server.request(Method::HEAD, "/", &[], Bytes::new()).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}
