//! HTML to visible text: a forgiving one-pass tag scanner, not a DOM.
//!
//! Drops comments, `<script>`, `<style>` and other non-text elements;
//! paragraph-level elements become blank lines, `<br>`/`<li>`/`<tr>` line
//! breaks, table cells tabs; whitespace collapses as a browser would, except
//! inside `<pre>`; character references are decoded.

/// Elements whose content is never visible text.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "svg", "math", "iframe", "object", "canvas",
];
/// Elements that start and end a paragraph.
const PARAGRAPH: &[&str] = &[
    "p",
    "div",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "section",
    "article",
    "blockquote",
    "pre",
    "table",
    "ul",
    "ol",
    "dl",
    "title",
    "hr",
    "header",
    "footer",
    "main",
    "nav",
    "aside",
    "figure",
    "form",
    "address",
    "details",
    "summary",
    "body",
    "html",
    "caption",
    "fieldset",
];
/// Elements that start and end a line.
const LINE: &[&str] = &[
    "br",
    "li",
    "tr",
    "dt",
    "dd",
    "figcaption",
    "option",
    "legend",
];
/// Elements that separate cells.
const CELL: &[&str] = &["td", "th"];

pub(crate) fn to_text(input: &str) -> String {
    // ASCII lowercasing keeps byte offsets, so searches in `lower` index `input`.
    let lower = input.to_ascii_lowercase();
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len() / 2);
    let mut pre_depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'<' => {
                if lower[i..].starts_with("<!--") {
                    i = match lower[i + 4..].find("-->") {
                        Some(end) => i + 4 + end + 3,
                        None => bytes.len(),
                    };
                    continue;
                }
                let Some((name, closing, end)) = scan_tag(bytes, &lower, i) else {
                    // A '<' that opens no tag is text ("a < b").
                    push_text(&mut out, "<", pre_depth > 0);
                    i += 1;
                    continue;
                };
                i = end;
                if name.is_empty() {
                    continue; // <!DOCTYPE>, <?xml?>, </> and the like
                }
                if !closing && SKIPPED.contains(&name.as_str()) {
                    // Skip to the matching end tag (or to the end: unclosed script hides the rest).
                    let close = format!("</{name}");
                    i = match lower[i..].find(&close) {
                        Some(at) => match lower[i + at..].find('>') {
                            Some(gt) => i + at + gt + 1,
                            None => bytes.len(),
                        },
                        None => bytes.len(),
                    };
                    continue;
                }
                if name == "pre" {
                    pre_depth = if closing {
                        pre_depth.saturating_sub(1)
                    } else {
                        pre_depth + 1
                    };
                }
                if PARAGRAPH.contains(&name.as_str()) {
                    out.push_str("\n\n");
                } else if name == "br" || (LINE.contains(&name.as_str()) && !out.ends_with('\n')) {
                    // Consecutive <br> make a blank line; </li><li> does not.
                    out.push('\n');
                } else if CELL.contains(&name.as_str())
                    && !closing
                    && !out.is_empty()
                    && !out.ends_with('\n')
                {
                    out.push('\t');
                }
            }
            b'&' => {
                let (decoded, len) = decode_entity(&input[i..]);
                push_text(&mut out, decoded.as_deref().unwrap_or("&"), pre_depth > 0);
                i += len;
            }
            _ => {
                let end = input[i..].find(['<', '&']).map_or(bytes.len(), |n| i + n);
                push_text(&mut out, &input[i..end], pre_depth > 0);
                i = end;
            }
        }
    }
    crate::tidy(&crate::normalize_newlines(&out))
}

/// Reads the tag starting at `start` (`bytes[start] == b'<'`): its lowercase
/// name ("" for declarations and processing instructions), whether it closes,
/// and the index after its `>`. `None` when this '<' does not open a tag.
fn scan_tag(bytes: &[u8], lower: &str, start: usize) -> Option<(String, bool, usize)> {
    let mut j = start + 1;
    let closing = bytes.get(j) == Some(&b'/');
    if closing {
        j += 1;
    }
    let first = *bytes.get(j)?;
    let declaration = first == b'!' || first == b'?';
    let opens_tag = declaration || first.is_ascii_alphabetic() || (closing && first == b'>');
    if !opens_tag {
        return None;
    }
    let name_start = j;
    while j < bytes.len()
        && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'-' || bytes[j] == b':')
    {
        j += 1;
    }
    let name = if declaration {
        String::new()
    } else {
        lower[name_start..j].to_string()
    };
    // Find the closing '>' outside quoted attribute values.
    let mut quote: Option<u8> = None;
    while j < bytes.len() {
        let b = bytes[j];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'>' => return Some((name, closing, j + 1)),
            None => {}
        }
        j += 1;
    }
    Some((name, closing, bytes.len()))
}

