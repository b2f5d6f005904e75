//! Image inputs: decoded and checked (format, bytes, pixels) before anything
//! else, so a bad image gets a precise ValidationException even though the
//! embedded text model then refuses images altogether.

use basalt_proto::BedrockError;
use base64::Engine as _;

/// Largest decoded image, as Bedrock allows for Claude (3.75 MB).
pub const MAX_IMAGE_BYTES: usize = 3_750_000;
/// Largest width or height in pixels.
pub const MAX_IMAGE_SIDE: usize = 8000;
/// Images per request.
pub const MAX_IMAGES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
    Gif,
    Webp,
}

impl ImageFormat {
    /// From a Converse `format` member (`png`, `jpeg`, `gif`, `webp`).
    pub fn from_converse(name: &str) -> Option<Self> {
        match name {
            "png" => Some(Self::Png),
            "jpeg" => Some(Self::Jpeg),
            "gif" => Some(Self::Gif),
            "webp" => Some(Self::Webp),
            _ => None,
        }
    }

    /// From a MIME type (`image/png`, ...).
    pub fn from_media_type(media: &str) -> Option<Self> {
        Self::from_converse(media.strip_prefix("image/")?)
    }

    fn name(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpeg",
            Self::Gif => "gif",
            Self::Webp => "webp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: ImageFormat,
    pub width: usize,
    pub height: usize,
}

/// Decodes base64 image data and checks it against its declared format and the limits.
pub fn validate_base64(
    path: &str,
    declared: ImageFormat,
    data: &str,
) -> Result<ImageInfo, BedrockError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| {
            BedrockError::validation(format!("{path}: the image data is not valid base64 ({e})."))
        })?;
    validate_bytes(path, declared, &bytes)
}

pub fn validate_bytes(
    path: &str,
    declared: ImageFormat,
    bytes: &[u8],
) -> Result<ImageInfo, BedrockError> {
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(BedrockError::validation(format!(
            "{path}: image exceeds {MAX_IMAGE_BYTES} bytes maximum ({} bytes).",
            bytes.len()
        )));
    }
    let actual = match imagesize::image_type(bytes) {
        Ok(imagesize::ImageType::Png) => ImageFormat::Png,
        Ok(imagesize::ImageType::Jpeg) => ImageFormat::Jpeg,
        Ok(imagesize::ImageType::Gif) => ImageFormat::Gif,
        Ok(imagesize::ImageType::Webp) => ImageFormat::Webp,
        _ => {
            return Err(BedrockError::validation(format!(
                "{path}: could not process image: the data is not a PNG, JPEG, GIF or WebP image."
            )))
        }
    };
    if actual != declared {
        return Err(BedrockError::validation(format!(
            "{path}: image was specified using the image/{} media type, but the image appears to be a image/{} image.",
            declared.name(),
            actual.name()
        )));
    }
    let size = imagesize::blob_size(bytes)
        .map_err(|e| BedrockError::validation(format!("{path}: could not process image: {e}.")))?;
    if size.width == 0
        || size.height == 0
        || size.width > MAX_IMAGE_SIDE
        || size.height > MAX_IMAGE_SIDE
    {
        return Err(BedrockError::validation(format!(
            "{path}: image dimensions {}x{} are outside 1..={MAX_IMAGE_SIDE} pixels per side.",
            size.width, size.height
        )));
    }
    Ok(ImageInfo {
        format: actual,
        width: size.width,
        height: size.height,
    })
}

/// The refusal for a valid image sent to a model that cannot read images.
pub fn no_vision(model_id: &str) -> BedrockError {
    BedrockError::validation(format!(
        "The model {model_id} doesn't support image input: it is served by a text-only local model. Remove the image content or map this model ID to a vision model in the catalog."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2x3 PNG header: signature, IHDR chunk (dimensions are all imagesize reads).
    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut v = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13];
        v.extend_from_slice(b"IHDR");
        v.extend_from_slice(&width.to_be_bytes());
        v.extend_from_slice(&height.to_be_bytes());
        v.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        v
    }

    #[test]
    fn accepts_a_png_declared_as_png() {
        let info = validate_bytes("image", ImageFormat::Png, &png(2, 3)).expect("valid");
        assert_eq!((info.width, info.height), (2, 3));
    }

    #[test]
    fn refuses_a_mismatched_media_type() {
        let e = validate_bytes("image", ImageFormat::Jpeg, &png(2, 3)).expect_err("mismatch");
        assert!(e.message.contains("image/png"), "{}", e.message);
    }

    #[test]
    fn refuses_oversized_dimensions_and_garbage() {
        assert!(validate_bytes("image", ImageFormat::Png, &png(9000, 3)).is_err());
        assert!(validate_bytes("image", ImageFormat::Png, b"hello").is_err());
        assert!(validate_base64("image", ImageFormat::Png, "!!!").is_err());
        assert!(
            validate_bytes("image", ImageFormat::Png, &vec![0u8; MAX_IMAGE_BYTES + 1]).is_err()
        );
    }

    #[test]
    fn media_types_map() {
        assert_eq!(
            ImageFormat::from_media_type("image/webp"),
            Some(ImageFormat::Webp)
        );
        assert_eq!(ImageFormat::from_media_type("image/bmp"), None);
    }
}
