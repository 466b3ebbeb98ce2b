//! Row counting in a pg_dump plain-format dump while it streams, so the counts recorded at backup
//! time come from the very snapshot that was stored.
//!
//! The dump is lexed as psql reads it: single-quoted strings (with backslash escapes in `E''`
//! strings, or everywhere once `SET standard_conforming_strings = off`), double-quoted identifiers,
//! dollar-quoted bodies, `--` and nested `/* */` comments, and backslash meta-commands
//! (`\restrict`). Only a top-level statement `COPY <schema>.<table> [(…)] FROM stdin;` opens a data
//! block; its rows are the lines up to `\.`. So text inside a function body, a comment or a string
//! that merely looks like a `COPY` line opens nothing, and a table name holding ` (`, a newline or
//! `;` is read whole.
//!
//! Keys are [`pg_key`]s of the parsed names: a matching key, never SQL. The restore counts rows in
//! tables listed from the restored database's catalog, quoted by the server (see `postgres.rs`).
//!
//! Memory stays bounded: a statement's first [`HEAD_CAP`] bytes and last few bytes are kept.

use super::scan::Scanner;
use std::collections::BTreeMap;

/// Bytes kept from the start of each statement (enough for two quoted 63-byte names, doubled).
const HEAD_CAP: usize = 1024;
const TAIL: &[u8] = b" FROM stdin";
/// The longest dollar-quote tag followed (pg_dump's own tags are a few bytes).
const TAG_CAP: usize = 256;

/// The key of table `schema.table` in row-count maps: each part bare when it is a plain lower-case
/// name (`[a-z_][a-z0-9_]*`), otherwise double-quoted with `"` doubled. One key per table.
pub fn pg_key(schema: &str, table: &str) -> String {
    format!("{}.{}", key_part(schema), key_part(table))
}

fn key_part(s: &str) -> String {
    let plain = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

/// One identifier at the start of `s` (quoted, or bare and folded to lower case), and the rest.
fn ident(s: &[u8]) -> Option<(String, &[u8])> {
    if let Some(rest) = s.strip_prefix(b"\"") {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            match rest.get(i)? {
                b'"' if rest.get(i + 1) == Some(&b'"') => {
                    out.push(b'"');
                    i += 2;
                }
                b'"' => break,
                b => {
                    out.push(*b);
                    i += 1;
                }
            }
        }
        return Some((String::from_utf8(out).ok()?, &rest[i + 1..]));
    }
    let n = s
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'$' || **b >= 0x80)
        .count();
    if n == 0 || s[0].is_ascii_digit() || s[0] == b'$' {
        return None;
    }
    let name = String::from_utf8(s[..n].to_vec()).ok()?;
    Some((name.to_ascii_lowercase(), &s[n..]))
}

/// `schema.table` at the start of `s`, and the rest.
fn qualified(s: &[u8]) -> Option<((String, String), &[u8])> {
    let (schema, rest) = ident(s)?;
    let (table, rest) = ident(rest.strip_prefix(b".")?)?;
    Some(((schema, table), rest))
}

