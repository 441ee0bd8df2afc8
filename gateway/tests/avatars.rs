//! Avatars through a real server: each allowed image type becomes square
//! PNG thumbnails without metadata, served publicly with an ETag and
//! immutable caching; the type comes from the bytes; truncated files,
//! decompression bombs, non-images and oversize uploads are refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Cursor;

use actix_web::web::Bytes;
use awc::http::Method;
use common::{RawResponse, TestServer, TestUser};
use gateway::avatars::{LARGE_SIZE, MAX_AVATAR_BYTES, SMALL_SIZE};
use image::codecs::gif::GifEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::webp::WebPEncoder;
use image::{DynamicImage, Frame, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use protocol::rest::AvatarUrls;

const RED: [u8; 3] = [220, 20, 20];
const BLUE: [u8; 3] = [20, 20, 220];

/// Chunk types a served thumbnail may contain: pixels only, no metadata.
const PIXEL_CHUNKS: [&[u8; 4]; 4] = [b"IHDR", b"PLTE", b"IDAT", b"IEND"];

// ---- images made in the test ----

/// A landscape picture: red left half, blue right half.
fn halves(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, _| Rgb(if x < width / 2 { RED } else { BLUE }))
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn png(width: u32, height: u32) -> Vec<u8> {
    encode(&DynamicImage::ImageRgb8(halves(width, height)), ImageFormat::Png)
}

/// A PNG whose pixels are noise, so it compresses badly (for truncation).
fn noisy_png(side: u32) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    let image = RgbImage::from_fn(side, side, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [a, b, c, _] = state.to_le_bytes();
        Rgb([a, b, c])
    });
    encode(&DynamicImage::ImageRgb8(image), ImageFormat::Png)
}

fn jpeg(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 95).encode_image(image).unwrap();
    out
}

/// A lossless WebP with transparency.
fn webp(width: u32, height: u32) -> Vec<u8> {
    let image = RgbaImage::from_fn(width, height, |x, _| {
        let [r, g, b] = if x < width / 2 { RED } else { BLUE };
        Rgba([r, g, b, 255])
    });
    let mut out = Vec::new();
    image.write_with_encoder(WebPEncoder::new_lossless(&mut out)).unwrap();
    out
}

/// A two-frame animated GIF: the first frame is the red/blue halves, the second all blue.
fn animated_gif(width: u32, height: u32) -> Vec<u8> {
    let first = RgbaImage::from_fn(width, height, |x, _| {
        let [r, g, b] = if x < width / 2 { RED } else { BLUE };
        Rgba([r, g, b, 255])
    });
    let [r, g, b] = BLUE;
    let second = RgbaImage::from_pixel(width, height, Rgba([r, g, b, 255]));
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut out);
        encoder.encode_frames([Frame::new(first), Frame::new(second)]).unwrap();
    }
    out
}

/// `jpeg` with an APP1 EXIF segment after SOI: the orientation tag set to
/// `orientation` and a recognisable private string.
fn with_exif(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0*\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one IFD entry
    tiff.extend_from_slice(&[0x01, 0x12, 0x00, 0x03, 0, 0, 0, 1]); // Orientation, SHORT, count 1
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // padding, no next IFD
    tiff.extend_from_slice(b"GPS 48.8584 N 2.2945 E parley-secret");
    let mut segment = b"Exif\0\0".to_vec();
    segment.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&u16::try_from(segment.len() + 2).unwrap().to_be_bytes());
    out.extend_from_slice(&segment);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// CRC-32 (IEEE) as PNG chunks use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = u32::try_from(data.len()).unwrap().to_be_bytes().to_vec();
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(&crc32(&chunk[4..]).to_be_bytes());
    chunk
}

/// A PNG of a few dozen bytes that declares `width`×`height` RGBA pixels.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8-bit RGBA, deflate, no interlace
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    out.extend(png_chunk(b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    out.extend(png_chunk(b"IEND", &[]));
    out
}

/// `png` with a `tEXt` chunk inserted after IHDR.
fn with_text_chunk(png: &[u8], text: &[u8]) -> Vec<u8> {
    let after_ihdr = 8 + 8 + 13 + 4;
    let mut out = png[..after_ihdr].to_vec();
    out.extend(png_chunk(b"tEXt", text));
    out.extend_from_slice(&png[after_ihdr..]);
    out
}

/// The chunk types of a PNG, in order.
fn chunk_types(png: &[u8]) -> Vec<[u8; 4]> {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let mut types = Vec::new();
    let mut at = 8;
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        types.push(png[at + 4..at + 8].try_into().unwrap());
        at += 12 + len;
    }
    types
}

