//! Structure-aware chunking: a document's text is cut into blocks (headings, paragraphs, fenced
//! code, top-level code items), blocks are packed into chunks of at most `max_chars`, and each chunk
//! after the first of a section starts `overlap_chars` before the previous one ended.
//! Invariant: a chunk's text is exactly `text[start..end]` of the document's text (byte offsets on
//! character boundaries), so a hit always points at the words it was found by.

/// What kind of document a file is, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    /// Markdown (`.md`, `.markdown`).
    Markdown,
    /// Plain text.
    Text,
    /// Source code; the language is the extension.
    Code,
    /// HTML; indexed as the text it shows.
    Html,
    /// PDF; indexed as the text of its pages (files only, see [`crate::pdf`]).
    Pdf,
}

impl DocumentKind {
    /// The kind of a path, or `None` for files that are not indexed (binaries, images, archives, …).
    pub fn of_path(path: &str) -> Option<Self> {
        let extension = path.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase())?;
        Some(match extension.as_str() {
            "md" | "markdown" | "mdx" => Self::Markdown,
            "txt" | "text" | "rst" | "adoc" => Self::Text,
            "html" | "htm" => Self::Html,
            "pdf" => Self::Pdf,
            "rs" | "py" | "js" | "mjs" | "cjs" | "ts" | "tsx" | "jsx" | "go" | "java" | "kt" | "c" | "h" | "cc"
            | "cpp" | "hpp" | "cs" | "rb" | "php" | "swift" | "scala" | "sh" | "bash" | "sql" | "toml" | "yaml"
            | "yml" | "json" | "proto" => Self::Code,
            _ => return None,
        })
    }

    /// Its name as stored: `markdown`, `text`, `code`, `html`, `pdf`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Markdown => "markdown",
            Self::Text => "text",
            Self::Code => "code",
            Self::Html => "html",
            Self::Pdf => "pdf",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "markdown" => Self::Markdown,
            "text" => Self::Text,
            "code" => Self::Code,
            "html" => Self::Html,
            "pdf" => Self::Pdf,
            _ => return None,
        })
    }
}

/// How big chunks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Most characters in a chunk (MiniLM reads about 256 word pieces, roughly 1000 characters).
    pub max_chars: usize,
    /// Characters a chunk repeats from the end of the previous one in the same section.
    pub overlap_chars: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self { max_chars: 1000, overlap_chars: 150 }
    }
}

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The heading path it sits under (`Guide > Install`), or the code item it belongs to.
    pub heading: Option<String>,
    /// Byte offset of its start in the document's text.
    pub start: usize,
    /// Byte offset of its end.
    pub end: usize,
}

/// A heading found while chunking: its level, its text and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heading {
    /// 1 for `#`, 2 for `##`, …
    pub level: usize,
    /// Its text.
    pub text: String,
    /// Byte offset of its line.
    pub start: usize,
}

#[derive(Debug, Clone)]
struct Block {
    start: usize,
    end: usize,
    heading: Option<String>,
    /// Starts a new section: never packed together with what came before.
    breaks: bool,
}

/// The chunks of `text` (Markdown, text or code; HTML is converted to text first) and the headings.
pub fn chunk(text: &str, kind: DocumentKind, options: ChunkOptions) -> (Vec<Chunk>, Vec<Heading>) {
    let options = ChunkOptions {
        max_chars: options.max_chars.clamp(100, 16_000),
        overlap_chars: options.overlap_chars.min(options.max_chars / 2),
    };
    let (blocks, headings) = match kind {
        DocumentKind::Markdown | DocumentKind::Html => markdown_blocks(text),
        DocumentKind::Text | DocumentKind::Pdf => (paragraph_blocks(text, None), Vec::new()),
        DocumentKind::Code => (code_blocks(text), Vec::new()),
    };
    (pack(text, blocks, options), headings)
}

/// Paragraphs: runs of non-blank lines.
fn paragraph_blocks(text: &str, heading: Option<String>) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut start: Option<usize> = None;
    let mut end = 0;
    for (offset, line) in lines(text) {
        if line.trim().is_empty() {
            if let Some(s) = start.take() {
                blocks.push(Block { start: s, end, heading: heading.clone(), breaks: false });
            }
        } else {
            start.get_or_insert(offset);
            end = offset + line.trim_end().len();
        }
    }
    if let Some(s) = start {
        blocks.push(Block { start: s, end, heading, breaks: false });
    }
    blocks
}

