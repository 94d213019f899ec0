"""Decode uploaded images safely into float RGB (+ alpha), and encode the upscaled result.

Decoding is split in two so limits are checked on the header, before any pixel is decompressed:
`open_image` reads only the header (format, size, frames), `decode` loads the first frame and
normalises it: EXIF orientation applied; grayscale, palette, 16-bit, CMYK and alpha mapped to RGB in
[0, 1] plus what is needed to give the output the input's look (alpha, gray, bit depth, ICC profile).
"""

import io
import warnings
import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from service.errors import PayloadTooLarge, UndecodableImage, UnsupportedMediaType

INPUT_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP")
INPUT_MEDIA_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/webp", "image/gif", "image/tiff", "image/bmp", "image/x-ms-bmp"}
)
OutputFormat = Literal["png", "jpeg", "webp"]
MEDIA_TYPE = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
DEFAULT_QUALITY = {"jpeg": 90, "webp": 90}
# zlib's RLE strategy on PNG's filtered rows: ~40% faster than the default on photos, and no bigger.
PNG_OPTIONS = {"compress_level": 6, "compress_type": zlib.Z_RLE}

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, what Pillow's convert("L") uses


def set_pixel_limit(max_pixels: int) -> None:
    """Pillow's own bomb check (also on GIF frame extents) fires at our limit, not at its 89 MP default.

    Pillow keeps this as a process global; the service sets it once at start.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Read only the header; refuse unsupported formats (415), garbage (422) and big images (413)."""
    too_big = PayloadTooLarge(f"image is over the limit of {max_pixels} pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=INPUT_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise too_big from None
    except UnidentifiedImageError:
        raise _not_ours(data) from None
    except (OSError, ValueError, SyntaxError) as e:  # Pillow raises these for broken headers
        raise UndecodableImage(f"cannot read the image header: {e}") from None
    if image.width * image.height > max_pixels:
        raise too_big
    return image


def _not_ours(data: bytes) -> Exception:
    """415 when Pillow knows the format but we do not accept it, 422 when it is no image at all."""
    try:
        with Image.open(io.BytesIO(data)) as other:
            return UnsupportedMediaType(
                f"{other.format} images are not supported; send one of {INPUT_FORMATS}"
            )
    except Exception:
        return UndecodableImage(f"not a decodable image (supported: {', '.join(INPUT_FORMATS)})")


@dataclass
class DecodedImage:
    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
    alpha: np.ndarray | None  # (H, W) float32 in [0, 1], None when opaque by format
    grayscale: bool  # gray in -> gray out
    sixteen_bit: bool  # 16-bit gray in -> 16-bit PNG out
    icc_profile: bytes | None  # attached to the output where its colour space still applies
    frames: int  # > 1 for animations; only the first frame is used


def decode(image: Image.Image) -> DecodedImage:
    """Load the first frame and normalise it (422 if the pixel data is corrupt)."""
    frames = getattr(image, "n_frames", 1)
    try:
        image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image)
        return _normalise(image, frames)
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise UndecodableImage(f"cannot decode the image data: {e}") from None


def _normalise(image: Image.Image, frames: int) -> DecodedImage:
    icc = image.info.get("icc_profile") or None
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode == "CMYK":
        # A CMYK profile means nothing to RGB output: convert through it to sRGB, then drop it.
        if icc:
            srgb = ImageCms.createProfile("sRGB")
            image = ImageCms.profileToProfile(image, io.BytesIO(icc), srgb, outputMode="RGB")
        else:
            image = image.convert("RGB")
        icc = None
    mode = image.mode

    if mode.startswith("I"):  # 16/32-bit integer gray ("I;16", "I;16B", "I")
        gray = np.asarray(image, dtype=np.float32) / 65535.0
        return DecodedImage(_gray_to_rgb(np.clip(gray, 0, 1)), None, True, True, icc, frames)
    if mode in ("1", "L", "LA"):
        gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        alpha = _channel(image, "A") if mode == "LA" else None
        return DecodedImage(_gray_to_rgb(gray), alpha, True, False, icc, frames)
    alpha = _channel(image, "A") if "A" in mode else None
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return DecodedImage(rgb, alpha, False, False, icc, frames)


def _channel(image: Image.Image, band: str) -> np.ndarray:
    return np.asarray(image.getchannel(band), dtype=np.float32) / 255.0


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def compose(decoded: DecodedImage, sr: np.ndarray, outscale: float, scale: int) -> Image.Image:
    """Model output (sH, sW, 3) float32 -> final PIL image in the input's kind, resized to `outscale`."""
    height, width = decoded.rgb.shape[:2]
    size = (max(1, round(width * outscale)), max(1, round(height * outscale)))
    if decoded.grayscale:
        gray = sr @ _LUMA  # (sH, sW)
        if decoded.sixteen_bit:
            image = Image.fromarray(_quantise(gray, np.uint16))  # mode I;16
        else:
            image = Image.fromarray(_quantise(gray, np.uint8))
    else:
        image = Image.fromarray(_quantise(sr, np.uint8))
    if decoded.alpha is not None:
        # Alpha is no photo: plain bicubic keeps hard masks hard; float mode keeps 16-bit precision.
        alpha = Image.fromarray(decoded.alpha).resize(image.size, Image.Resampling.BICUBIC)
        image = image.convert("LA" if image.mode == "L" else "RGBA")
        image.putalpha(Image.fromarray(_quantise(np.asarray(alpha), np.uint8)))
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def _quantise(values: np.ndarray, dtype: type[np.unsignedinteger]) -> np.ndarray:
    """[0, 1] floats -> rounded integers of `dtype`, clipped; in place on one temporary."""
    top = np.iinfo(dtype).max
    scaled = values * np.float32(top)
    np.clip(scaled, 0, top, out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype(dtype)


def encode(image: Image.Image, fmt: OutputFormat, quality: int | None, icc: bytes | None) -> bytes:
    """PNG keeps alpha and 16-bit gray; JPEG composites alpha over white; WebP is 8-bit with alpha."""
    if fmt != "png" and image.mode == "I;16":
        image = Image.fromarray((np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8))
    if fmt == "jpeg" and image.mode in ("RGBA", "LA"):
        background = Image.new(image.mode[:-1], image.size, 255)
        background.paste(image.convert(image.mode[:-1]), mask=image.getchannel("A"))
        image = background
    if fmt == "webp" and image.mode in ("L", "LA"):  # WebP has no gray mode; a gray profile would not fit
        image = image.convert("RGBA" if image.mode == "LA" else "RGB")
        icc = None
    options: dict[str, object] = {}
    if icc:
        options["icc_profile"] = icc
    if fmt == "png":
        options |= PNG_OPTIONS
    else:
        options["quality"] = quality or DEFAULT_QUALITY[fmt]
    out = io.BytesIO()
    image.save(out, format=fmt.upper(), **options)
    return out.getvalue()
