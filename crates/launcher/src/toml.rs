//! A small TOML reader, enough for what an exporter writes into `metadata.toml` and what an
//! exec.d program writes to fd 3: tables, arrays of tables, dotted keys, strings of all four
//! kinds, booleans, arrays and inline tables. Numbers and dates are kept as their text.

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::str::Chars;

pub type Table = BTreeMap<String, Value>;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    String(String),
    Bool(bool),
    Array(Vec<Value>),
    Table(Table),
    /// A number or date, as written.
    Other(String),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// Parses a whole document into its root table.
pub fn parse(text: &str) -> Result<Table, String> {
    let mut parser = Parser {
        chars: text.chars().peekable(),
        line: 1,
    };
    parser
        .document()
        .map_err(|e| format!("line {}: {e}", parser.line))
}

struct Parser<'a> {
    chars: Peekable<Chars<'a>>,
    line: usize,
}

impl Parser<'_> {
    fn document(&mut self) -> Result<Table, String> {
        let mut root = Table::new();
        let mut current: Vec<String> = Vec::new();
        loop {
            self.skip_whitespace_and_comments();
            match self.chars.peek() {
                None => return Ok(root),
                Some('[') => {
                    self.next();
                    let array = self.eat('[');
                    let path = self.key()?;
                    self.expect(']')?;
                    if array {
                        self.expect(']')?;
                        let (last, parents) = path.split_last().expect("a key has a segment");
                        match table_at(&mut root, parents)?
                            .entry(last.clone())
                            .or_insert_with(|| Value::Array(Vec::new()))
                        {
                            Value::Array(items) => items.push(Value::Table(Table::new())),
                            _ => return Err(format!("`{last}` is not an array of tables")),
                        }
                    } else {
                        table_at(&mut root, &path)?;
                    }
                    current = path;
                }
                Some(_) => {
                    let key = self.key()?;
                    self.expect('=')?;
                    self.skip_spaces();
                    let value = self.value()?;
                    let (last, parents) = key.split_last().expect("a key has a segment");
                    let table = table_at(table_at(&mut root, &current)?, parents)?;
                    if table.insert(last.clone(), value).is_some() {
                        return Err(format!("`{last}` is defined twice"));
                    }
                }
            }
            self.end_of_line()?;
        }
    }

    /// A dotted key: bare, "basic" or 'literal' segments.
    fn key(&mut self) -> Result<Vec<String>, String> {
        let mut segments = Vec::new();
        loop {
            self.skip_spaces();
            let segment = match self.chars.peek() {
                Some('"') => {
                    self.next();
                    self.basic_string()?
                }
                Some('\'') => {
                    self.next();
                    self.literal_string()?
                }
                _ => {
                    let mut bare = String::new();
                    while let Some(&c) = self.chars.peek() {
                        if !(c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                            break;
                        }
                        bare.push(c);
                        self.next();
                    }
                    if bare.is_empty() {
                        return Err("expected a key".to_owned());
                    }
                    bare
                }
            };
            segments.push(segment);
            self.skip_spaces();
            if !self.eat('.') {
                return Ok(segments);
            }
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.chars.peek() {
            Some('"') => {
                self.next();
                if self.eat('"') {
                    if self.eat('"') {
                        return self.multiline_string('"').map(Value::String);
                    }
                    return Ok(Value::String(String::new()));
                }
                self.basic_string().map(Value::String)
            }
            Some('\'') => {
                self.next();
                if self.eat('\'') {
                    if self.eat('\'') {
                        return self.multiline_string('\'').map(Value::String);
                    }
                    return Ok(Value::String(String::new()));
                }
                self.literal_string().map(Value::String)
            }
            Some('[') => {
                self.next();
                let mut items = Vec::new();
                loop {
                    self.skip_whitespace_and_comments();
                    if self.eat(']') {
                        return Ok(Value::Array(items));
                    }
                    items.push(self.value()?);
                    self.skip_whitespace_and_comments();
                    if !self.eat(',') {
                        self.skip_whitespace_and_comments();
                        self.expect(']')?;
                        return Ok(Value::Array(items));
                    }
                }
            }
            Some('{') => {
                self.next();
                let mut table = Table::new();
                self.skip_spaces();
                if self.eat('}') {
                    return Ok(Value::Table(table));
                }
                loop {
                    let key = self.key()?;
                    self.expect('=')?;
                    self.skip_spaces();
                    let value = self.value()?;
                    let (last, parents) = key.split_last().expect("a key has a segment");
                    table_at(&mut table, parents)?.insert(last.clone(), value);
                    self.skip_spaces();
                    if self.eat('}') {
                        return Ok(Value::Table(table));
                    }
                    self.expect(',')?;
                }
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = self.chars.peek() {
                    if matches!(c, ',' | ']' | '}' | '#' | '\n' | '\r') {
                        break;
                    }
                    word.push(c);
                    self.next();
                }
                match word.trim_end() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    "" => Err("expected a value".to_owned()),
                    other => Ok(Value::Other(other.to_owned())),
                }
            }
        }
    }

    /// The rest of a "basic" string, after its opening quote.
    fn basic_string(&mut self) -> Result<String, String> {
        let mut out = String::new();
        loop {
            match self.next_on_line()? {
                '"' => return Ok(out),
                '\\' => out.push(self.escape()?),
                c => out.push(c),
            }
        }
    }

    /// The rest of a 'literal' string, after its opening quote.
    fn literal_string(&mut self) -> Result<String, String> {
        let mut out = String::new();
        loop {
            match self.next_on_line()? {
                '\'' => return Ok(out),
                c => out.push(c),
            }
        }
    }

    /// The rest of a multi-line string, after its three opening quotes.
    fn multiline_string(&mut self, quote: char) -> Result<String, String> {
        // A newline right after the opening delimiter is not part of the string.
        self.eat('\r');
        self.eat('\n');
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err("unterminated multi-line string".to_owned()),
                Some(c) if c == quote => {
                    let mut quotes = 1;
                    while self.chars.peek() == Some(&quote) {
                        self.next();
                        quotes += 1;
                    }
                    if quotes >= 3 {
                        // Up to two quotes may directly precede the closing three.
                        out.extend(std::iter::repeat_n(quote, quotes - 3));
                        return Ok(out);
                    }
                    out.extend(std::iter::repeat_n(quote, quotes));
                }
                Some('\\') if quote == '"' => {
                    if matches!(self.chars.peek(), Some(' ' | '\t' | '\r' | '\n')) {
                        // A line-ending backslash trims the following whitespace.
                        while matches!(self.chars.peek(), Some(' ' | '\t' | '\r' | '\n')) {
                            self.next();
                        }
                    } else {
                        out.push(self.escape()?);
                    }
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn escape(&mut self) -> Result<char, String> {
        let hex = |parser: &mut Self, digits: usize| -> Result<char, String> {
            let code: String = (0..digits).filter_map(|_| parser.next()).collect();
            u32::from_str_radix(&code, 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| format!("invalid unicode escape \\u{code}"))
        };
        match self.next() {
            Some('b') => Ok('\u{8}'),
            Some('t') => Ok('\t'),
            Some('n') => Ok('\n'),
            Some('f') => Ok('\u{c}'),
            Some('r') => Ok('\r'),
            Some('e') => Ok('\u{1b}'),
            Some('"') => Ok('"'),
            Some('\\') => Ok('\\'),
            Some('u') => hex(self, 4),
            Some('U') => hex(self, 8),
            other => Err(format!("invalid escape {other:?}")),
        }
    }

    fn next(&mut self) -> Option<char> {
        let c = self.chars.next();
        if c == Some('\n') {
            self.line += 1;
        }
        c
    }

    /// The next character of a single-line string; its end of line is an error, reported
    /// on the line where the string opened.
    fn next_on_line(&mut self) -> Result<char, String> {
        match self.chars.peek() {
            None | Some('\n') => Err("unterminated string".to_owned()),
            Some(_) => Ok(self.next().expect("peeked a character")),
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.chars.peek() == Some(&c) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        self.skip_spaces();
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected `{c}`"))
        }
    }

    fn skip_spaces(&mut self) {
        while matches!(self.chars.peek(), Some(' ' | '\t')) {
            self.next();
        }
    }

    fn skip_comment(&mut self) {
        if self.chars.peek() == Some(&'#') {
            while !matches!(self.chars.peek(), None | Some('\n')) {
                self.next();
            }
        }
    }

    fn skip_whitespace_and_comments(&mut self) {
        loop {
            self.skip_spaces();
            self.skip_comment();
            if !(self.eat('\r') || self.eat('\n')) {
                return;
            }
        }
    }

    fn end_of_line(&mut self) -> Result<(), String> {
        self.skip_spaces();
        self.skip_comment();
        self.eat('\r');
        match self.chars.peek() {
            None => Ok(()),
            Some('\n') => {
                self.next();
                Ok(())
            }
            Some(c) => Err(format!("unexpected `{c}` after a value")),
        }
    }
}

/// The table at `path` below `table`, created when missing; an array of tables on the way
/// stands for its last element, as TOML headers mean.
fn table_at<'t>(mut table: &'t mut Table, path: &[String]) -> Result<&'t mut Table, String> {
    for segment in path {
        let entry = table
            .entry(segment.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        table = match entry {
            Value::Table(inner) => inner,
            Value::Array(items) => match items.last_mut() {
                Some(Value::Table(inner)) => inner,
                _ => return Err(format!("`{segment}` is not a table")),
            },
            _ => return Err(format!("`{segment}` is not a table")),
        };
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::String(v.to_owned())
    }

    #[test]
    fn values() {
        let cases: &[(&str, Value)] = &[
            (r#"v = "a\"b\\c\n\u00e9""#, s("a\"b\\c\né")),
            (r"v = 'C:\path'", s(r"C:\path")),
            ("v = \"\"", s("")),
            ("v = \"\"\"\nline1\nline2\"\"\"", s("line1\nline2")),
            ("v = \"\"\"a \\\n   b\"\"\"", s("a b")),
            ("v = '''\n'quoted''''", s("'quoted'")),
            ("v = true", Value::Bool(true)),
            ("v = 42 # answer", Value::Other("42".to_owned())),
            (
                "v = [\n  \"a\", # first\n  'b',\n]",
                Value::Array(vec![s("a"), s("b")]),
            ),
            ("v = []", Value::Array(vec![])),
            (
                "v = { x = \"1\", y.z = false }",
                Value::Table(Table::from([
                    ("x".to_owned(), s("1")),
                    (
                        "y".to_owned(),
                        Value::Table(Table::from([("z".to_owned(), Value::Bool(false))])),
                    ),
                ])),
            ),
        ];
        for (text, want) in cases {
            let doc = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(doc.get("v"), Some(want), "{text}");
        }
    }

    #[test]
    fn tables_and_arrays_of_tables() {
        let doc = parse(
            "top = \"t\"\n\n[[items]]\nname = \"a\"\n[items.meta]\nk = \"v\"\n\n[[items]]\n\"name\" = \"b\"\n\n[other.deep]\nx.y = \"z\"\n",
        )
        .expect("parse");
        assert_eq!(doc["top"], s("t"));
        let Value::Array(items) = &doc["items"] else {
            panic!("items is an array")
        };
        assert_eq!(items.len(), 2);
        let Value::Table(first) = &items[0] else {
            panic!("a table")
        };
        assert_eq!(first["name"], s("a"));
        assert_eq!(
            first["meta"],
            Value::Table(Table::from([("k".to_owned(), s("v"))]))
        );
        let Value::Table(other) = &doc["other"] else {
            panic!("a table")
        };
        let Value::Table(deep) = &other["deep"] else {
            panic!("a table")
        };
        assert_eq!(
            deep["x"],
            Value::Table(Table::from([("y".to_owned(), s("z"))]))
        );
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line) in [
            ("a = \"open\n", 1),
            ("a = 1\nb = \"x\" junk\n", 2),
            ("a = 1\na = 2\n", 2),
            ("\n\n= 3\n", 3),
        ] {
            let error = parse(text).expect_err(text);
            assert!(
                error.starts_with(&format!("line {line}:")),
                "{text}: {error}"
            );
        }
    }
}
