//! CSV (RFC 4180, comma-separated) to one line per row: `header: value, ...`.
//!
//! Naming every value by its column is what makes a row retrievable on its
//! own once the chunker has cut the table apart.

/// Most columns per row.
const MAX_COLUMNS: usize = 10_000;

pub(crate) fn to_text(input: &str) -> Result<String, String> {
    let mut rows = Records::new(input);
    let header = loop {
        match rows.next_record()? {
            None => return Ok(String::new()),
            Some(r) if r.iter().all(|f| f.trim().is_empty()) => continue,
            Some(r) => break r,
        }
    };
    let names: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(k, h)| match one_line(h) {
            h if h.is_empty() => format!("column {}", k + 1),
            h => h,
        })
        .collect();
    let mut out = String::with_capacity(input.len() * 2);
    let mut any_row = false;
    while let Some(record) = rows.next_record()? {
        let mut line = String::new();
        for (k, value) in record.iter().enumerate() {
            let value = one_line(value);
            if value.is_empty() {
                continue; // empty cells say nothing
            }
            if !line.is_empty() {
                line.push_str(", ");
            }
            match names.get(k) {
                Some(name) => line.push_str(name),
                None => line.push_str(&format!("column {}", k + 1)),
            }
            line.push_str(": ");
            line.push_str(&value);
        }
        if line.is_empty() {
            continue;
        }
        out.push_str(&line);
        out.push('\n');
        any_row = true;
    }
    if !any_row {
        // A header with no rows still says something.
        return Ok(names.join(", "));
    }
    out.truncate(out.trim_end().len());
    Ok(out)
}

/// A field on one line, its whitespace runs collapsed.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

struct Records<'a> {
    s: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> Records<'a> {
    fn new(s: &'a str) -> Self {
        Records { s, pos: 0, line: 1 }
    }

    /// The next record's fields, or `None` at the end.
    fn next_record(&mut self) -> Result<Option<Vec<String>>, String> {
        let bytes = self.s.as_bytes();
        if self.pos >= bytes.len() {
            return Ok(None);
        }
        let mut fields = Vec::new();
        let mut field = String::new();
        loop {
            if fields.len() > MAX_COLUMNS {
                return Err(format!(
                    "line {} has more than {MAX_COLUMNS} columns",
                    self.line
                ));
            }
            if self.pos >= bytes.len() {
                fields.push(field);
                return Ok(Some(fields));
            }
            if bytes[self.pos] == b'"' && field.trim().is_empty() {
                // Quoted field: runs to the closing quote; "" is a literal quote.
                let opened = self.line;
                field.clear();
                self.pos += 1;
                loop {
                    let rest = &self.s[self.pos..];
                    let Some(q) = rest.find('"') else {
                        return Err(format!(
                            "the quoted field opened on line {opened} is never closed"
                        ));
                    };
                    field.push_str(&rest[..q]);
                    self.line += rest[..q].matches('\n').count();
                    self.pos += q + 1;
                    if bytes.get(self.pos) == Some(&b'"') {
                        field.push('"');
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                // Anything between the closing quote and the separator is kept (lenient).
                continue;
            }
            let rest = &self.s[self.pos..];
            let stop = rest.find([',', '\n', '\r', '"']).unwrap_or(rest.len());
            field.push_str(&rest[..stop]);
            self.pos += stop;
            match bytes.get(self.pos) {
                None => {}
                Some(b',') => {
                    fields.push(std::mem::take(&mut field));
                    self.pos += 1;
                }
                Some(b'"') => {
                    // A quote inside an unquoted field is literal.
                    field.push('"');
                    self.pos += 1;
                }
                Some(_) => {
                    // \n, \r or \r\n ends the record.
                    if bytes[self.pos] == b'\r' && bytes.get(self.pos + 1) == Some(&b'\n') {
                        self.pos += 1;
                    }
                    self.pos += 1;
                    self.line += 1;
                    fields.push(field);
                    return Ok(Some(fields));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::to_text;

    #[test]
    fn rows_name_their_columns() {
        let csv = "name,year,genre\r\nHeat,1995,crime\nAlien,1979,\n";
        assert_eq!(
            to_text(csv).unwrap(),
            "name: Heat, year: 1995, genre: crime\nname: Alien, year: 1979"
        );
    }

    #[test]
    fn quoted_fields() {
        let csv = "title,quote\n\"Casablanca, 1942\",\"Here's looking at you, \"\"kid\"\".\nSecond line\"\n";
        assert_eq!(
            to_text(csv).unwrap(),
            "title: Casablanca, 1942, quote: Here's looking at you, \"kid\". Second line"
        );
    }

    #[test]
    fn ragged_rows_blank_lines_and_missing_headers() {
        let csv = "a,,c\n\n1,2,3,4\n,,\n";
        assert_eq!(
            to_text(csv).unwrap(),
            "a: 1, column 2: 2, c: 3, column 4: 4"
        );
        assert_eq!(to_text("only,header\n").unwrap(), "only, header");
        assert_eq!(to_text("").unwrap(), "");
    }

    #[test]
    fn unclosed_quote_is_an_error_naming_the_line() {
        let e = to_text("a,b\n1,\"open\n2,3\n").unwrap_err();
        assert_eq!(e, "the quoted field opened on line 2 is never closed");
    }
}
