//! PDF to text: `lopdf` parses the file, fonts and encodings (ToUnicode
//! CMaps included); the walk over each page's content stream is ours, so
//! that text positioned with `Td`/`Tm` gets the spaces and line breaks
//! `lopdf`'s own `extract_text` leaves out. A vertical jump of more than
//! about two lines becomes a paragraph break; pages are separated by a
//! blank line.
//!
//! Not handled: text inside form XObjects (`Do`), Type3 fonts without a
//! ToUnicode map, reading order of multi-column layouts (text comes out in
//! content-stream order), scanned pages (no OCR).

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use lopdf::content::Content;
use lopdf::{Document, Encoding, LoadOptions, Object};

use crate::{MAX_PDF_PAGES, MAX_PDF_STREAM_BYTES, MAX_TEXT_BYTES};

pub(crate) fn to_text(bytes: &[u8]) -> Result<String, String> {
    // lopdf is large and fed hostile input here; a panic in it must not take
    // the ingestion job down with it.
    match catch_unwind(AssertUnwindSafe(|| extract(bytes))) {
        Ok(r) => r,
        Err(_) => Err("the file could not be read (the PDF parser failed on it)".to_string()),
    }
}

fn extract(bytes: &[u8]) -> Result<String, String> {
    let options = LoadOptions {
        max_decompressed_size: Some(MAX_PDF_STREAM_BYTES),
        ..LoadOptions::default()
    };
    let doc = Document::load_mem_with_options(bytes, options).map_err(|e| match e {
        lopdf::Error::InvalidPassword | lopdf::Error::Decryption(_) => {
            "the file is password-protected; remove the password and upload it again".to_string()
        }
        e => format!("the file is not a readable PDF ({e})"),
    })?;
    if doc.is_encrypted() {
        return Err(
            "the file is password-protected; remove the password and upload it again".to_string(),
        );
    }
    let pages = doc.get_pages();
    if pages.len() > MAX_PDF_PAGES {
        return Err(format!(
            "the file has {} pages; the most read is {MAX_PDF_PAGES}",
            pages.len()
        ));
    }
    let mut out = String::new();
    let mut failures = 0usize;
    let mut first_failure = None;
    for (&number, &page_id) in &pages {
        match page_text(&doc, page_id) {
            Ok(text) => {
                let text = crate::tidy(&text);
                if text.is_empty() {
                    continue;
                }
                if !out.is_empty() {
                    out.push_str("\n\n");
                }
                out.push_str(&text);
                if out.len() > MAX_TEXT_BYTES {
                    return Err(format!("the extracted text is over {MAX_TEXT_BYTES} bytes"));
                }
            }
            Err(e) => {
                failures += 1;
                first_failure.get_or_insert(format!("page {number}: {e}"));
            }
        }
    }
    // One bad page should not lose the rest; a file of only bad pages is an error.
    if out.is_empty() {
        if let Some(reason) = first_failure {
            return Err(format!(
                "no page could be read ({failures} failed; {reason})"
            ));
        }
    }
    Ok(out)
}

/// The text state the walk tracks: enough to tell a new word, line or paragraph.
struct Walk<'a> {
    encodings: BTreeMap<Vec<u8>, Encoding<'a>>,
    font: Option<Vec<u8>>,
    font_size: f32,
    leading: f32,
    /// Text line matrix [a b c d e f].
    line: [f32; 6],
    /// y of the last shown text, and whether the position moved since.
    last_y: Option<f32>,
    moved: bool,
    out: String,
}

fn page_text(doc: &Document, page_id: lopdf::ObjectId) -> Result<String, lopdf::Error> {
    let fonts = doc.get_page_fonts(page_id)?;
    let encodings = fonts
        .into_iter()
        .filter_map(|(name, font)| {
            font.get_font_encoding_with_limit(doc, MAX_PDF_STREAM_BYTES)
                .ok()
                .map(|e| (name, e))
        })
        .collect();
    let content = doc.get_page_content_with_limit(page_id, MAX_PDF_STREAM_BYTES)?;
    let content = Content::decode(&content)?;
    let mut w = Walk {
        encodings,
        font: None,
        font_size: 12.0,
        leading: 0.0,
        line: [1.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        last_y: None,
        moved: false,
        out: String::new(),
    };
    for op in &content.operations {
        let n = |k: usize| op.operands.get(k).and_then(number).unwrap_or(0.0);
        match op.operator.as_str() {
            "BT" => w.line = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0],
            "ET" => w.moved = true,
            "Tf" => {
                w.font = op
                    .operands
                    .first()
                    .and_then(|o| o.as_name().ok())
                    .map(<[u8]>::to_vec);
                w.font_size = n(1).abs();
            }
            "TL" => w.leading = n(0),
            "Td" | "TD" => {
                if op.operator == "TD" {
                    w.leading = -n(1);
                }
                w.translate(n(0), n(1));
            }
            "Tm" => {
                w.line = [n(0), n(1), n(2), n(3), n(4), n(5)];
                w.moved = true;
            }
            "T*" => w.translate(0.0, -w.leading),
            "Tj" | "TJ" => w.show(&op.operands),
            "'" => {
                w.translate(0.0, -w.leading);
                w.show(&op.operands);
            }
            "\"" => {
                w.translate(0.0, -w.leading);
                w.show(op.operands.get(2..).unwrap_or(&[]));
            }
            _ => {}
        }
        if w.out.len() > MAX_TEXT_BYTES {
            break;
        }
    }
    Ok(w.out)
}

