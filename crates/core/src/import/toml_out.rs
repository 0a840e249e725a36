//! A commented TOML document written line by line, each line knowing where it came from, so that a line Switchyard refuses can be dropped and reported instead.

use std::path::PathBuf;

use super::{Finding, Severity};

/// One `key = value` line.
#[derive(Debug, Clone)]
pub struct Line {
    pub key: String,
    /// Already TOML (see [`string`], [`array`], [`inline`]).
    pub value: String,
    /// Written after the value: where it came from.
    pub comment: Option<String>,
    /// When set, Switchyard may refuse this line: it is then dropped and this becomes a finding.
    pub drop_as: Option<Finding>,
    /// The line names a file or directory that is not on this machine: its error is expected.
    pub missing_file: Option<PathBuf>,
    dropped: Option<String>,
}

impl Line {
    pub fn new(key: &str, value: String) -> Self {
        Line {
            key: key.to_string(),
            value,
            comment: None,
            drop_as: None,
            missing_file: None,
            dropped: None,
        }
    }

    pub fn from(mut self, comment: impl Into<String>) -> Self {
        let c = comment.into();
        if !c.is_empty() {
            self.comment = Some(c);
        }
        self
    }

    /// The line may be dropped (as `finding`, its message completed with Switchyard's reason).
    pub fn droppable(mut self, finding: Finding) -> Self {
        self.drop_as = Some(finding);
        self
    }
}

#[derive(Debug, Clone)]
pub enum Item {
    Comment(String),
    Blank,
    Kv(Line),
}

/// A table (`[name]` or `[[name]]`) or the top of the file (no header).
#[derive(Debug, Clone, Default)]
pub struct Block {
    pub header: Option<String>,
    pub items: Vec<Item>,
    /// When set, an error in this block that no line answers for drops the block and every
    /// block of the same group (a route and its subtables), reported as this finding.
    pub drop_as: Option<Finding>,
    pub group: Option<usize>,
    dropped: bool,
}

impl Block {
    pub fn new(header: impl Into<String>) -> Self {
        Block {
            header: Some(header.into()),
            ..Block::default()
        }
    }

    pub fn comment(&mut self, text: impl Into<String>) {
        self.items.push(Item::Comment(text.into()));
    }

    pub fn kv(&mut self, line: Line) {
        self.items.push(Item::Kv(line));
    }

    pub fn is_empty(&self) -> bool {
        !self.items.iter().any(|i| matches!(i, Item::Kv(_)))
    }
}

/// Identifies a line of the document: (block, item); a table's header line is (block, [`HEADER`]).
pub type LineId = (usize, usize);

/// The item index of a table's header line.
pub const HEADER: usize = usize::MAX;

#[derive(Debug, Clone, Default)]
pub struct Doc {
    pub blocks: Vec<Block>,
}

impl Doc {
    pub fn push(&mut self, block: Block) {
        self.blocks.push(block);
    }

    /// The text, and for each of its lines the `key = value` line it holds, if any.
    pub fn render(&self) -> (String, Vec<Option<LineId>>) {
        let mut out = String::new();
        let mut map = Vec::new();
        let mut push = |out: &mut String, text: &str, id: Option<LineId>| {
            for (i, l) in text.split('\n').enumerate() {
                out.push_str(l);
                out.push('\n');
                map.push(if i == 0 { id } else { None });
            }
        };
        for (b, block) in self.blocks.iter().enumerate() {
            if block.dropped {
                if let Some(f) = &block.drop_as {
                    push(&mut out, "", None);
                    push(&mut out, &comment_lines(&f.comment()), None);
                }
                continue;
            }
            if let Some(h) = &block.header {
                if !out.is_empty() {
                    push(&mut out, "", None);
                }
                // Comments before the first key line go above the header.
                let lead = block
                    .items
                    .iter()
                    .take_while(|i| matches!(i, Item::Comment(_)))
                    .count();
                for item in &block.items[..lead] {
                    if let Item::Comment(c) = item {
                        push(&mut out, &comment_lines(c), None);
                    }
                }
                push(&mut out, h, Some((b, HEADER)));
                self.items(b, &block.items[lead..], lead, &mut out, &mut push);
            } else {
                self.items(b, &block.items, 0, &mut out, &mut push);
            }
        }
        (out, map)
    }

    fn items(
        &self,
        b: usize,
        items: &[Item],
        first: usize,
        out: &mut String,
        push: &mut impl FnMut(&mut String, &str, Option<LineId>),
    ) {
        for (i, item) in items.iter().enumerate() {
            match item {
                Item::Comment(c) => push(out, &comment_lines(c), None),
                Item::Blank => push(out, "", None),
                Item::Kv(line) => {
                    if let Some(reason) = &line.dropped {
                        push(out, &comment_lines(reason), None);
                        continue;
                    }
                    let mut text = format!("{} = {}", key(&line.key), line.value);
                    if let Some(c) = &line.comment {
                        text.push_str("  # ");
                        text.push_str(&clean(&c.replace('\n', " ")));
                    }
                    push(out, &text, Some((b, first + i)));
                }
            }
        }
    }