// ---- requests ----

fn bearer(user: &TestUser) -> String {
    format!("Bearer {}", user.tokens.access_token)
}

async fn put_avatar(server: &TestServer, user: &TestUser, content_type: &str, bytes: Vec<u8>) -> RawResponse {
    let auth = bearer(user);
    let headers = [("authorization", auth.as_str()), ("content-type", content_type)];
    server.request(Method::PUT, "/api/v1/me/avatar", &headers, bytes).await
}

/// Uploads and expects success; returns the thumbnail URLs.
async fn upload(server: &TestServer, user: &TestUser, content_type: &str, bytes: Vec<u8>) -> AvatarUrls {
    let resp = put_avatar(server, user, content_type, bytes).await;
    assert_eq!(resp.status, 200, "upload: {}", resp.json());
    serde_json::from_value(resp.json()).unwrap()
}

/// Uploads and expects `invalid_image`; returns the problem's detail.
async fn refused(server: &TestServer, user: &TestUser, bytes: Vec<u8>) -> String {
    let resp = put_avatar(server, user, "application/octet-stream", bytes).await;
    let problem = resp.assert_problem(422, "invalid_image");
    problem["detail"].as_str().unwrap().to_string()
}

/// GETs a thumbnail (no authentication), checks the headers and that it is
/// a `size`-pixel square PNG with no metadata chunks; returns it and its ETag.
async fn thumbnail(server: &TestServer, url: &str, size: u32) -> (DynamicImage, String) {
    let resp = server.get_full(url, None).await;
    assert_eq!(resp.status, 200, "GET {url}");
    assert_eq!(resp.content_type(), "image/png");
    assert_eq!(resp.header("cache-control"), Some("public, max-age=31536000, immutable"));
    assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
    let etag = resp.header("etag").unwrap().to_string();
    assert!(etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'), "strong ETag: {etag}");
    for kind in chunk_types(&resp.body) {
        assert!(PIXEL_CHUNKS.contains(&&kind), "metadata chunk {:?} in {url}", String::from_utf8_lossy(&kind));
    }
    let image = image::load_from_memory_with_format(&resp.body, ImageFormat::Png).unwrap();
    assert_eq!((image.width(), image.height()), (size, size), "{url}");
    (image, etag)
}

/// Both thumbnails are squares of the documented sizes.
async fn check_both(server: &TestServer, urls: &AvatarUrls) -> DynamicImage {
    let (small, _) = thumbnail(server, &urls.small, SMALL_SIZE).await;
    thumbnail(server, &urls.large, LARGE_SIZE).await;
    small
}

/// The colour at (`x`, `y`) of a thumbnail, 8-bit RGB.
fn color_at(image: &DynamicImage, x: u32, y: u32) -> [u8; 3] {
    image.to_rgb8().get_pixel(x, y).0
}

fn is_close(color: [u8; 3], expected: [u8; 3]) -> bool {
    color.iter().zip(expected).all(|(&a, b)| a.abs_diff(b) <= 24)
}

/// Asserts the thumbnail shows the red/blue halves side by side.
fn assert_halves(image: &DynamicImage) {
    let (left, right) = (color_at(image, 2, 32), color_at(image, 61, 32));
    assert!(is_close(left, RED), "left {left:?}");
    assert!(is_close(right, BLUE), "right {right:?}");
}

async fn status_of(server: &TestServer, url: &str) -> u16 {
    server.get_full(url, None).await.status
}

// ---- good images ----

#[actix_web::test]
async fn a_png_becomes_square_thumbnails_of_its_centre() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let urls = upload(&server, &alice, "image/png", png(300, 200)).await;
    assert!(urls.small.starts_with(&format!("/api/v1/media/avatars/{}/", alice.id)), "{urls:?}");
    assert_ne!(urls.small, urls.large);
    let small = check_both(&server, &urls).await;
    assert_halves(&small);
}

