//! Knowledge-base ingestion, step one: a source file's bytes to plain text.
//!
//! [`parse`] picks the format from the file name's extension (or the MIME
//! type, when one is given and names a supported format) and returns
//! [`Document::text`]: plain text whose paragraphs are separated by blank
//! lines, so that a chunker can prefer to cut there.
//!
//! | format | what the text is |
//! |---|---|
//! | txt | the file, UTF-8 (a UTF-8 BOM dropped, UTF-16 with a BOM decoded), line ends normalised to `\n` |
//! | md | kept as is (markup and all; headings and lists read fine to an embedding model and stay intact for the generator) |
//! | html | visible text: `script`/`style`/`head`/etc. dropped, block elements become line breaks, entities decoded |
//! | csv | one line per row, `header1: value1, header2: value2` (empty cells left out); a comma is the only separator |
//! | json | one `path: value` line per leaf (`a.b[0].c: 1`); elements of a top-level array separated by a blank line |
//! | pdf | the text of each page (through `lopdf`), pages separated by a blank line |
//! | docx | `word/document.xml`: each paragraph a block, table rows a line with cells separated by tabs |
//!
//! [`parse_sidecar`] reads the `<object>.metadata.json` file that sits beside a
//! source object.
//!
//! Every input is bounded (see the `MAX_*` constants) and no input panics.

// Tests unwrap freely; the lib target (checked without cfg(test)) still may not.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod csv;
mod docx;
mod html;
mod json;
mod pdf;
mod sidecar;

pub use sidecar::{is_sidecar, parse_sidecar, sidecar_name, MAX_SIDECAR_BYTES, SIDECAR_SUFFIX};

/// Largest source file accepted: Bedrock's 50 MB limit per ingested document.
pub const MAX_INPUT_BYTES: usize = 50 * 1024 * 1024;
/// Deepest JSON nesting read (serde_json alone stops at 128).
pub const MAX_JSON_DEPTH: usize = 64;
/// Most bytes a DOCX's `word/document.xml` may inflate to (a zip-bomb guard).
pub const MAX_DOCX_XML_BYTES: u64 = 256 * 1024 * 1024;
/// Most bytes one PDF stream (or one page's content) may decompress to.
pub const MAX_PDF_STREAM_BYTES: usize = 64 * 1024 * 1024;
/// Most pages read from one PDF.
pub const MAX_PDF_PAGES: usize = 10_000;
/// Most bytes of text one document may yield (PDF and DOCX text can be larger than the file).
pub const MAX_TEXT_BYTES: usize = 128 * 1024 * 1024;

/// The text of one source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Plain text; paragraphs separated by a blank line.
    pub text: String,
}

/// The formats [`parse`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Html,
    Csv,
    Json,
    Pdf,
    Docx,
}

impl Format {
    /// The format for a file extension (without the dot, any case).
    pub fn from_extension(ext: &str) -> Option<Format> {
        Some(match ext.to_ascii_lowercase().as_str() {
            "txt" => Format::Text,
            "md" | "markdown" => Format::Markdown,
            "html" | "htm" => Format::Html,
            "csv" => Format::Csv,
            "json" => Format::Json,
            "pdf" => Format::Pdf,
            "docx" => Format::Docx,
            _ => return None,
        })
    }

    /// The format for a MIME type; parameters (`; charset=utf-8`) are ignored.
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        Some(match essence.to_ascii_lowercase().as_str() {
            "text/plain" => Format::Text,
            "text/markdown" | "text/x-markdown" => Format::Markdown,
            "text/html" | "application/xhtml+xml" => Format::Html,
            "text/csv" => Format::Csv,
            "application/json" => Format::Json,
            "application/pdf" => Format::Pdf,
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => {
                Format::Docx
            }
            _ => return None,
        })
    }
}