    fn line(&self, id: LineId) -> Option<&Line> {
        match self.blocks.get(id.0)?.items.get(id.1)? {
            Item::Kv(l) => Some(l),
            _ => None,
        }
    }

    /// Some errors point at the table rather than the line: the droppable line of the block whose
    /// key the reason names.
    pub fn culprit(&self, id: LineId, reason: &str) -> Option<LineId> {
        if id.1 != HEADER && (self.droppable(id) || self.missing_file(id)) {
            return Some(id);
        }
        let block = self.blocks.get(id.0)?;
        block
            .items
            .iter()
            .enumerate()
            .find_map(|(i, item)| match item {
                Item::Kv(l)
                    if l.drop_as.is_some()
                        && l.dropped.is_none()
                        && (reason.contains(&format!("{:?}", l.key))
                            || reason.contains(&format!("\"{}\"", l.key))) =>
                {
                    Some((id.0, i))
                }
                _ => None,
            })
            .or(Some(id))
    }

    /// Drops the block of `id` and its group when it is droppable; its finding is returned.
    pub fn drop_block(&mut self, id: LineId, reason: &str) -> Option<Finding> {
        let block = self.blocks.get(id.0)?;
        let group = block.group;
        // A subtable of a route answers with its route.
        let leader = match block.drop_as {
            Some(_) => id.0,
            None => self
                .blocks
                .iter()
                .position(|b| group.is_some() && b.group == group && b.drop_as.is_some())?,
        };
        let id = (leader, id.1);
        let mut f = self.blocks[leader].drop_as.clone()?;
        f.message = format!("{}: Switchyard refuses it: {reason}", f.message);
        f.severity = Severity::NotCarried;
        for (i, b) in self.blocks.iter_mut().enumerate() {
            if i == id.0 || (group.is_some() && b.group == group) {
                b.dropped = true;
                b.drop_as = if i == id.0 { Some(f.clone()) } else { None };
            }
        }
        Some(f)
    }

    pub fn droppable(&self, id: LineId) -> bool {
        self.line(id).is_some_and(|l| l.drop_as.is_some())
    }

    pub fn missing_file(&self, id: LineId) -> bool {
        self.line(id).is_some_and(|l| l.missing_file.is_some())
    }

    /// Drops a droppable line; its finding (with Switchyard's reason) is returned and written
    /// as a comment in its place.
    pub fn drop_line(&mut self, id: LineId, reason: &str) -> Option<Finding> {
        let Some(Item::Kv(line)) = self
            .blocks
            .get_mut(id.0)
            .and_then(|b| b.items.get_mut(id.1))
        else {
            return None;
        };
        let mut f = line.drop_as.take()?;
        f.message = format!("{}: Switchyard refuses it: {reason}", f.message);
        f.severity = Severity::NotCarried;
        line.dropped = Some(f.comment());
        Some(f)
    }
}

/// TOML comments take no control characters but tab.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' && c != '\n' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

fn comment_lines(text: &str) -> String {
    clean(text)
        .split('\n')
        .map(|l| {
            if l.is_empty() {
                "#".to_string()
            } else {
                format!("# {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A key, bare when it can be.
pub fn key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        string(k)
    }
}

/// A TOML basic string.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML array of already-rendered values.
pub fn array<I: IntoIterator<Item = String>>(items: I) -> String {
    format!("[{}]", items.into_iter().collect::<Vec<_>>().join(", "))
}

/// A TOML array of strings.
pub fn strings<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> String {
    array(items.into_iter().map(|s| string(s.as_ref())))
}

/// A TOML inline table of already-rendered values.
pub fn inline<I: IntoIterator<Item = (String, String)>>(pairs: I) -> String {
    let body: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| format!("{} = {v}", key(&k)))
        .collect();
    if body.is_empty() {
        "{}".to_string()
    } else {
        format!("{{ {} }}", body.join(", "))
    }
}

/// A string value as Switchyard reads it: `${` and `$$` would be taken for the environment, so
/// a `$` before `{` or `$` is doubled.
pub fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '$' && matches!(chars.peek(), Some('{') | Some('$')) {
            out.push('$');
        }
    }
    string(&out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests unwrap freely
    use super::*;

    #[test]
    fn strings_and_keys() {
        assert_eq!(string("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(key("X-Frame-Options"), "X-Frame-Options");
        assert_eq!(key("a.b"), "\"a.b\"");
        assert_eq!(literal("$host${x}$$"), "\"$host$${x}$$$\"");
    }
}