#[actix_web::test]
async fn a_jpeg_loses_its_exif_block() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let upload_bytes = with_exif(&jpeg(&halves(200, 200)), 1);
    assert!(upload_bytes.windows(13).any(|w| w == b"parley-secret"));
    let urls = upload(&server, &alice, "image/jpeg", upload_bytes).await;
    let small = check_both(&server, &urls).await;
    assert_halves(&small);
    for url in [&urls.small, &urls.large] {
        let served = server.get_full(url, None).await.body;
        assert!(!served.windows(13).any(|w| w == b"parley-secret"), "EXIF bytes in {url}");
        assert!(!chunk_types(&served).contains(b"eXIf"));
    }
}

#[actix_web::test]
async fn a_jpeg_is_turned_upright_by_its_exif_orientation_before_the_exif_goes() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    // Orientation 6: the stored pixels must be turned 90° clockwise to be
    // upright, so the red left half ends up on top.
    let urls = upload(&server, &alice, "image/jpeg", with_exif(&jpeg(&halves(200, 200)), 6)).await;
    let (small, _) = thumbnail(&server, &urls.small, SMALL_SIZE).await;
    let (top, bottom) = (color_at(&small, 32, 2), color_at(&small, 32, 61));
    assert!(is_close(top, RED), "top {top:?}");
    assert!(is_close(bottom, BLUE), "bottom {bottom:?}");
}

#[actix_web::test]
async fn a_webp_with_transparency_is_accepted() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let urls = upload(&server, &alice, "image/webp", webp(128, 100)).await;
    assert_halves(&check_both(&server, &urls).await);
}

#[actix_web::test]
async fn an_animated_gif_gives_its_first_frame() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let urls = upload(&server, &alice, "image/gif", animated_gif(100, 100)).await;
    assert_halves(&check_both(&server, &urls).await);
}

#[actix_web::test]
async fn png_text_chunks_are_not_kept() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let upload_bytes = with_text_chunk(&png(100, 100), b"Comment\0parley-secret");
    assert!(chunk_types(&upload_bytes).contains(b"tEXt"));
    let urls = upload(&server, &alice, "image/png", upload_bytes).await;
    check_both(&server, &urls).await;
}

#[actix_web::test]
async fn the_type_comes_from_the_bytes_not_the_name_or_header() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    // A PNG renamed avatar.gif, sent as image/gif: handled as the PNG it is.
    let auth = bearer(&alice);
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "image/gif"),
        ("content-disposition", "attachment; filename=\"avatar.gif\""),
    ];
    let resp = server.request(Method::PUT, "/api/v1/me/avatar", &headers, png(120, 120)).await;
    assert_eq!(resp.status, 200, "{}", resp.json());
    let urls: AvatarUrls = serde_json::from_value(resp.json()).unwrap();
    assert_halves(&check_both(&server, &urls).await);
    // And a GIF sent as image/png is a GIF.
    upload(&server, &alice, "image/png", animated_gif(64, 64)).await;
}

// ---- serving ----

#[actix_web::test]
async fn media_carry_an_etag_that_answers_304() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let urls = upload(&server, &alice, "image/png", png(100, 100)).await;
    let (_, etag) = thumbnail(&server, &urls.large, LARGE_SIZE).await;

    for candidate in [etag.clone(), format!("W/{etag}"), format!("\"other\", {etag}"), "*".to_string()] {
        let resp = server.request(Method::GET, &urls.large, &[("if-none-match", &candidate)], Bytes::new()).await;
        assert_eq!(resp.status, 304, "If-None-Match: {candidate}");
        assert!(resp.body.is_empty());
        assert_eq!(resp.header("etag"), Some(etag.as_str()));
        assert_eq!(resp.header("cache-control"), Some("public, max-age=31536000, immutable"));
    }
    let resp = server.request(Method::GET, &urls.large, &[("if-none-match", "\"stale\"")], Bytes::new()).await;
    assert_eq!(resp.status, 200);
    assert!(!resp.body.is_empty());
    let (_, small_etag) = thumbnail(&server, &urls.small, SMALL_SIZE).await;
    assert_ne!(small_etag, etag, "each file has its own ETag");
}

#[actix_web::test]
async fn only_existing_avatar_media_are_served() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    upload(&server, &alice, "image/png", png(64, 64)).await;
    for path in [
        "/api/v1/media/avatars/1/none/64.png",
        "/api/v1/media/avatars",
        "/api/v1/media/avatars/",
        "/api/v1/media/other/64.png",
        "/api/v1/media/avatars/../../keys/jwt.pem",
        "/api/v1/media/avatars/%2e%2e/%2e%2e/parley.sqlite3",
        "/api/v1/media/AVATARS/1.png",
    ] {
        server.get_full(path, None).await.assert_problem(404, "not_found");
    }
}

