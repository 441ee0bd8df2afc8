//! Avatar images: the type sniffed from the bytes, bounded decoding (no
//! decompression bombs), square thumbnails re-encoded as PNG (which drops
//! every metadata block: EXIF, XMP, ICC, comments), their media keys and the
//! URLs they are served at.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};
use protocol::rest::AvatarUrls;

use crate::errors::ApiError;

/// Largest avatar upload, bytes (5 MiB): a full-resolution phone photo as
/// JPEG fits; anything bigger is refused with 413 before it is read whole.
pub const MAX_AVATAR_BYTES: usize = 5 * 1024 * 1024;

/// Largest width or height of an uploaded image, pixels. Checked from the
/// header, before any pixel is decoded.
pub const MAX_AVATAR_DIMENSION: u32 = 8192;

/// Most memory the decoded pixels of one upload may take, bytes (128 MiB:
/// e.g. 4096×4096 RGBA at 8 bits or 5792×5792 RGB). Checked from the header
/// before the buffer is allocated, so a small file that declares a huge
/// image (a decompression bomb) costs nothing.
pub const MAX_DECODE_ALLOC_BYTES: u64 = 128 * 1024 * 1024;

/// Side of the small thumbnail, pixels (lists, chat headers).
pub const SMALL_SIZE: u32 = 64;

/// Side of the large thumbnail, pixels (profile pages).
pub const LARGE_SIZE: u32 = 256;

/// First segment of every avatar media key; the only media served publicly.
pub const AVATAR_KEY_ROOT: &str = "avatars";

/// Content type of every stored thumbnail.
pub const THUMBNAIL_CONTENT_TYPE: &str = "image/png";

/// The formats accepted, as named in errors.
const ALLOWED_FORMATS: &str = "PNG, JPEG, WebP or GIF";

/// Avatar decodes running at once per node (each may hold up to
/// [`MAX_DECODE_ALLOC_BYTES`] and a CPU); more uploads wait their turn.
pub struct AvatarPermits(tokio::sync::Semaphore);

impl AvatarPermits {
    /// One decode per CPU.
    pub fn new() -> Self {
        AvatarPermits(tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())))
    }

    /// Waits for a free decode slot.
    pub async fn acquire(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        self.0.acquire().await.map_err(ApiError::internal)
    }
}

impl Default for AvatarPermits {
    fn default() -> Self {
        Self::new()
    }
}

/// The two thumbnails of one upload, PNG-encoded.
#[derive(Debug)]
pub struct Thumbnails {
    /// [`SMALL_SIZE`] square.
    pub small: Vec<u8>,
    /// [`LARGE_SIZE`] square.
    pub large: Vec<u8>,
}

/// Turns uploaded bytes into thumbnails: sniffs the format (the client's
/// content type and file name are ignored), refuses anything but PNG, JPEG,
/// WebP or GIF (first frame), checks the size limits from the header,
/// decodes, applies the EXIF orientation, crops the centred square and
/// scales it. CPU-heavy: call it off the async threads.
pub fn make_thumbnails(bytes: &[u8]) -> Result<Thumbnails, ApiError> {
    let image = decode(bytes)?;
    let (width, height) = (image.width(), image.height());
    let side = width.min(height);
    let square = image.crop_imm((width - side) / 2, (height - side) / 2, side, side);
    drop(image);
    let large = flatten(square.resize_exact(LARGE_SIZE, LARGE_SIZE, FilterType::Lanczos3));
    // From the large thumbnail rather than the original: a quarter of the
    // work for the same result at this ratio.
    let small = flatten(large.resize_exact(SMALL_SIZE, SMALL_SIZE, FilterType::Lanczos3));
    Ok(Thumbnails { small: encode_png(&small)?, large: encode_png(&large)? })
}

/// The media key prefix of one upload: `avatars/<user_id>/<upload_id>`.
pub fn avatar_key(user_id: i64, upload_id: &str) -> String {
    format!("{AVATAR_KEY_ROOT}/{user_id}/{upload_id}")
}

/// The media key of one thumbnail of the avatar stored under `avatar_key`.
pub fn thumbnail_key(avatar_key: &str, size: u32) -> String {
    format!("{avatar_key}/{size}.png")
}

/// The media keys of both thumbnails of the avatar stored under `avatar_key`.
pub fn thumbnail_keys(avatar_key: &str) -> [String; 2] {
    [thumbnail_key(avatar_key, SMALL_SIZE), thumbnail_key(avatar_key, LARGE_SIZE)]
}

/// Where the thumbnails of the avatar stored under `avatar_key` (a user's
/// `avatar` field) are served, relative to the node.
pub fn avatar_urls(avatar_key: &str) -> AvatarUrls {
    let url = |size| format!("{}/media/{}", protocol::API_PREFIX, thumbnail_key(avatar_key, size));
    AvatarUrls { small: url(SMALL_SIZE), large: url(LARGE_SIZE) }
}