/// Why a file yielded no text.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{name}: Bedrock knowledge bases ingest .txt, .md, .html, .csv, .json, .pdf and .docx; this file is {found}")]
    Unsupported { name: String, found: String },
    #[error("{name}: the file is {size} bytes; the most a knowledge base ingests is {limit} bytes per document")]
    TooLarge {
        name: String,
        size: usize,
        limit: usize,
    },
    #[error(
        "{name}: the text is not valid UTF-8 (first bad byte at offset {offset}); save it as UTF-8"
    )]
    NotUtf8 { name: String, offset: usize },
    #[error("{name}: CSV: {reason}")]
    Csv { name: String, reason: String },
    #[error("{name}: JSON: {reason}")]
    Json { name: String, reason: String },
    #[error("{name}: PDF: {reason}")]
    Pdf { name: String, reason: String },
    #[error("{name}: DOCX: {reason}")]
    Docx { name: String, reason: String },
    #[error("{name}: the extracted text is over {limit} bytes")]
    TextTooLarge { name: String, limit: usize },
    #[error("metadata file: {0}")]
    Sidecar(String),
}

/// Parses a source file into text.
///
/// `name` is the object key or file name; its extension picks the format
/// unless `content_type` names a supported format (a generic type such as
/// `application/octet-stream` falls back to the extension).
pub fn parse(bytes: &[u8], name: &str, content_type: Option<&str>) -> Result<Document, ParseError> {
    let format = content_type
        .and_then(Format::from_content_type)
        .or_else(|| extension(name).and_then(Format::from_extension));
    let Some(format) = format else {
        let found = match extension(name) {
            Some(ext) => format!(".{}", ext.to_ascii_lowercase()),
            None => match content_type {
                Some(ct) if !ct.trim().is_empty() => format!("{ct} with no known extension"),
                _ => "without an extension".to_string(),
            },
        };
        return Err(ParseError::Unsupported {
            name: name.to_string(),
            found,
        });
    };
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(ParseError::TooLarge {
            name: name.to_string(),
            size: bytes.len(),
            limit: MAX_INPUT_BYTES,
        });
    }
    let text = match format {
        Format::Text | Format::Markdown => normalize_newlines(&decode_text(bytes, name)?),
        Format::Html => html::to_text(&decode_text(bytes, name)?),
        Format::Csv => {
            csv::to_text(&decode_text(bytes, name)?).map_err(|reason| ParseError::Csv {
                name: name.to_string(),
                reason,
            })?
        }
        Format::Json => {
            json::to_text(&decode_text(bytes, name)?).map_err(|reason| ParseError::Json {
                name: name.to_string(),
                reason,
            })?
        }
        Format::Pdf => pdf::to_text(bytes).map_err(|reason| ParseError::Pdf {
            name: name.to_string(),
            reason,
        })?,
        Format::Docx => docx::to_text(bytes).map_err(|reason| ParseError::Docx {
            name: name.to_string(),
            reason,
        })?,
    };
    if text.len() > MAX_TEXT_BYTES {
        return Err(ParseError::TextTooLarge {
            name: name.to_string(),
            limit: MAX_TEXT_BYTES,
        });
    }
    Ok(Document { text })
}

/// The extension of the last path segment, if it has one.
fn extension(name: &str) -> Option<&str> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    match base.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() => Some(ext),
        _ => None,
    }
}

/// Bytes to a string: UTF-8 (BOM dropped) or UTF-16 with a BOM.
fn decode_text(bytes: &[u8], name: &str) -> Result<String, ParseError> {
    let utf16 = |be: bool| -> Result<String, ParseError> {
        let units = bytes[2..].chunks(2).map(|c| {
            let pair = [c[0], *c.get(1).unwrap_or(&0)];
            if be {
                u16::from_be_bytes(pair)
            } else {
                u16::from_le_bytes(pair)
            }
        });
        char::decode_utf16(units)
            .enumerate()
            .map(|(i, c)| {
                c.map_err(|_| ParseError::NotUtf8 {
                    name: name.to_string(),
                    offset: 2 + 2 * i,
                })
            })
            .collect()
    };
    match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => utf8(rest, name, 3),
        [0xFF, 0xFE, ..] => utf16(false),
        [0xFE, 0xFF, ..] => utf16(true),
        _ => utf8(bytes, name, 0),
    }
}