// ---- replacement and removal ----

#[actix_web::test]
async fn a_new_avatar_replaces_the_old_one_and_its_files_are_deleted() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let first = upload(&server, &alice, "image/png", png(100, 100)).await;
    // The same image again still gets new URLs (each upload is unique, so caching forever is right).
    let second = upload(&server, &alice, "image/png", png(100, 100)).await;
    assert_ne!(first, second);
    assert_eq!(status_of(&server, &first.small).await, 404);
    assert_eq!(status_of(&server, &first.large).await, 404);
    check_both(&server, &second).await;
}

#[actix_web::test]
async fn delete_clears_the_avatar_and_its_files() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let urls = upload(&server, &alice, "image/png", png(100, 100)).await;
    let auth = bearer(&alice);
    for _ in 0..2 {
        let resp = server.request(Method::DELETE, "/api/v1/me/avatar", &[("authorization", &auth)], Bytes::new()).await;
        assert_eq!(resp.status, 204, "deleting twice is fine");
        assert_eq!(status_of(&server, &urls.small).await, 404);
        assert_eq!(status_of(&server, &urls.large).await, 404);
    }
}

#[actix_web::test]
async fn avatars_of_different_users_are_separate() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let a = upload(&server, &alice, "image/png", png(100, 100)).await;
    let b = upload(&server, &bob, "image/webp", webp(100, 100)).await;
    let auth = bearer(&bob);
    server.request(Method::DELETE, "/api/v1/me/avatar", &[("authorization", &auth)], Bytes::new()).await;
    assert_eq!(status_of(&server, &b.small).await, 404);
    check_both(&server, &a).await;
}

// ---- refusals ----

#[actix_web::test]
async fn a_truncated_image_is_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let whole = noisy_png(200);
    let detail = refused(&server, &alice, whole[..whole.len() / 2].to_vec()).await;
    assert!(detail.contains("truncated or corrupt"), "{detail}");
    let gif = animated_gif(100, 100);
    refused(&server, &alice, gif[..gif.len() / 3].to_vec()).await;
    let webp = webp(100, 100);
    refused(&server, &alice, webp[..webp.len() / 2].to_vec()).await;
    // Only a signature.
    refused(&server, &alice, whole[..8].to_vec()).await;
}

#[actix_web::test]
async fn a_decompression_bomb_is_refused_before_it_is_decoded() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let peak_before = peak_rss_kib();

    // 30000×30000 RGBA would be 3.6 GB of pixels, from 70 bytes.
    let bomb = png_declaring(30_000, 30_000);
    assert!(bomb.len() < 100);
    let detail = refused(&server, &alice, bomb).await;
    assert!(detail.contains("dimensions exceed 8192x8192"), "{detail}");
    // Within the dimension limit but 8000×8000 RGBA is 256 MB: over the decoding budget.
    let detail = refused(&server, &alice, png_declaring(8_000, 8_000)).await;
    assert!(detail.contains("more than 128 MiB"), "{detail}");
    let detail = refused(&server, &alice, png_declaring(1, 100_000)).await;
    assert!(detail.contains("dimensions exceed"), "{detail}");

    if let (Some(before), Some(after)) = (peak_before, peak_rss_kib()) {
        assert!(after - before < 64 * 1024, "peak memory grew by {} MiB", (after - before) / 1024);
    }
}

#[actix_web::test]
async fn bytes_that_are_not_an_allowed_image_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mut state = 0x9E37_79B9_u32;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            state.to_be_bytes()[0]
        })
        .collect();
    for (what, bytes) in [
        ("random bytes", noise),
        ("text", b"hello, this is not an image".to_vec()),
        ("empty", Vec::new()),
        ("a BMP (a real image type, but not allowed)", b"BM\x3a\0\0\0\0\0\0\0\x36\0\0\0\x28\0\0\0".to_vec()),
        ("an SVG", b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec()),
    ] {
        let detail = refused(&server, &alice, bytes).await;
        assert_eq!(detail, "not a PNG, JPEG, WebP or GIF image", "{what}");
    }
    // A PNG signature followed by garbage.
    let mut fake = b"\x89PNG\r\n\x1a\n".to_vec();
    fake.extend_from_slice(&[7; 64]);
    let detail = refused(&server, &alice, fake).await;
    assert!(detail.contains("truncated or corrupt"), "{detail}");
}