/// Appends text, collapsing whitespace to single spaces outside `<pre>`.
fn push_text(out: &mut String, text: &str, pre: bool) {
    if pre {
        out.push_str(text);
        return;
    }
    for (k, word) in text
        .split(|c: char| c.is_whitespace() && c != '\u{a0}')
        .enumerate()
    {
        if k > 0 && !out.ends_with([' ', '\n', '\t']) && !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
}

/// Decodes the character reference at the start of `s` (which starts with
/// '&'): the text it stands for and its length; `(None, 1)` when it is not one.
fn decode_entity(s: &str) -> (Option<String>, usize) {
    let Some(semi) = s[1..]
        .char_indices()
        .take(32)
        .find(|&(_, c)| c == ';')
        .map(|(k, _)| k + 1)
    else {
        return (None, 1);
    };
    let body = &s[1..semi];
    let decoded = if let Some(num) = body.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => num.parse::<u32>().ok(),
        };
        code.map(|c| char::from_u32(c).unwrap_or('\u{FFFD}').to_string())
    } else {
        named_entity(body).map(str::to_string)
    };
    match decoded {
        Some(d) => (Some(d), semi + 1),
        None => (None, 1),
    }
}

/// The named references that turn up in real pages; others are left as written.
fn named_entity(name: &str) -> Option<&'static str> {
    Some(match name {
        "amp" | "AMP" => "&",
        "lt" | "LT" => "<",
        "gt" | "GT" => ">",
        "quot" | "QUOT" => "\"",
        "apos" => "'",
        "nbsp" => " ",
        "ensp" | "emsp" | "thinsp" => " ",
        "ndash" => "\u{2013}",
        "mdash" => "\u{2014}",
        "lsquo" => "\u{2018}",
        "rsquo" => "\u{2019}",
        "ldquo" => "\u{201c}",
        "rdquo" => "\u{201d}",
        "sbquo" => "\u{201a}",
        "bdquo" => "\u{201e}",
        "laquo" => "\u{ab}",
        "raquo" => "\u{bb}",
        "hellip" => "\u{2026}",
        "bull" => "\u{2022}",
        "middot" => "\u{b7}",
        "copy" => "\u{a9}",
        "reg" => "\u{ae}",
        "trade" => "\u{2122}",
        "deg" => "\u{b0}",
        "plusmn" => "\u{b1}",
        "times" => "\u{d7}",
        "divide" => "\u{f7}",
        "micro" => "\u{b5}",
        "para" => "\u{b6}",
        "sect" => "\u{a7}",
        "euro" => "\u{20ac}",
        "pound" => "\u{a3}",
        "yen" => "\u{a5}",
        "cent" => "\u{a2}",
        "frac12" => "\u{bd}",
        "frac14" => "\u{bc}",
        "frac34" => "\u{be}",
        "larr" => "\u{2190}",
        "rarr" => "\u{2192}",
        "uarr" => "\u{2191}",
        "darr" => "\u{2193}",
        "le" => "\u{2264}",
        "ge" => "\u{2265}",
        "ne" => "\u{2260}",
        "shy" | "zwj" | "zwnj" => "",
        "aacute" => "\u{e1}",
        "agrave" => "\u{e0}",
        "acirc" => "\u{e2}",
        "auml" => "\u{e4}",
        "eacute" => "\u{e9}",
        "egrave" => "\u{e8}",
        "ecirc" => "\u{ea}",
        "iacute" => "\u{ed}",
        "oacute" => "\u{f3}",
        "ouml" => "\u{f6}",
        "uacute" => "\u{fa}",
        "uuml" => "\u{fc}",
        "ccedil" => "\u{e7}",
        "ntilde" => "\u{f1}",
        "szlig" => "\u{df}",
        "Auml" => "\u{c4}",
        "Ouml" => "\u{d6}",
        "Uuml" => "\u{dc}",
        "Eacute" => "\u{c9}",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::to_text;

    #[test]
    fn drops_script_style_and_comments() {
        let html = r#"<!DOCTYPE html><html><head><title>T</title><style>p{color:red}</style>
            <script type="text/javascript">if (a < b) { x = "</p>"; }</script></head>
            <body><!-- hidden --><p>Visible</p><SCRIPT>bad()</SCRIPT></body></html>"#;
        assert_eq!(to_text(html), "T\n\nVisible");
    }

    #[test]
    fn blocks_become_breaks_and_whitespace_collapses() {
        let html =
            "<h1>Title</h1><p>First   para\n  continues <b>bold</b>.</p><p>Second<br>line two</p>\
                    <ul><li>one</li><li>two</li></ul>";
        assert_eq!(
            to_text(html),
            "Title\n\nFirst para continues bold.\n\nSecond\nline two\n\none\ntwo"
        );
    }

    #[test]
    fn decodes_entities() {
        assert_eq!(
            to_text(
                "<p>Fish &amp; chips &lt;3 &#8212; &#x41;&eacute; &unknown; a&b caf&eacute</p>"
            ),
            "Fish & chips <3 \u{2014} A\u{e9} &unknown; a&b caf&eacute"
        );
        assert_eq!(to_text("a&nbsp;b"), "a b");
    }

    #[test]
    fn pre_keeps_whitespace_and_tables_use_tabs() {
        assert_eq!(to_text("<pre>a  b\n  c</pre>"), "a  b\n  c");
        assert_eq!(
            to_text("<table><tr><th>k</th><th>v</th></tr><tr><td>x</td><td>1</td></tr></table>"),
            "k\tv\nx\t1"
        );
    }

    #[test]
    fn attributes_with_angle_brackets_and_stray_lt() {
        assert_eq!(
            to_text(r#"<a title="x > y" href='/'>link</a> and 1 < 2"#),
            "link and 1 < 2"
        );
        assert_eq!(to_text("unclosed <div class="), "unclosed");
        assert_eq!(to_text("<script>never closed"), "");
    }
}
