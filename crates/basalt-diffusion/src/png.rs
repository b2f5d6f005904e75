//! A minimal PNG encoder (8-bit RGB, no filtering, zlib through flate2).

use std::io::Write;

/// Encodes `rgb` (row-major, 3 bytes a pixel) as a PNG.
pub fn encode_rgb(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    encode(width, height, ColourType::Rgb, rgb)
}

/// PNG colour types this encoder writes (8 bits a sample).
#[derive(Debug, Clone, Copy)]
pub enum ColourType {
    Grey = 0,
    Rgb = 2,
    Rgba = 6,
}

impl ColourType {
    fn channels(self) -> usize {
        match self {
            Self::Grey => 1,
            Self::Rgb => 3,
            Self::Rgba => 4,
        }
    }
}

/// Encodes 8-bit `samples` of `colour` type, row-major.
pub fn encode(width: u32, height: u32, colour: ColourType, samples: &[u8]) -> Vec<u8> {
    let row = width as usize * colour.channels();
    debug_assert_eq!(samples.len(), row * height as usize);
    let mut raw = Vec::with_capacity((row + 1) * height as usize);
    for line in samples.chunks_exact(row.max(1)) {
        raw.push(0); // filter type None
        raw.extend_from_slice(line);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let idat = z
        .write_all(&raw)
        .and_then(|()| z.finish())
        .unwrap_or_default();

    let mut out = Vec::with_capacity(idat.len() + 64);
    out.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // depth 8, the colour type, deflate, no filter, no interlace
    ihdr.extend_from_slice(&[8, colour as u8, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// Width and height from a PNG's IHDR, if `png` starts like one.
pub fn dimensions(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(png[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(png[20..24].try_into().ok()?);
    Some((w, h))
}

/// Width, height and RGB pixels of a PNG as [`encode_rgb`] writes them (8-bit RGB, filter
/// type 0 on every row, IDAT chunks); `None` for anything else. For tests.
pub fn decode_rgb(png: &[u8]) -> Option<(u32, u32, Vec<u8>)> {
    use std::io::Read;
    let (w, h) = dimensions(png)?;
    if png.get(24..29)? != [8, 2, 0, 0, 0] {
        return None;
    }
    let mut idat = Vec::new();
    let mut at = 8;
    while at + 12 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().ok()?) as usize;
        let kind = png.get(at + 4..at + 8)?;
        let data = png.get(at + 8..at + 8 + len)?;
        if kind == b"IDAT" {
            idat.extend_from_slice(data);
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .ok()?;
    let row = w as usize * 3;
    if raw.len() != (row + 1) * h as usize {
        return None;
    }
    let mut rgb = Vec::with_capacity(row * h as usize);
    for line in raw.chunks_exact(row + 1) {
        if line[0] != 0 {
            return None;
        }
        rgb.extend_from_slice(&line[1..]);
    }
    Some((w, h, rgb))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    #[test]
    fn round_trip_pixels() {
        let rgb: Vec<u8> = (0..(5 * 3 * 3)).map(|i| i as u8).collect();
        let png = super::encode_rgb(5, 3, &rgb);
        assert_eq!(super::dimensions(&png), Some((5, 3)));
        // IDAT starts after signature (8) + IHDR chunk (25).
        let len = u32::from_be_bytes(png[33..37].try_into().expect("len")) as usize;
        assert_eq!(&png[37..41], b"IDAT");
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&png[41..41 + len])
            .read_to_end(&mut raw)
            .expect("inflate");
        assert_eq!(raw.len(), 3 * (1 + 15));
        assert_eq!(&raw[1..16], &rgb[..15]);
        assert_eq!(super::decode_rgb(&png), Some((5, 3, rgb.clone())));
        assert!(png.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]));
    }
}