/// Whether `key` may be served publicly by `GET /media/{key}`.
pub fn is_public_key(key: &str) -> bool {
    key.strip_prefix(AVATAR_KEY_ROOT).is_some_and(|rest| rest.starts_with('/'))
}

fn decode(bytes: &[u8]) -> Result<DynamicImage, ApiError> {
    let format = match image::guess_format(bytes) {
        Ok(format @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP | ImageFormat::Gif)) => format,
        _ => return Err(invalid(format!("not a {ALLOWED_FORMATS} image"))),
    };
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_AVATAR_DIMENSION);
    limits.max_image_height = Some(MAX_AVATAR_DIMENSION);
    limits.max_alloc = Some(MAX_DECODE_ALLOC_BYTES);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits);
    // `into_decoder` reads the header only and checks the dimensions.
    let mut decoder = reader.into_decoder().map_err(image_error)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(invalid("the image is empty".into()));
    }
    if width > MAX_AVATAR_DIMENSION || height > MAX_AVATAR_DIMENSION {
        return Err(too_big_dimensions());
    }
    if decoder.total_bytes() > MAX_DECODE_ALLOC_BYTES {
        return Err(too_many_pixels());
    }
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(image_error)?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    Ok(image)
}

/// 8-bit RGB, or RGBA if the image has transparency.
fn flatten(image: DynamicImage) -> DynamicImage {
    if image.color().has_alpha() {
        DynamicImage::ImageRgba8(image.to_rgba8())
    } else {
        DynamicImage::ImageRgb8(image.to_rgb8())
    }
}

/// Encodes as PNG: pixels only, no ancillary chunks.
fn encode_png(image: &DynamicImage) -> Result<Vec<u8>, ApiError> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png).map_err(ApiError::internal)?;
    Ok(out.into_inner())
}

fn image_error(error: ImageError) -> ApiError {
    match error {
        ImageError::Limits(limit) => match limit.kind() {
            image::error::LimitErrorKind::DimensionError => too_big_dimensions(),
            _ => too_many_pixels(),
        },
        ImageError::Unsupported(_) => invalid(format!("this image uses a feature that is not supported: {error}")),
        _ => invalid("the image could not be decoded (truncated or corrupt)".into()),
    }
}

fn too_big_dimensions() -> ApiError {
    invalid(format!("image dimensions exceed {MAX_AVATAR_DIMENSION}x{MAX_AVATAR_DIMENSION} pixels"))
}

fn too_many_pixels() -> ApiError {
    invalid(format!("the image needs more than {} MiB to decode", MAX_DECODE_ALLOC_BYTES / (1024 * 1024)))
}

fn invalid(detail: String) -> ApiError {
    ApiError::InvalidImage(detail)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image =
            DynamicImage::ImageRgb8(image::RgbImage::from_fn(width, height, |x, _| image::Rgb([x as u8, 0, 0])));
        encode_png(&image).unwrap()
    }

    #[test]
    fn thumbnails_are_centred_squares_of_both_sizes() {
        let thumbs = make_thumbnails(&png(300, 100)).unwrap();
        let small = image::load_from_memory(&thumbs.small).unwrap();
        let large = image::load_from_memory(&thumbs.large).unwrap();
        assert_eq!((small.width(), small.height()), (SMALL_SIZE, SMALL_SIZE));
        assert_eq!((large.width(), large.height()), (LARGE_SIZE, LARGE_SIZE));
        // The crop keeps columns 100..200, whose red channel is 100..200.
        let left = large.to_rgb8().get_pixel(2, 128).0[0];
        assert!((95..=110).contains(&left), "left edge red = {left}");
    }

    #[test]
    fn keys_and_urls_agree() {
        let key = avatar_key(42, "abc");
        assert_eq!(key, "avatars/42/abc");
        assert_eq!(thumbnail_keys(&key), ["avatars/42/abc/64.png".to_string(), "avatars/42/abc/256.png".to_string()]);
        let urls = avatar_urls(&key);
        assert_eq!(urls.small, "/api/v1/media/avatars/42/abc/64.png");
        assert_eq!(urls.large, "/api/v1/media/avatars/42/abc/256.png");
        assert!(is_public_key("avatars/42/abc/64.png"));
        assert!(!is_public_key("avatarsx/1.png"));
        assert!(!is_public_key("other/avatars/1.png"));
    }

    #[test]
    fn a_one_pixel_image_is_scaled_up() {
        let thumbs = make_thumbnails(&png(1, 1)).unwrap();
        assert_eq!(image::load_from_memory(&thumbs.small).unwrap().width(), SMALL_SIZE);
    }
}
