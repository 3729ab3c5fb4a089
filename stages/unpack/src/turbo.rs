//! JPEG faces through libjpeg-turbo's decoder (the `libjpeg-turbo` feature): the decoder
//! OpenCV, PIL and insightface's own readers use, about 15% faster per core than zune-jpeg on
//! 112 × 112 faces. mozjpeg builds it from source (a C compiler and nasm).
//!
//! libjpeg reports a fatal error by calling back into Rust, which unwinds; every call is made
//! inside `catch_unwind`, so a damaged file is an error, never a panic.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Decoded pixels (RGB, row-major), width and height, or why not.
pub type Decoded = Result<(Vec<u8>, u32, u32), String>;

/// A colour JPEG's RGB pixels and size; `None` for anything else (a PNG, a grayscale or CMYK
/// JPEG), which the pure-Rust path decodes. The size is checked against `max_side` from the
/// header, before libjpeg allocates for the pixels.
pub fn decode_colour_jpeg(bytes: &[u8], max_side: u32) -> Option<Decoded> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let decoded = catch_unwind(AssertUnwindSafe(|| decode(bytes, max_side)));
    match decoded {
        Ok(result) => result,
        Err(payload) => {
            let why = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "libjpeg stopped with an error".into());
            Some(Err(why))
        }
    }
}

fn decode(bytes: &[u8], max_side: u32) -> Option<Decoded> {
    use mozjpeg::{ColorSpace, Decompress};
    let decompress = match Decompress::new_mem(bytes) {
        Ok(d) => d,
        Err(e) => return Some(Err(e.to_string())),
    };
    if !matches!(decompress.color_space(), ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB) {
        return None;
    }
    let (w, h) = (decompress.width(), decompress.height());
    if w > max_side as usize || h > max_side as usize {
        return Some(Err(format!(
            "its header claims {w} × {h} pixels, over the limit of {max_side} on a side: refused before decoding"
        )));
    }
    let pixels = decompress.rgb().and_then(|mut started| {
        let pixels: Vec<u8> = started.read_scanlines()?;
        started.finish()?;
        Ok(pixels)
    });
    Some(match pixels {
        Ok(p) if p.len() == w * h * 3 => Ok((p, w as u32, h as u32)),
        Ok(p) => Err(format!("libjpeg returned {} bytes for {w} × {h} pixels", p.len())),
        Err(e) => Err(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 112 × 112 colour JPEG with smooth gradients, from the encoder synth uses.
    fn face_like_jpeg() -> (Vec<u8>, Vec<u8>) {
        let mut rgb = Vec::with_capacity(112 * 112 * 3);
        for y in 0..112u32 {
            for x in 0..112u32 {
                rgb.extend_from_slice(&[(x * 2) as u8, (y * 2) as u8, ((x + y) % 256) as u8]);
            }
        }
        let mut out = Vec::new();
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95);
        enc.encode(&rgb, 112, 112, image::ExtendedColorType::Rgb8).expect("encode");
        (out, rgb)
    }

    #[test]
    fn decodes_close_to_the_source_and_to_zune_jpeg() {
        let (jpeg, source) = face_like_jpeg();
        let (turbo, w, h) = decode_colour_jpeg(&jpeg, 1024).expect("a colour JPEG").expect("decodes");
        assert_eq!((w, h), (112, 112));
        let zune = spherepipe_stage_align::decode_rgb(&jpeg).expect("zune decodes").into_raw();
        let max_diff = |a: &[u8], b: &[u8]| a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0);
        // Quality 95: both decoders within a few levels of the source and of each other.
        assert!(max_diff(&turbo, &source) <= 12, "{}", max_diff(&turbo, &source));
        assert!(max_diff(&turbo, &zune) <= 4, "{}", max_diff(&turbo, &zune));
    }

    #[test]
    fn damaged_and_oversized_files_are_errors_not_panics() {
        let (jpeg, _) = face_like_jpeg();
        // Cut inside the header: libjpeg's fatal error comes back as an error.
        let cut = decode_colour_jpeg(&jpeg[..40], 1024).expect("starts like a JPEG");
        assert!(cut.is_err());
        // Garbage after the SOI marker.
        let mut garbage = vec![0xFF, 0xD8];
        garbage.extend(std::iter::repeat_n(0x5A, 200));
        assert!(decode_colour_jpeg(&garbage, 1024).expect("starts like a JPEG").is_err());
        // A side over the limit is refused from the header.
        let err = decode_colour_jpeg(&jpeg, 100).expect("a colour JPEG").expect_err("too big");
        assert!(err.contains("112 × 112"), "{err}");
        // Not a JPEG at all: left to the other path.
        assert!(decode_colour_jpeg(b"\x89PNG\r\n\x1a\n", 1024).is_none());
    }
}