impl Walk<'_> {
    fn translate(&mut self, tx: f32, ty: f32) {
        let [a, b, c, d, e, f] = self.line;
        self.line = [a, b, c, d, e + tx * a + ty * c, f + tx * b + ty * d];
        self.moved = true;
    }

    fn show(&mut self, operands: &[Object]) {
        let y = self.line[5];
        if let Some(last) = self.last_y {
            let size = (self.font_size * self.line[3].abs().max(self.line[0].abs())).max(1.0);
            let dy = (y - last).abs();
            let sep = if dy > 2.2 * size {
                "\n\n"
            } else if dy > 0.3 * size {
                "\n"
            } else if self.moved {
                " "
            } else {
                ""
            };
            match sep {
                "" => {}
                " " => {
                    if !self.out.ends_with(char::is_whitespace) {
                        self.out.push(' ');
                    }
                }
                breaks => {
                    self.out
                        .truncate(self.out.trim_end_matches([' ', '\t']).len());
                    self.out.push_str(breaks);
                }
            }
        }
        self.last_y = Some(y);
        self.moved = false;
        for operand in operands {
            self.show_one(operand);
        }
    }

    fn show_one(&mut self, operand: &Object) {
        match operand {
            Object::String(bytes, _) => {
                let decoded = self
                    .font
                    .as_ref()
                    .and_then(|f| self.encodings.get(f))
                    .and_then(|enc| enc.bytes_to_string(bytes).ok());
                match decoded {
                    Some(s) => self.out.push_str(&s),
                    // No usable encoding: printable Latin-1 beats nothing.
                    None => self.out.extend(
                        bytes
                            .iter()
                            .filter(|b| b.is_ascii_graphic() || **b == b' ')
                            .map(|&b| b as char),
                    ),
                }
            }
            Object::Array(items) => {
                for item in items {
                    match item {
                        // A kern of more than a fifth of an em is a word space.
                        Object::Integer(_) | Object::Real(_) => {
                            if number(item).is_some_and(|k| k < -200.0) && !self.out.ends_with(' ')
                            {
                                self.out.push(' ');
                            }
                        }
                        other => self.show_one(other),
                    }
                }
            }
            _ => {}
        }
    }
}

fn number(o: &Object) -> Option<f32> {
    match o {
        Object::Integer(i) => Some(*i as f32),
        Object::Real(r) => Some(*r),
        _ => None,
    }
    .filter(|v| v.is_finite())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::to_text;

    /// A valid PDF with one page per entry of `pages` (raw content streams),
    /// with a correct cross-reference table.
    pub(crate) fn pdf(pages: &[&str]) -> Vec<u8> {
        let mut objects: Vec<String> = Vec::new();
        let n = pages.len();
        // 1: catalog, 2: pages, 3: font, then (page, content) pairs.
        let kids: Vec<String> = (0..n).map(|k| format!("{} 0 R", 4 + 2 * k)).collect();
        objects.push("<< /Type /Catalog /Pages 2 0 R >>".into());
        objects.push(format!(
            "<< /Type /Pages /Kids [{}] /Count {n} >>",
            kids.join(" ")
        ));
        objects.push(
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
                .into(),
        );
        for (k, content) in pages.iter().enumerate() {
            objects.push(format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
                5 + 2 * k
            ));
            objects.push(format!(
                "<< /Length {} >>\nstream\n{content}\nendstream",
                content.len() + 1
            ));
        }
        let mut out = b"%PDF-1.4\n".to_vec();
        let mut offsets = Vec::new();
        for (k, body) in objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", k + 1).as_bytes());
        }
        let xref = out.len();
        out.extend_from_slice(
            format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
        );
        for off in offsets {
            out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
                objects.len() + 1
            )
            .as_bytes(),
        );
        out
    }

    #[test]
    fn extracts_text_per_page() {
        let doc = pdf(&[
            "BT /F1 12 Tf 72 720 Td (Hello, PDF world.) Tj 0 -14 Td (Second line) Tj 0 -60 Td (New paragraph) Tj ET",
            "BT /F1 12 Tf 72 720 Td [(Ker)-20(ned)-300(words)] TJ ET\nBT /F1 12 Tf 200 720 Td (same line) Tj ET",
        ]);
        assert_eq!(
            to_text(&doc).unwrap(),
            "Hello, PDF world.\nSecond line\n\nNew paragraph\n\nKerned words same line"
        );
    }

    #[test]
    fn tm_and_tstar_lines() {
        let doc = pdf(&["BT /F1 10 Tf 12 TL 1 0 0 1 50 700 Tm (one) Tj T* (two) Tj 1 0 0 1 120 688 Tm (three) Tj ET"]);
        assert_eq!(to_text(&doc).unwrap(), "one\ntwo three");
    }

    #[test]
    fn garbage_and_truncated_files_are_errors_not_panics() {
        assert!(to_text(b"not a pdf")
            .unwrap_err()
            .contains("not a readable PDF"));
        let doc = pdf(&["BT /F1 12 Tf (x) Tj ET"]);
        for cut in [10, doc.len() / 2, doc.len() - 10] {
            let _ = to_text(&doc[..cut]);
        }
    }
}