/// Lines with their byte offsets (without the line break).
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut offset = 0;
    text.split_inclusive('\n').map(move |line| {
        let at = offset;
        offset += line.len();
        (at, line.trim_end_matches(['\n', '\r']))
    })
}

fn markdown_heading(line: &str) -> Option<(usize, &str)> {
    let trimmed = line.trim_start();
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    let level = trimmed.bytes().take_while(|b| *b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &trimmed[level..];
    if !rest.is_empty() && !rest.starts_with(' ') && !rest.starts_with('\t') {
        return None;
    }
    let title = rest.trim().trim_end_matches('#').trim();
    (!title.is_empty()).then_some((level, title))
}

/// Markdown: headings open sections; fenced code blocks stay whole; paragraphs inside sections.
fn markdown_blocks(text: &str) -> (Vec<Block>, Vec<Heading>) {
    let mut blocks = Vec::new();
    let mut headings = Vec::new();
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut paragraph: Option<(usize, usize)> = None;
    let mut fence: Option<(String, usize)> = None;
    let mut pending_break = false;
    let current = |path: &Vec<(usize, String)>| {
        (!path.is_empty()).then(|| path.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(" > "))
    };
    let flush = |paragraph: &mut Option<(usize, usize)>,
                 blocks: &mut Vec<Block>,
                 heading: Option<String>,
                 breaks: &mut bool| {
        if let Some((start, end)) = paragraph.take() {
            blocks.push(Block { start, end, heading, breaks: std::mem::take(breaks) });
        }
    };
    for (offset, line) in lines(text) {
        let trimmed = line.trim_start();
        if let Some((marker, start)) = &fence {
            if trimmed.starts_with(marker.as_str())
                && trimmed.trim_end().trim_start_matches(marker.chars().next().unwrap_or('`')).is_empty()
            {
                let end = offset + line.trim_end().len();
                blocks.push(Block {
                    start: *start,
                    end,
                    heading: current(&path),
                    breaks: std::mem::take(&mut pending_break),
                });
                fence = None;
            }
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            flush(&mut paragraph, &mut blocks, current(&path), &mut pending_break);
            let marker: String = trimmed.chars().take_while(|c| *c == '`' || *c == '~').collect();
            fence = Some((marker, offset));
            continue;
        }
        if let Some((level, title)) = markdown_heading(line) {
            flush(&mut paragraph, &mut blocks, current(&path), &mut pending_break);
            while path.last().is_some_and(|(l, _)| *l >= level) {
                path.pop();
            }
            path.push((level, title.to_owned()));
            headings.push(Heading { level, text: title.to_owned(), start: offset });
            // the heading line opens its section's first chunk
            paragraph = Some((offset, offset + line.trim_end().len()));
            pending_break = true;
            continue;
        }
        if line.trim().is_empty() {
            // a heading stays attached to the paragraph after it
            if paragraph.is_some_and(|(start, _)| headings.last().is_none_or(|h| h.start != start)) {
                flush(&mut paragraph, &mut blocks, current(&path), &mut pending_break);
            }
            continue;
        }
        let end = offset + line.trim_end().len();
        match &mut paragraph {
            Some((_, e)) => *e = end,
            None => paragraph = Some((offset, end)),
        }
    }
    if let Some((_, start)) = fence {
        blocks.push(Block {
            start,
            end: text.trim_end().len().max(start),
            heading: current(&path),
            breaks: pending_break,
        });
        pending_break = false;
    }
    flush(&mut paragraph, &mut blocks, current(&path), &mut pending_break);
    (blocks, headings)
}

/// Code: top-level items (a line starting at column 0 after a blank line begins a new block); the
/// item's name, when the line defines one, is the block's heading.
fn code_blocks(text: &str) -> Vec<Block> {
    let mut blocks = paragraph_blocks(text, None);
    for block in &mut blocks {
        let first_line = text[block.start..block.end].lines().find(|l| {
            let t = l.trim_start();
            !(t.starts_with("//")
                || t.starts_with('#')
                || t.starts_with("/*")
                || t.starts_with('*')
                || t.starts_with("\"\"\""))
        });
        block.heading = first_line.and_then(|line| crate::graph::definition(line).map(|(_, name)| name.to_owned()));
    }
    blocks
}

/// Packs blocks into chunks of at most `max_chars` characters, splitting oversized blocks at line
/// and then character boundaries, and overlapping consecutive chunks of one section.
fn pack(text: &str, blocks: Vec<Block>, options: ChunkOptions) -> Vec<Chunk> {
    let mut pieces: Vec<Block> = Vec::with_capacity(blocks.len());
    for block in blocks {
        if chars(text, block.start, block.end) <= options.max_chars {
            pieces.push(block);
        } else {
            pieces.extend(split_block(text, &block, options.max_chars));
        }
    }
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut open: Option<Chunk> = None;
    for piece in pieces {
        if let Some(chunk) = &mut open {
            let same_section = !piece.breaks && chunk.heading == piece.heading;
            if same_section && chars(text, chunk.start, piece.end) <= options.max_chars {
                chunk.end = piece.end;
                continue;
            }
            let previous = open.take();
            if let Some(previous) = previous {
                let start = if same_section {
                    overlap_start(text, previous.end, piece.start, options.overlap_chars, options.max_chars, piece.end)
                } else {
                    piece.start
                };
                chunks.push(previous);
                open = Some(Chunk { heading: piece.heading.clone(), start, end: piece.end });
            }
        } else {
            open = Some(Chunk { heading: piece.heading.clone(), start: piece.start, end: piece.end });
        }
    }
    chunks.extend(open);
    chunks.retain(|c| !text[c.start..c.end].trim().is_empty());
    chunks
}

fn chars(text: &str, start: usize, end: usize) -> usize {
    text[start..end].chars().count()
}

/// Where a chunk that repeats the end of its predecessor starts: about `overlap` characters before
/// `previous_end`, moved forward to a word start, never so far back that the chunk grows past `max`.
fn overlap_start(
    text: &str,
    previous_end: usize,
    piece_start: usize,
    overlap: usize,
    max: usize,
    piece_end: usize,
) -> usize {
    if overlap == 0 {
        return piece_start;
    }
    // the chunk runs from the overlap's start to `piece_end`: what lies between the previous end and
    // the piece (blank lines) counts too
    let room = max.saturating_sub(chars(text, previous_end.min(piece_start), piece_end));
    let back = overlap.min(room);
    if back == 0 {
        return piece_start;
    }
    let mut start = previous_end;
    for (count, (index, _)) in text[..previous_end].char_indices().rev().enumerate() {
        start = index;
        if count + 1 >= back {
            break;
        }
    }
    // move to the start of the next word
    if let Some(space) = text[start..previous_end].find(char::is_whitespace) {
        let after = start + space;
        let word = text[after..previous_end].find(|c: char| !c.is_whitespace()).map(|i| after + i);
        start = word.unwrap_or(piece_start);
    }
    start.min(piece_start)
}

/// An oversized block split at line boundaries, and lines longer than `max` at characters.
fn split_block(text: &str, block: &Block, max: usize) -> Vec<Block> {
    let mut out = Vec::new();
    let mut start = block.start;
    let mut end = block.start;
    let mut breaks = block.breaks;
    for (offset, line) in lines(&text[block.start..block.end]) {
        let line_start = block.start + offset;
        let line_end = line_start + line.len();
        if chars(text, start, line_end) > max {
            if end > start {
                out.push(Block { start, end, heading: block.heading.clone(), breaks: std::mem::take(&mut breaks) });
            }
            // blank lines left over from the previous piece do not open the next one
            start = line_start;
        }
        if chars(text, line_start, line_end) > max {
            // a single very long line: cut it by characters
            let mut piece_start = line_start;
            let mut count = 0;
            for (index, _) in text[line_start..line_end].char_indices() {
                if count == max {
                    out.push(Block {
                        start: piece_start,
                        end: line_start + index,
                        heading: block.heading.clone(),
                        breaks: std::mem::take(&mut breaks),
                    });
                    piece_start = line_start + index;
                    count = 0;
                }
                count += 1;
            }
            start = piece_start;
        }
        end = line_end;
    }
    if end > start {
        out.push(Block { start, end, heading: block.heading.clone(), breaks });
    }
    out
}

/// The text an HTML page shows, as Markdown-like text: scripts, styles and comments dropped,
/// headings as `#` lines, block elements as paragraphs, entities decoded. Returns the text and the
/// page's `<title>`.
pub fn html_to_text(html: &str) -> (String, Option<String>) {
    let mut out = String::with_capacity(html.len() / 2);
    let mut title = None;
    let mut rest = html;
    let lower = html.to_ascii_lowercase();
    let mut position = 0;
    while let Some(open) = rest.find('<') {
        push_text(&mut out, &rest[..open]);
        let tag_start = position + open;
        let after = &lower[tag_start..];
        // skip whole elements whose content is not shown
        let mut skipped = false;
        for element in ["script", "style", "noscript", "template", "svg"] {
            if after.starts_with(&format!("<{element}")) {
                let close = format!("</{element}");
                let end = after
                    .find(&close)
                    .map(|i| after[i..].find('>').map_or(after.len(), |j| i + j + 1))
                    .unwrap_or(after.len());
                position = tag_start + end;
                skipped = true;
                break;
            }
        }
        if !skipped && after.starts_with("<!--") {
            position = tag_start + after.find("-->").map_or(after.len(), |i| i + 3);
            skipped = true;
        }
        if !skipped {
            // an unclosed tag runs to the end of the page
            let close = after.find('>');
            let end = close.map_or(after.len(), |i| i + 1);
            let tag = &after[1..close.unwrap_or(after.len())];
            let name: String = tag.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            let closing = tag.starts_with('/');
            if name == "title" && !closing {
                let inner_start = tag_start + end;
                if let Some(close) = lower[inner_start..].find("</title") {
                    title = Some(decode_entities(html[inner_start..inner_start + close].trim()));
                    position = inner_start + close;
                    rest = &html[position..];
                    continue;
                }
            }
            match name.as_str() {
                "h1" | "h2" | "h3" | "h4" | "h5" | "h6" if !closing => {
                    let level = usize::from(name.as_bytes()[1] - b'0');
                    out.push_str("\n\n");
                    out.push_str(&"#".repeat(level));
                    out.push(' ');
                }
                "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => out.push_str("\n\n"),
                "p" | "div" | "section" | "article" | "ul" | "ol" | "table" | "pre" | "blockquote" | "header"
                | "footer" | "main" | "nav" => out.push_str("\n\n"),
                "br" | "li" | "tr" => out.push('\n'),
                "td" | "th" => out.push(' '),
                _ => {}
            }
            position = tag_start + end;
        }
        rest = &html[position.min(html.len())..];
    }
    push_text(&mut out, rest);
    // collapse runs of blank lines and trailing spaces
    let mut text = String::with_capacity(out.len());
    let mut blank = 0;
    for line in out.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank += 1;
            if blank == 1 && !text.is_empty() {
                text.push('\n');
            }
        } else {
            blank = 0;
            text.push_str(line.trim_start());
            text.push('\n');
        }
    }
    (text, title)
}

fn push_text(out: &mut String, text: &str) {
    if text.is_empty() {
        return;
    }
    let decoded = decode_entities(text);
    for (index, part) in decoded.split_whitespace().enumerate() {
        if index > 0 || (!out.is_empty() && !out.ends_with(['\n', ' ']) && decoded.starts_with(char::is_whitespace)) {
            out.push(' ');
        }
        out.push_str(part);
    }
    if decoded.ends_with(char::is_whitespace) && !out.ends_with(['\n', ' ']) {
        out.push(' ');
    }
}

fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        // `;` within 12 bytes (counted in bytes, so a character across the 12th byte is no problem)
        let Some(semi) = tail.bytes().take(12).position(|b| b == b';') else {
            out.push('&');
            rest = &tail[1..];
            continue;
        };
        let entity = &tail[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" | "#39" => Some('\''),
            "nbsp" => Some(' '),
            _ if entity.starts_with("#x") || entity.starts_with("#X") => {
                u32::from_str_radix(&entity[2..], 16).ok().and_then(char::from_u32)
            }
            _ if entity.starts_with('#') => entity[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