fn utf8(bytes: &[u8], name: &str, base: usize) -> Result<String, ParseError> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => Err(ParseError::NotUtf8 {
            name: name.to_string(),
            offset: base + e.valid_up_to(),
        }),
    }
}

/// `\r\n` and lone `\r` become `\n`.
pub(crate) fn normalize_newlines(s: &str) -> String {
    if !s.contains('\r') {
        return s.to_string();
    }
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// Joins blocks with blank lines, dropping empty ones, and trims each line's
/// trailing spaces: the shape every parser hands back.
pub(crate) fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0usize;
    for line in text.split('\n') {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_format_by_extension_case_insensitively() {
        let d = parse(b"hello", "dir/Notes.TXT", None).unwrap();
        assert_eq!(d.text, "hello");
        let d = parse(b"# Title\r\n\r\nBody *em*", "a.Markdown", None).unwrap();
        assert_eq!(d.text, "# Title\n\nBody *em*");
    }

    #[test]
    fn content_type_wins_over_extension_when_known() {
        let d = parse(
            b"<p>x &amp; y</p>",
            "blob",
            Some("text/html; charset=utf-8"),
        )
        .unwrap();
        assert_eq!(d.text, "x & y");
        let d = parse(b"plain", "a.txt", Some("application/octet-stream")).unwrap();
        assert_eq!(d.text, "plain");
    }

    #[test]
    fn unsupported_names_the_extension() {
        let e = parse(b"x", "report.xlsx", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "report.xlsx: Bedrock knowledge bases ingest .txt, .md, .html, .csv, .json, .pdf and .docx; this file is .xlsx"
        );
        let e = parse(b"x", "README", None).unwrap_err();
        assert!(
            e.to_string().ends_with("this file is without an extension"),
            "{e}"
        );
        let e = parse(b"x", ".bashrc", Some("")).unwrap_err();
        assert!(matches!(e, ParseError::Unsupported { .. }));
    }

    #[test]
    fn too_large_is_refused_before_parsing() {
        let big = vec![b'a'; MAX_INPUT_BYTES + 1];
        let e = parse(&big, "big.txt", None).unwrap_err();
        assert!(matches!(e, ParseError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn text_encodings() {
        assert_eq!(parse(b"\xEF\xBB\xBFhi", "a.txt", None).unwrap().text, "hi");
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("h\u{e9}".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(parse(&le, "a.txt", None).unwrap().text, "h\u{e9}");
        let be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain("ok".encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        assert_eq!(parse(&be, "a.txt", None).unwrap().text, "ok");
        let e = parse(b"caf\xE9", "latin1.txt", None).unwrap_err();
        assert!(matches!(e, ParseError::NotUtf8 { offset: 3, .. }), "{e}");
        assert!(e.to_string().contains("save it as UTF-8"));
    }

    #[test]
    fn tidy_collapses_blank_runs() {
        assert_eq!(tidy("\n\n a \n\n\n\nb\nc  \n\n"), " a\n\nb\nc");
    }

    mod never_panics {
        use proptest::prelude::*;

        use super::super::*;

        /// A valid file with some bytes overwritten, to get past the magic numbers.
        fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
            let len = valid.len();
            proptest::collection::vec((0..len, any::<u8>()), 1..8).prop_map(move |edits| {
                let mut bytes = valid.clone();
                for (at, b) in edits {
                    bytes[at] = b;
                }
                bytes
            })
        }

        fn sample_pdf() -> Vec<u8> {
            crate::pdf::tests::pdf(&[
                "BT /F1 12 Tf 72 720 Td (Hello) Tj 0 -14 Td [(a)-300(b)] TJ ET",
            ])
        }

        fn sample_docx() -> Vec<u8> {
            crate::docx::tests::docx("<w:p><w:r><w:t>Hi</w:t><w:tab/></w:r></w:p><w:tbl><w:tr><w:tc><w:p/></w:tc></w:tr></w:tbl>")
        }

        proptest! {
            #[test]
            fn any_bytes_any_extension(bytes in proptest::collection::vec(any::<u8>(), 0..512),
                                       ext in prop::sample::select(vec!["txt", "md", "html", "csv", "json", "pdf", "docx", "xlsx"])) {
                let _ = parse(&bytes, &format!("f.{ext}"), None);
            }

            #[test]
            fn any_text_any_text_format(text in ".{0,300}",
                                        ext in prop::sample::select(vec!["txt", "md", "html", "csv", "json"])) {
                let _ = parse(text.as_bytes(), &format!("f.{ext}"), None);
            }

            #[test]
            fn markup_soup(parts in proptest::collection::vec(prop::sample::select(vec![
                "<", ">", "</", "<p>", "</p>", "<script>", "</script", "<!--", "-->", "&", "&amp;", "&#x", "&#99999999;",
                ";", "\"", "'", ",", "\n", "\r", "{", "}", "[", "]", ":", "x", "\u{e9}", "<pre>", "<td>",
            ]), 0..60), ext in prop::sample::select(vec!["html", "csv", "json"])) {
                let _ = parse(parts.concat().as_bytes(), &format!("f.{ext}"), None);
            }

            #[test]
            fn mutated_pdf(bytes in mutated(sample_pdf())) {
                let _ = parse(&bytes, "f.pdf", None);
            }

            #[test]
            fn truncated_pdf(cut in 0usize..400) {
                let pdf = sample_pdf();
                let _ = parse(&pdf[..cut.min(pdf.len())], "f.pdf", None);
            }

            #[test]
            fn mutated_docx(bytes in mutated(sample_docx())) {
                let _ = parse(&bytes, "f.docx", None);
            }

            #[test]
            fn sidecar_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = parse_sidecar(&bytes);
            }
        }
    }

    #[test]
    fn every_format_end_to_end() {
        let pdf = crate::pdf::tests::pdf(&[
            "BT /F1 12 Tf 72 720 Td (Page one) Tj ET",
            "BT /F1 12 Tf 72 720 Td (Page two) Tj ET",
        ]);
        assert_eq!(
            parse(&pdf, "x.PDF", None).unwrap().text,
            "Page one\n\nPage two"
        );
        let docx = crate::docx::tests::docx(
            "<w:p><w:r><w:t>Para one</w:t></w:r></w:p><w:p><w:r><w:t>Para two</w:t></w:r></w:p>",
        );
        assert_eq!(
            parse(&docx, "x.docx", None).unwrap().text,
            "Para one\n\nPara two"
        );
        let mime = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
        assert_eq!(
            parse(&docx, "upload", Some(mime)).unwrap().text,
            "Para one\n\nPara two"
        );
        assert_eq!(
            parse(b"a,b\n1,2", "t.csv", None).unwrap().text,
            "a: 1, b: 2"
        );
        assert_eq!(
            parse(b"{\"a\":[1]}", "t.json", None).unwrap().text,
            "a[0]: 1"
        );
        assert_eq!(parse(b"<p>x</p>", "t.htm", None).unwrap().text, "x");
        let e = parse(b"{", "t.json", None).unwrap_err().to_string();
        assert!(e.starts_with("t.json: JSON: "), "{e}");
        let e = parse(b"junk", "t.pdf", None).unwrap_err().to_string();
        assert!(
            e.starts_with("t.pdf: PDF: the file is not a readable PDF"),
            "{e}"
        );
    }
}