/// A recorded key (a [`pg_key`], or a name as an older scanner copied it from the dump) in
/// [`pg_key`] form; `None` if it does not parse as one qualified name.
pub fn normalize_key(key: &str) -> Option<String> {
    match qualified(key.as_bytes())? {
        ((s, t), []) => Some(pg_key(&s, &t)),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Lex {
    #[default]
    Code,
    /// A `-` or `/` that may open a comment.
    MaybeComment(u8),
    LineComment,
    /// Nesting depth and the previous byte.
    BlockComment(u32, u8),
    /// Inside '…'; `true` when backslash escapes apply.
    Single(bool),
    SingleEscaped(bool),
    /// A `'` inside '…': the string ends unless another `'` follows.
    SingleQuote(bool),
    Double,
    DoubleQuote,
    /// After a `$` in code: reading a possible dollar-quote tag.
    DollarTag(Vec<u8>),
    /// Inside a dollar-quoted body: the tag and how many bytes of `$tag$` are matched.
    Dollar(Vec<u8>, usize),
    /// A backslash meta-command, up to the end of the line.
    Meta,
    /// The rest of a `COPY … FROM stdin;` line: rows start on the next line.
    CopyLine,
    /// Rows of a data block: the first bytes of the current line, its length, and the row count.
    Data([u8; 3], usize, u64),
}

/// pg_dump plain format: counts the rows of each top-level `COPY … FROM stdin;` block.
#[derive(Default)]
pub struct PgCopyScanner {
    lex: Lex,
    started: bool,
    head: Vec<u8>,
    tail: Vec<u8>,
    prev: [u8; 2],
    backslash_strings: bool,
    copying: Option<String>,
    unparsed: u32,
    counts: BTreeMap<String, u64>,
}

fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

impl PgCopyScanner {
    /// A byte of the current statement, outside comments.
    fn code(&mut self, b: u8) {
        if !self.started {
            if b.is_ascii_whitespace() {
                return;
            }
            self.started = true;
        }
        if self.head.len() < HEAD_CAP {
            self.head.push(b);
        }
        if self.tail.len() == TAIL.len() {
            self.tail.remove(0);
        }
        self.tail.push(b);
    }

    fn end_statement(&mut self) {
        let head = std::mem::take(&mut self.head);
        let tail = std::mem::take(&mut self.tail);
        self.started = false;
        self.prev = [0; 2];
        if head.eq_ignore_ascii_case(b"SET standard_conforming_strings = off") {
            self.backslash_strings = true;
        } else if head.eq_ignore_ascii_case(b"SET standard_conforming_strings = on") {
            self.backslash_strings = false;
        }
        let Some(rest) = head.strip_prefix(b"COPY ") else {
            return;
        };
        if tail != TAIL {
            return;
        }
        let key = match qualified(rest) {
            Some(((s, t), r)) if r.starts_with(b" (") || r == TAIL => pg_key(&s, &t),
            _ => {
                self.unparsed += 1;
                format!("(unparsed COPY statement {})", self.unparsed)
            }
        };
        self.copying = Some(key);
        self.lex = Lex::CopyLine;
    }

    fn byte(&mut self, b: u8) {
        loop {
            match &mut self.lex {
                Lex::Code => {
                    match b {
                        b'-' | b'/' => self.lex = Lex::MaybeComment(b),
                        b';' => self.end_statement(),
                        b'\\' => self.lex = Lex::Meta,
                        b'\'' => {
                            let e =
                                matches!(self.prev[1], b'E' | b'e') && !ident_byte(self.prev[0]);
                            self.code(b);
                            self.lex = Lex::Single(e || self.backslash_strings);
                        }
                        b'"' => {
                            self.code(b);
                            self.lex = Lex::Double;
                        }
                        b'$' if !ident_byte(self.prev[1]) => {
                            self.code(b);
                            self.lex = Lex::DollarTag(Vec::new());
                        }
                        _ => self.code(b),
                    }
                    if self.lex == Lex::Code {
                        self.prev = [self.prev[1], b];
                    }
                    return;
                }
                Lex::MaybeComment(first) => {
                    let first = *first;
                    match (first, b) {
                        (b'-', b'-') => self.lex = Lex::LineComment,
                        (b'/', b'*') => self.lex = Lex::BlockComment(1, 0),
                        _ => {
                            self.lex = Lex::Code;
                            self.code(first);
                            self.prev = [self.prev[1], first];
                            continue;
                        }
                    }
                    return;
                }
                Lex::LineComment | Lex::Meta => {
                    if b == b'\n' {
                        self.lex = Lex::Code;
                    }
                    return;
                }
                Lex::BlockComment(depth, prev) => {
                    match (*prev, b) {
                        (b'/', b'*') => {
                            *depth += 1;
                            *prev = 0;
                        }
                        (b'*', b'/') => {
                            *depth -= 1;
                            *prev = 0;
                            if *depth == 0 {
                                self.lex = Lex::Code;
                            }
                        }
                        _ => *prev = b,
                    }
                    return;
                }
                Lex::Single(esc) => {
                    let esc = *esc;
                    self.code(b);
                    if b == b'\\' && esc {
                        self.lex = Lex::SingleEscaped(esc);
                    } else if b == b'\'' {
                        self.lex = Lex::SingleQuote(esc);
                    }
                    return;
                }
                Lex::SingleEscaped(esc) => {
                    let esc = *esc;
                    self.code(b);
                    self.lex = Lex::Single(esc);
                    return;
                }
                Lex::SingleQuote(esc) => {
                    if b == b'\'' {
                        let esc = *esc;
                        self.code(b);
                        self.lex = Lex::Single(esc);
                        return;
                    }
                    self.lex = Lex::Code;
                    self.prev = [0, b'\''];
                    continue;
                }
                Lex::Double => {
                    self.code(b);
                    if b == b'"' {
                        self.lex = Lex::DoubleQuote;
                    }
                    return;
                }
                Lex::DoubleQuote => {
                    if b == b'"' {
                        self.code(b);
                        self.lex = Lex::Double;
                        return;
                    }
                    self.lex = Lex::Code;
                    self.prev = [0, b'"'];
                    continue;
                }
                Lex::DollarTag(tag) => {
                    let ok = b.is_ascii_alphabetic() || b == b'_' || b >= 0x80;
                    if b == b'$' {
                        let tag = std::mem::take(tag);
                        self.code(b);
                        self.lex = Lex::Dollar(tag, 0);
                        return;
                    }
                    if (ok || (b.is_ascii_digit() && !tag.is_empty())) && tag.len() < TAG_CAP {
                        tag.push(b);
                        self.code(b);
                        return;
                    }
                    // `$1` or an over-long tag: not a dollar quote.
                    self.lex = Lex::Code;
                    self.prev = [0, b'$'];
                    continue;
                }
                Lex::Dollar(tag, matched) => {
                    let (t, m) = (tag.len(), *matched);
                    if m == t + 1 && b == b'$' {
                        self.lex = Lex::Code;
                        self.code(b);
                        self.prev = [0, b'$'];
                        return;
                    }
                    *matched = if b == b'$' {
                        1
                    } else if m >= 1 && m <= t && tag[m - 1] == b {
                        m + 1
                    } else {
                        0
                    };
                    self.code(b);
                    return;
                }
                Lex::CopyLine => {
                    if b == b'\n' {
                        self.lex = Lex::Data([0; 3], 0, 0);
                    }
                    return;
                }
                Lex::Data(first, len, rows) => {
                    if b != b'\n' {
                        if *len < 3 {
                            first[*len] = b;
                        }
                        *len += 1;
                        return;
                    }
                    let line = &first[..(*len).min(3)];
                    let end = line == b"\\." || line == b"\\.\r";
                    if end {
                        let rows = *rows;
                        let key = self.copying.take().unwrap_or_default();
                        self.counts.insert(key, rows);
                        self.lex = Lex::Code;
                    } else {
                        *rows += 1;
                        *len = 0;
                    }
                    return;
                }
            }
        }
    }
}

impl Scanner for PgCopyScanner {
    fn feed(&mut self, data: &[u8]) {
        for &b in data {
            self.byte(b);
        }
    }
    fn finish(self: Box<Self>) -> BTreeMap<String, u64> {
        let this = *self;
        let mut counts = this.counts;
        // A dump cut inside a data block still reports the block, so verification sees it.
        if let (Lex::Data(_, _, rows), Some(key)) = (this.lex, this.copying) {
            counts.insert(key, rows);
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str, step: usize) -> BTreeMap<String, u64> {
        let mut s: Box<dyn Scanner> = Box::<PgCopyScanner>::default();
        for c in text.as_bytes().chunks(step) {
            s.feed(c);
        }
        s.finish()
    }

    #[test]
    fn keys_are_one_per_table_and_parse_back() {
        assert_eq!(pg_key("public", "a_1"), "public.a_1");
        assert_eq!(pg_key("public", "E"), "public.\"E\"");
        assert_eq!(pg_key("s", "x\"y (z"), "s.\"x\"\"y (z\"");
        assert_ne!(pg_key("a.b", "c"), pg_key("a", "b.c"));
        for (s, t) in [
            ("public", "a"),
            ("My S", "x\ny"),
            ("a.b", "c\"d"),
            ("", "user"),
        ] {
            assert_eq!(
                normalize_key(&pg_key(s, t)).as_deref(),
                Some(&*pg_key(s, t))
            );
        }
        // pg_dump quotes keywords; the key does not.
        assert_eq!(
            normalize_key("public.\"user\"").as_deref(),
            Some("public.user")
        );
        assert_eq!(normalize_key("x AS z; DROP TABLE victim; --"), None);
    }

    #[test]
    fn copy_blocks_with_hostile_names_and_decoys() {
        let dump = "\\restrict abc\nSET standard_conforming_strings = on;\n\
            -- COPY public.fake (a) FROM stdin;\n\
            COPY public.a (id, v) FROM stdin;\n1\tx\n2\ty\\nz\n\\.\n\n\
            COPY public.\"E\" FROM stdin;\n\\.\n\
            CREATE FUNCTION f() RETURNS int AS $_$\nCOPY public.decoy FROM stdin;\n1\n\\.\n$_$;\n\
            COMMENT ON TABLE public.a IS 'it''s\nCOPY public.decoy2 FROM stdin;\n';\n\
            /* nested /* COPY public.decoy3 FROM stdin;\n */ */\n\
            COPY public.\"t (x\" (\"a (\", b) FROM stdin;\n1\n2\n3\n\\.\n\
            COPY public.\"new\nline\" (id) FROM stdin;\n7\n\\.\n\
            COPY public.\"x AS z; DROP TABLE victim; --\" (id) FROM stdin;\n1\n2\n\\.\n\
            SELECT E'\\'\nCOPY public.decoy4 FROM stdin;\n';\n\
            SELECT $1, a$b$ FROM t;\nCOPY \"Sch\".\"q\"\"t\" FROM stdin;\n5\n\\.\n\\unrestrict abc\n";
        for step in [1, 2, 7, 1000] {
            let c = scan(dump, step);
            let want: BTreeMap<String, u64> = [
                ("public.a", 2),
                ("public.\"E\"", 0),
                ("public.\"t (x\"", 3),
                ("public.\"new\nline\"", 1),
                ("public.\"x AS z; DROP TABLE victim; --\"", 2),
                ("\"Sch\".\"q\"\"t\"", 1),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            assert_eq!(c, want, "step {step}");
        }
    }

    #[test]
    fn backslash_strings_when_standard_strings_are_off() {
        let dump = "SET standard_conforming_strings = off;\nSELECT 'a\\';\nCOPY public.decoy FROM stdin;\n';\n\
            COPY public.real FROM stdin;\n1\n\\.\n";
        assert_eq!(
            scan(dump, 3).into_iter().collect::<Vec<_>>(),
            vec![("public.real".to_string(), 1)]
        );
    }

    #[test]
    fn a_cut_dump_still_reports_its_open_block() {
        let c = scan("COPY public.a (id) FROM stdin;\n1\n2\n", 4);
        assert_eq!(c.get("public.a"), Some(&2));
    }
}
