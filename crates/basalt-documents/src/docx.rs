//! DOCX to text: the paragraphs of `word/document.xml`.
//!
//! `w:p` is a paragraph (blocks separated by a blank line), `w:t` text,
//! `w:tab` a tab, `w:br`/`w:cr` a line break. In tables each row is a line
//! and cells are separated by tabs. Deleted text (`w:delText`), field codes
//! (`w:instrText`) and the fallback copy of text boxes (`mc:Fallback`) are
//! skipped. Not read: headers, footers, footnotes, comments, embedded objects.

use std::io::{Cursor, Read};

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::{MAX_DOCX_XML_BYTES, MAX_TEXT_BYTES};

pub(crate) fn to_text(bytes: &[u8]) -> Result<String, String> {
    read(bytes, MAX_DOCX_XML_BYTES)
}

fn read(bytes: &[u8], cap: u64) -> Result<String, String> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("the file is not a readable DOCX (zip: {e})"))?;
    let xml = {
        let mut entry = archive.by_name("word/document.xml").map_err(|_| {
            "the file has no word/document.xml; is it really a Word document?".to_string()
        })?;
        if entry.size() > cap {
            return Err(too_big(cap));
        }
        // The declared size can lie: read at most one byte past the cap.
        let mut xml = Vec::new();
        (&mut entry)
            .take(cap + 1)
            .read_to_end(&mut xml)
            .map_err(|e| format!("word/document.xml could not be decompressed ({e})"))?;
        if xml.len() as u64 > cap {
            return Err(too_big(cap));
        }
        xml
    };
    paragraphs(&xml)
}

fn too_big(cap: u64) -> String {
    format!("word/document.xml inflates to more than {cap} bytes")
}

fn paragraphs(xml: &[u8]) -> Result<String, String> {
    let mut reader = Reader::from_reader(xml);
    let mut out = String::new();
    let mut in_text = false;
    let mut run_depth = 0usize;
    let mut table_depth = 0usize;
    let mut skip_depth = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| {
            format!(
                "word/document.xml is not valid XML at byte {} ({e})",
                reader.buffer_position()
            )
        })?;
        match event {
            Event::Eof => break,
            Event::Start(e) => match e.local_name().as_ref() {
                b"Fallback" => skip_depth += 1,
                _ if skip_depth > 0 => {}
                b"t" => in_text = true,
                b"r" => run_depth += 1,
                b"tbl" => {
                    table_depth += 1;
                    out.push_str("\n\n");
                }
                _ => {}
            },
            Event::End(e) => match e.local_name().as_ref() {
                b"Fallback" => skip_depth = skip_depth.saturating_sub(1),
                _ if skip_depth > 0 => {}
                b"t" => in_text = false,
                b"r" => run_depth = run_depth.saturating_sub(1),
                b"p" if table_depth > 0 => out.push(' '),
                b"p" => out.push_str("\n\n"),
                b"tc" => {
                    out.truncate(out.trim_end_matches(' ').len());
                    out.push('\t');
                }
                b"tr" => {
                    out.truncate(out.trim_end_matches([' ', '\t']).len());
                    out.push('\n');
                }
                b"tbl" => {
                    table_depth = table_depth.saturating_sub(1);
                    out.push_str("\n\n");
                }
                _ => {}
            },
            Event::Empty(e) if skip_depth == 0 && run_depth > 0 => match e.local_name().as_ref() {
                b"tab" => out.push('\t'),
                b"br" | b"cr" => out.push('\n'),
                _ => {}
            },
            Event::Text(t) if in_text && skip_depth == 0 => {
                out.push_str(&t.decode().map_err(|e| format!("word/document.xml: {e}"))?);
            }
            Event::CData(t) if in_text && skip_depth == 0 => {
                out.push_str(&String::from_utf8_lossy(&t));
            }
            Event::GeneralRef(r) if in_text && skip_depth == 0 => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    out.push(c);
                } else if let Some(s) = r
                    .decode()
                    .ok()
                    .and_then(|n| quick_xml::escape::resolve_xml_entity(&n))
                {
                    out.push_str(s);
                }
            }
            _ => {}
        }
        if out.len() > MAX_TEXT_BYTES {
            return Err(format!("the extracted text is over {MAX_TEXT_BYTES} bytes"));
        }
    }
    Ok(crate::tidy(&out))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::to_text;

    /// A DOCX holding `body` inside `<w:body>`.
    pub(crate) fn docx(body: &str) -> Vec<u8> {
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"><w:body>{body}</w:body></w:document>"#
        );
        zip_with(&[
            ("[Content_Types].xml", "<Types/>"),
            ("word/document.xml", &xml),
        ])
    }

    pub(crate) fn zip_with(files: &[(&str, &str)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, content) in files {
            w.start_file(*name, opts).unwrap();
            w.write_all(content.as_bytes()).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn paragraphs_runs_tabs_and_breaks() {
        let body = r#"<w:p><w:pPr><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr>
            <w:r><w:t>Hello </w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t xml:space="preserve">bold &amp; brave</w:t></w:r></w:p>
            <w:p><w:r><w:t>a</w:t><w:tab/><w:t>b</w:t><w:br/><w:t>c&#233;</w:t></w:r></w:p>
            <w:p><w:del><w:r><w:delText>gone</w:delText></w:r></w:del><w:r><w:instrText>PAGE</w:instrText><w:t>kept</w:t></w:r></w:p>"#;
        assert_eq!(
            to_text(&docx(body)).unwrap(),
            "Hello bold & brave\n\na\tb\nc\u{e9}\n\nkept"
        );
    }

    #[test]
    fn tables_and_text_boxes() {
        let body = r#"<w:p><w:r><w:t>Before</w:t></w:r></w:p>
            <w:tbl><w:tr><w:tc><w:p><w:r><w:t>k</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>v1</w:t></w:r></w:p><w:p><w:r><w:t>v2</w:t></w:r></w:p></w:tc></w:tr>
            <w:tr><w:tc><w:p><w:r><w:t>x</w:t></w:r></w:p></w:tc><w:tc><w:p/></w:tc></w:tr></w:tbl>
            <w:p><w:r><mc:AlternateContent><mc:Choice><w:t>box</w:t></mc:Choice><mc:Fallback><w:t>box</w:t></mc:Fallback></mc:AlternateContent></w:r></w:p>"#;
        assert_eq!(
            to_text(&docx(body)).unwrap(),
            "Before\n\nk\tv1 v2\nx\n\nbox"
        );
    }

    #[test]
    fn bad_archives_are_errors() {
        assert!(to_text(b"PK\x03\x04junk")
            .unwrap_err()
            .contains("not a readable DOCX"));
        let no_doc = zip_with(&[("other.xml", "<x/>")]);
        assert!(to_text(&no_doc)
            .unwrap_err()
            .contains("no word/document.xml"));
        let bad_xml = zip_with(&[("word/document.xml", "<w:document><w:p></w:r></w:document>")]);
        assert!(
            to_text(&bad_xml).unwrap_err().contains("not valid XML"),
            "{:?}",
            to_text(&bad_xml)
        );
    }

    #[test]
    fn zip_bomb_is_refused() {
        // 1 MiB of spaces deflates to about a kilobyte; a 64 KiB cap refuses it.
        let body = " ".repeat(1 << 20);
        let bytes = docx(&body);
        assert!(bytes.len() < 8 << 10, "{}", bytes.len());
        assert!(super::read(&bytes, 64 << 10)
            .unwrap_err()
            .contains("inflates to more than 65536 bytes"));
        assert_eq!(super::read(&bytes, 2 << 20).unwrap(), "");
    }
}