#[actix_web::test]
async fn an_upload_over_the_limit_is_refused_with_413() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mut big = png(64, 64);
    big.resize(MAX_AVATAR_BYTES + 1, 0);
    let resp = put_avatar(&server, &alice, "image/png", big).await;
    let problem = resp.assert_problem(413, "payload_too_large");
    assert!(problem["detail"].as_str().unwrap().contains("5 MiB"), "{problem}");

    // Without a Content-Length (chunked), it is cut off at the limit too.
    let chunks = (0..6).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 1024 * 1024])));
    let mut resp = server
        .http()
        .put(server.url("/api/v1/me/avatar"))
        .insert_header(("authorization", bearer(&alice)))
        .send_stream(futures_util::stream::iter(chunks))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let body: serde_json::Value = serde_json::from_slice(&resp.body().await.unwrap()).unwrap();
    assert_eq!(body["code"], "payload_too_large");

    // Exactly at the limit is not "too large" (it is refused for not being an image).
    let mut at_limit = b"not an image".to_vec();
    at_limit.resize(MAX_AVATAR_BYTES, 0);
    refused(&server, &alice, at_limit).await;
}

#[actix_web::test]
async fn uploading_and_deleting_need_a_login_but_viewing_does_not() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let urls = upload(&server, &alice, "image/png", png(64, 64)).await;
    let resp = server.request(Method::PUT, "/api/v1/me/avatar", &[("content-type", "image/png")], png(64, 64)).await;
    resp.assert_problem(401, "unauthorized");
    let resp =
        server.request(Method::PUT, "/api/v1/me/avatar", &[("authorization", "Bearer not-a-token")], png(64, 64)).await;
    resp.assert_problem(401, "unauthorized");
    server.request(Method::DELETE, "/api/v1/me/avatar", &[], Bytes::new()).await.assert_problem(401, "unauthorized");
    check_both(&server, &urls).await;
}

#[actix_web::test]
async fn the_avatar_endpoints_are_in_the_openapi_document() {
    let server = TestServer::start().await;
    let (status, doc) = server.get("/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/v1/me/avatar"]["put"].is_object(), "PUT /me/avatar");
    assert!(doc["paths"]["/api/v1/me/avatar"]["delete"].is_object(), "DELETE /me/avatar");
    assert!(doc["paths"]["/api/v1/media/{key}"]["get"].is_object(), "GET /media/{{key}}");
    assert!(doc["components"]["schemas"]["AvatarUrls"].is_object());
}

/// Peak resident memory of this process (the server runs in it), KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[actix_web::test]
async fn profiles_show_the_current_avatar() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let profile = |viewer: &TestUser| {
        let path = format!("/api/v1/users/{}", alice.id);
        let token = viewer.tokens.access_token.clone();
        let server = &server;
        async move { server.get_ok::<protocol::rest::UserView>(&path, &token).await }
    };
    assert_eq!(profile(&bob).await.avatar, None);
    let urls = upload(&server, &alice, "image/png", png(80, 80)).await;
    assert_eq!(profile(&bob).await.avatar, Some(urls.clone()), "others see it");
    let own: protocol::rest::OwnProfile = server.get_ok("/api/v1/me", &alice.tokens.access_token).await;
    assert_eq!(own.user.avatar, Some(urls));
    let auth = bearer(&alice);
    server.request(Method::DELETE, "/api/v1/me/avatar", &[("authorization", &auth)], Bytes::new()).await;
    assert_eq!(profile(&bob).await.avatar, None);
}

#[actix_web::test]
async fn uploads_are_rate_limited_per_user() {
    let server = TestServer::start_with(|c| {
        c.limits.uploads_per_minute = 1;
        c.limits.upload_burst = 2;
    })
    .await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    upload(&server, &alice, "image/png", png(40, 40)).await;
    upload(&server, &alice, "image/png", png(40, 40)).await;
    let resp = put_avatar(&server, &alice, "image/png", png(40, 40)).await;
    resp.assert_problem(429, "rate_limited");
    upload(&server, &bob, "image/png", png(40, 40)).await;
}
