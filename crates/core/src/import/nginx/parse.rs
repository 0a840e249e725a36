//! nginx's config language read into directives with their file:line:col: words, quoted strings with escapes, `#` comments, blocks and `include` (globs), never panicking on any input.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::super::ImportError;

/// Where a directive or argument starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub file: Arc<str>,
    pub line: usize,
    pub col: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One directive: its name, its arguments (escapes resolved), and its block when it has one.
#[derive(Debug, Clone)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Directive>>,
    pub pos: Pos,
}

impl Directive {
    pub fn arg(&self, i: usize) -> &str {
        self.args.get(i).map(String::as_str).unwrap_or("")
    }
}

/// Includes nested deeper than this are refused (an include loop ends here).
const MAX_INCLUDE_DEPTH: usize = 16;
/// Files read in all, includes included, at most.
const MAX_FILES: usize = 1000;
/// Blocks nested deeper than this are refused (no input can overflow the stack).
const MAX_NESTING: usize = 64;

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Semi,
    Open,
    Close,
    Eof,
}

struct Lexer<'a> {
    text: &'a [u8],
    at: usize,
    line: usize,
    col: usize,
    file: Arc<str>,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str, file: Arc<str>) -> Self {
        Lexer {
            text: text.as_bytes(),
            at: 0,
            line: 1,
            col: 1,
            file,
        }
    }

    fn pos(&self) -> Pos {
        Pos {
            file: self.file.clone(),
            line: self.line,
            col: self.col,
        }
    }

    fn err(&self, pos: &Pos, message: impl Into<String>) -> ImportError {
        ImportError::Parse {
            file: pos.file.to_string(),
            line: pos.line,
            col: pos.col,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.at += 1;
        if c == b'\n' {
            self.line += 1;
            self.col = 1;
        } else if c & 0xC0 != 0x80 {
            // Columns count characters, not the continuation bytes of UTF-8.
            self.col += 1;
        }
        Some(c)
    }

    fn next(&mut self) -> Result<(Token, Pos), ImportError> {
        loop {
            match self.peek() {
                Some(c) if c.is_ascii_whitespace() => {
                    self.bump();
                }
                Some(b'#') => {
                    while let Some(c) = self.peek() {
                        if c == b'\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                _ => break,
            }
        }
        let pos = self.pos();
        let Some(c) = self.peek() else {
            return Ok((Token::Eof, pos));
        };
        match c {
            b';' => {
                self.bump();
                Ok((Token::Semi, pos))
            }
            b'{' => {
                self.bump();
                Ok((Token::Open, pos))
            }
            b'}' => {
                self.bump();
                Ok((Token::Close, pos))
            }
            b'"' | b'\'' => {
                self.bump();
                let mut out = Vec::new();
                loop {
                    match self.bump() {
                        None => {
                            return Err(self.err(&pos, "unexpected end of file in a quoted string"))
                        }
                        Some(q) if q == c => break,
                        Some(b'\\') => match self.bump() {
                            None => {
                                return Err(
                                    self.err(&pos, "unexpected end of file in a quoted string")
                                )
                            }
                            Some(e) => unescape(e, &mut out),
                        },
                        Some(b) => out.push(b),
                    }
                }
                // nginx wants a separator after a closing quote.
                match self.peek() {
                    None | Some(b';' | b'{' | b'}') => {}
                    Some(s) if s.is_ascii_whitespace() => {}
                    Some(_) => {
                        let at = self.pos();
                        return Err(self.err(&at, "unexpected character after a quoted string"));
                    }
                }
                Ok((Token::Word(String::from_utf8_lossy(&out).into_owned()), pos))
            }
            _ => {
                let mut out = Vec::new();
                // `${name}` may hold braces that are not blocks.
                let mut in_var = false;
                while let Some(b) = self.peek() {
                    if in_var {
                        self.bump();
                        out.push(b);
                        if b == b'}' {
                            in_var = false;
                        }
                        continue;
                    }
                    if b.is_ascii_whitespace() || b == b';' || b == b'{' || b == b'}' {
                        break;
                    }
                    self.bump();
                    if b == b'\\' {
                        match self.bump() {
                            Some(e) => unescape(e, &mut out),
                            None => out.push(b'\\'),
                        }
                        continue;
                    }
                    if b == b'$' && self.peek() == Some(b'{') {
                        in_var = true;
                    }
                    out.push(b);
                }
                if in_var {
                    return Err(self.err(&pos, "unterminated ${...} variable"));
                }
                Ok((Token::Word(String::from_utf8_lossy(&out).into_owned()), pos))
            }
        }
    }
}

/// nginx's escapes: `\"`, `\'`, `\\`, `\t`, `\r`, `\n`; any other keeps its backslash.
fn unescape(e: u8, out: &mut Vec<u8>) {
    match e {
        b'"' | b'\'' | b'\\' => out.push(e),
        b't' => out.push(b'\t'),
        b'r' => out.push(b'\r'),
        b'n' => out.push(b'\n'),
        other => {
            out.push(b'\\');
            out.push(other);
        }
    }
}

/// Reads the main file and every file it includes.
pub struct Parser {
    /// The directory relative includes are resolved against (nginx's conf prefix: the main file's).
    pub prefix: PathBuf,
    files: usize,
}

impl Parser {
    pub fn new(main: &Path) -> Self {
        let prefix = main
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Parser { prefix, files: 0 }
    }

    /// Reads and parses a file.
    pub fn file(&mut self, path: &Path, depth: usize) -> Result<Vec<Directive>, ImportError> {
        self.files += 1;
        if self.files > MAX_FILES {
            return Err(ImportError::Usage(format!(
                "{}: more than {MAX_FILES} files included",
                path.display()
            )));
        }
        let text = std::fs::read(path).map_err(|e| ImportError::Read {
            file: path.display().to_string(),
            message: e.to_string(),
        })?;
        let text = String::from_utf8_lossy(&text);
        self.text(&text, &path.display().to_string(), depth)
    }

    /// Parses text as the file `name` (includes are read from disk).
    pub fn text(
        &mut self,
        text: &str,
        name: &str,
        depth: usize,
    ) -> Result<Vec<Directive>, ImportError> {
        let mut lexer = Lexer::new(text, Arc::from(name));
        let list = self.block(&mut lexer, depth, 0, None)?;
        Ok(list)
    }

    fn block(
        &mut self,
        lx: &mut Lexer<'_>,
        depth: usize,
        nesting: usize,
        open: Option<&Pos>,
    ) -> Result<Vec<Directive>, ImportError> {
        let mut out = Vec::new();
        loop {
            let (tok, pos) = lx.next()?;
            let name = match tok {
                Token::Eof => {
                    if let Some(open) = open {
                        return Err(lx.err(&pos, format!("unexpected end of file, expecting \"}}\" (the block opened at line {})", open.line)));
                    }
                    return Ok(out);
                }
                Token::Close => {
                    if open.is_none() {
                        return Err(lx.err(&pos, "unexpected \"}\""));
                    }
                    return Ok(out);
                }
                Token::Semi => return Err(lx.err(&pos, "unexpected \";\"")),
                Token::Open => return Err(lx.err(&pos, "unexpected \"{\"")),
                Token::Word(w) => w,
            };
            let mut args = Vec::new();
            let block = loop {
                let (tok, at) = lx.next()?;
                match tok {
                    Token::Word(w) => args.push(w),
                    Token::Semi => break None,
                    Token::Open => {
                        if nesting + 1 > MAX_NESTING {
                            return Err(lx.err(&at, "blocks nested too deep"));
                        }
                        break Some(self.block(lx, depth, nesting + 1, Some(&pos))?);
                    }
                    Token::Close | Token::Eof => {
                        return Err(lx.err(
                            &at,
                            format!(
                                "unexpected {}, expecting \";\" or \"{{\" after \"{name}\"",
                                if tok == Token::Eof {
                                    "end of file"
                                } else {
                                    "\"}\""
                                }
                            ),
                        ));
                    }
                }
            };
            if name == "include" && block.is_none() {
                if args.len() != 1 {
                    return Err(lx.err(&pos, "\"include\" takes one file or pattern"));
                }
                out.extend(self.include(&args[0], &pos, depth)?);
                continue;
            }
            out.push(Directive {
                name,
                args,
                block,
                pos,
            });
        }
    }

    fn include(
        &mut self,
        pattern: &str,
        pos: &Pos,
        depth: usize,
    ) -> Result<Vec<Directive>, ImportError> {
        let err = |message: String| ImportError::Parse {
            file: pos.file.to_string(),
            line: pos.line,
            col: pos.col,
            message,
        };
        if depth + 1 > MAX_INCLUDE_DEPTH {
            return Err(err(format!(
                "includes nested deeper than {MAX_INCLUDE_DEPTH} (an include loop?)"
            )));
        }
        let full = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            self.prefix.join(pattern)
        };
        let full_text = full.to_string_lossy().into_owned();
        let mut files = Vec::new();
        if pattern.contains(['*', '?', '[']) {
            // nginx globs (glob(3)); no match is no error, as in nginx.
            let paths = glob::glob(&full_text)
                .map_err(|e| err(format!("include pattern {pattern:?}: {e}")))?;
            for p in paths.flatten() {
                if p.is_file() {
                    files.push(p);
                }
            }
            files.sort();
        } else {
            files.push(full);
        }
        let mut out = Vec::new();
        for f in files {
            match self.file(&f, depth + 1) {
                Err(ImportError::Read { file, message }) => {
                    return Err(err(format!("include {file}: {message}")));
                }
                other => out.extend(other?),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests unwrap freely
    use super::*;

    fn parse(text: &str) -> Result<Vec<Directive>, ImportError> {
        Parser::new(Path::new("/nonexistent/nginx.conf")).text(text, "t.conf", 0)
    }

    #[test]
    fn words_quotes_comments_blocks() {
        let d = parse("# c\nhttp {\n  add_header X-A \"a b\\\"c\" always; # tail\n  return 301 'x;y';\n  set $a ${b}c;\n}\n").unwrap();
        assert_eq!(d.len(), 1);
        let http = d[0].block.as_ref().unwrap();
        assert_eq!(http[0].args, ["X-A", "a b\"c", "always"]);
        assert_eq!((http[0].pos.line, http[0].pos.col), (3, 3));
        assert_eq!(http[1].args, ["301", "x;y"]);
        assert_eq!(http[2].args, ["$a", "${b}c"]);
    }

    #[test]
    fn errors_have_positions() {
        let e = parse("http {\n  listen 80\n}\n").unwrap_err().to_string();
        assert!(e.starts_with("t.conf:3:1:"), "{e}");
        let e = parse("}").unwrap_err().to_string();
        assert!(e.starts_with("t.conf:1:1:"), "{e}");
        let e = parse("a \"b").unwrap_err().to_string();
        assert!(e.starts_with("t.conf:1:3:"), "{e}");
        let e = parse("http {").unwrap_err().to_string();
        assert!(e.contains("end of file"), "{e}");
        assert!(parse(&"a {".repeat(100)).is_err());
        let e = parse("a \"b\"c;").unwrap_err().to_string();
        assert!(e.starts_with("t.conf:1:6:"), "{e}");
    }
}
