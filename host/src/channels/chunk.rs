//! Splitting a Markdown answer into messages a platform accepts.
//!
//! [`split`] cuts text at the platform's limit, measured the way the
//! platform counts ([`Measure`]: Unicode scalar values, or UTF-16 code units
//! as Telegram does). It prefers, in order, a paragraph break, a line
//! break, the end of a sentence and a space, all outside fenced code
//! blocks; only a code block longer than one message is cut inside, at a
//! line end, closing the fence in one chunk and reopening it (with its info
//! string) in the next. A character is never split (a UTF-16 surrogate
//! pair counts as two units and stays whole).

/// How a platform counts the length of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Measure {
    /// Unicode scalar values (Rust `char`s).
    #[default]
    Chars,
    /// UTF-16 code units (Telegram's 4,096 limit).
    Utf16,
}

impl Measure {
    /// The length of `s` in this measure.
    pub fn len(self, s: &str) -> usize {
        match self {
            Measure::Chars => s.chars().count(),
            Measure::Utf16 => s.encode_utf16().count(),
        }
    }

    fn char_len(self, c: char) -> usize {
        match self {
            Measure::Chars => 1,
            Measure::Utf16 => c.len_utf16(),
        }
    }
}

/// One message-sized piece of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The text to send (within the limit).
    pub text: String,
    /// Byte offset in the source text where the next chunk starts.
    pub end: usize,
    /// When the cut fell inside a fenced code block: the fence's opening
    /// line, which starts the next chunk.
    pub reopen: Option<String>,
}

/// Where a chunk may end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Paragraph,
    Line,
    Sentence,
    Word,
}

#[derive(Debug, Clone, Copy)]
struct Break {
    /// Byte offset the chunk's text ends at (exclusive).
    at: usize,
    /// Byte offset the next chunk starts at.
    resume: usize,
    kind: Kind,
}

/// The fence marker (the run of backticks or tildes) if `line` opens or
/// closes a fenced code block.
fn fence_marker(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let first = t.chars().next()?;
    if first != '`' && first != '~' {
        return None;
    }
    let n = t.chars().take_while(|&c| c == first).count();
    (n >= 3).then(|| &t[..n])
}

/// Whether `line` closes a block opened by `opening`.
fn closes(opening: &str, line: &str) -> bool {
    match (fence_marker(opening), fence_marker(line)) {
        (Some(o), Some(c)) => {
            c.starts_with(&o[..1]) && c.len() >= o.len() && line.trim()[c.len()..].is_empty()
        }
        _ => false,
    }
}

/// Split `text` into chunks of at most `limit` (in `measure`); `limit` 0
/// means no limit. Empty or blank text gives no chunk.
pub fn split(text: &str, limit: usize, measure: Measure) -> Vec<Chunk> {
    split_from(text, None, limit, measure)
}

/// As [`split`], for text that continues inside a code block opened by
/// the fence line `open` (from an earlier chunk's [`Chunk::reopen`]).
pub fn split_from(text: &str, open: Option<&str>, limit: usize, measure: Measure) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut pos = skip_blank(text, 0);
    let mut open: Option<String> = open.map(str::to_string);
    while pos < text.len() {
        let chunk = next_chunk(text, pos, open.as_deref(), limit, measure);
        pos = skip_blank_if(text, chunk.end, chunk.reopen.is_none());
        open = chunk.reopen.clone();
        let end = pos;
        out.push(Chunk { end, ..chunk });
    }
    out
}

/// Whether `s` measures at most `budget` (stops counting past it).
fn fits(s: &str, budget: usize, m: Measure) -> bool {
    let mut used = 0;
    for c in s.chars() {
        used += m.char_len(c);
        if used > budget {
            return false;
        }
    }
    true
}

fn skip_blank(text: &str, from: usize) -> usize {
    from + (text[from..].len() - text[from..].trim_start().len())
}

fn skip_blank_if(text: &str, from: usize, yes: bool) -> usize {
    if yes { skip_blank(text, from) } else { from }
}

/// The chunk starting at byte `pos`, inside the block opened by `open`.
fn next_chunk(text: &str, pos: usize, open: Option<&str>, limit: usize, m: Measure) -> Chunk {
    let mut prefix = open.map(|o| format!("{o}\n")).unwrap_or_default();
    let mut open = open.map(str::to_string);
    let close_len = |o: &str| m.len("\n") + fence_marker(o).map_or(3, |f| m.len(f));
    // Too small a limit to reopen a fence: cut as plain text.
    if let Some(o) = &open
        && limit > 0
        && m.len(&prefix) + close_len(o) >= limit
    {
        prefix.clear();
        open = None;
    }
    let rest = &text[pos..];
    if limit == 0 || fits(rest.trim_end(), limit.saturating_sub(m.len(&prefix)), m) {
        return Chunk {
            text: format!("{prefix}{}", rest.trim_end()),
            end: text.len(),
            reopen: None,
        };
    }
    let budget = limit - m.len(&prefix);
    // `hard`: the furthest byte the chunk's source may reach.
    let mut used = 0;
    let mut hard = pos;
    for (i, c) in rest.char_indices() {
        let n = m.char_len(c);
        if used + n > budget {
            break;
        }
        used += n;
        hard = pos + i + c.len_utf8();
    }
    // Scan the window line by line for break points, tracking fences.
    let mut outside: Vec<Break> = Vec::new();
    // In-fence line ends: (at, fence opening line).
    let mut inside: Vec<(usize, String)> = Vec::new();
    let mut fence = open.clone();
    let mut line_start = pos;
    while line_start < hard {
        let line_end = text[line_start..]
            .find('\n')
            .map_or(text.len(), |i| line_start + i);
        let line = &text[line_start..line_end];
        let was_open = fence.clone();
        if let Some(o) = &fence {
            if closes(o, line) {
                fence = None;
            }
        } else if fence_marker(line).is_some() {
            fence = Some(line.trim().to_string());
        }
        if was_open.is_none() && fence.is_none() {
            // Sentences and words inside this ordinary line.
            let limit_in_line = line_end.min(hard);
            let bytes = line.as_bytes();
            for (i, c) in line.char_indices() {
                let at = line_start + i;
                if at >= limit_in_line {
                    break;
                }
                if c == ' ' || c == '\t' {
                    let prev = if i > 0 { bytes[i - 1] } else { b' ' };
                    let kind = if matches!(prev, b'.' | b'!' | b'?') {
                        Kind::Sentence
                    } else {
                        Kind::Word
                    };
                    if at > pos {
                        outside.push(Break {
                            at,
                            resume: at,
                            kind,
                        });
                    }
                }
            }
        }
        if line_end > hard {
            break;
        }
        let next_blank = text[line_end..].strip_prefix('\n').is_some_and(|r| {
            r.starts_with('\n') || r.trim_start_matches([' ', '\t']).starts_with('\n')
        });
        if fence.is_none() {
            if line_end > pos {
                outside.push(Break {
                    at: line_end,
                    resume: line_end,
                    kind: if next_blank {
                        Kind::Paragraph
                    } else {
                        Kind::Line
                    },
                });
            }
        } else if let Some(o) = &fence
            && line_end > pos
            && was_open.is_some()
        {
            inside.push((line_end, o.clone()));
        }
        line_start = line_end + 1;
    }
    let window = hard - pos;
    let pick = |min: usize| {
        [Kind::Paragraph, Kind::Line, Kind::Sentence, Kind::Word]
            .into_iter()
            .find_map(|k| {
                outside
                    .iter()
                    .filter(|b| b.kind == k && b.at - pos >= min)
                    .map(|b| b.at)
                    .max()
            })
    };
    let chosen = pick(window / 2).or_else(|| pick(1));
    if let Some(at) = chosen
        && let Some(b) = outside.iter().find(|b| b.at == at)
    {
        let body = text[pos..b.at].trim_end();
        if !body.is_empty() || !prefix.is_empty() {
            return Chunk {
                text: format!("{prefix}{body}"),
                end: b.resume,
                reopen: None,
            };
        }
    }
    // Inside a code block: the last line end that leaves room to close it.
    for (at, o) in inside.iter().rev() {
        let body = format!(
            "{prefix}{}\n{}",
            &text[pos..*at],
            fence_marker(o).unwrap_or("```")
        );
        if m.len(&body) <= limit {
            return Chunk {
                text: body,
                end: at + 1,
                reopen: Some(o.clone()),
            };
        }
    }
    hard_cut(text, pos, hard, &prefix, open.as_deref(), limit, m)
}

/// Whether the fenced block opened by `open` (at `pos`) is still open at
/// `end`, and by which fence line.
fn fence_at(text: &str, pos: usize, end: usize, open: Option<&str>) -> Option<String> {
    let mut fence = open.map(str::to_string);
    let mut start = pos;
    while let Some(i) = text[start..end].find('\n') {
        let line = &text[start..start + i];
        match &fence {
            Some(o) if closes(o, line) => fence = None,
            None if fence_marker(line).is_some() => fence = Some(line.trim().to_string()),
            _ => {}
        }
        start += i + 1;
    }
    fence
}

/// Move a cut at `end` to the last space of its line, or before the line
/// when it is a fence line (never past `pos`).
fn soften(text: &str, pos: usize, end: usize) -> usize {
    let line_start = text[..end].rfind('\n').map_or(0, |i| i + 1).max(pos);
    let line_end = text[end..].find('\n').map_or(text.len(), |i| end + i);
    if fence_marker(&text[line_start..line_end]).is_some() && line_start > pos {
        return line_start - 1;
    }
    match text[line_start..end].rfind(' ') {
        Some(sp) if line_start + sp > pos => line_start + sp,
        _ => end,
    }
}

/// Cut a line longer than the room left (at its last space if it has one,
/// else at a character boundary). Inside a fence the cut leaves room for
/// the closing marker.
fn hard_cut(
    text: &str,
    pos: usize,
    hard: usize,
    prefix: &str,
    open: Option<&str>,
    limit: usize,
    m: Measure,
) -> Chunk {
    let mut end = soften(text, pos, hard);
    if let Some(o) = fence_at(text, pos, end, open) {
        let mk = fence_marker(&o).unwrap_or("```");
        let need = m.len(prefix) + m.len("\n") + m.len(mk);
        if need + m.len(&text[pos..end]) > limit {
            while end > pos && need + m.len(&text[pos..end]) > limit {
                end = text[..end]
                    .char_indices()
                    .next_back()
                    .map_or(pos, |(i, _)| i);
            }
            end = soften(text, pos, end);
        }
    }
    if end <= pos {
        // Not even one character fits beside the fence: plain cut.
        let c = text[pos..].chars().next().map_or(0, char::len_utf8);
        end = pos + c;
        return Chunk {
            text: text[pos..end].to_string(),
            end,
            reopen: None,
        };
    }
    match fence_at(text, pos, end, open) {
        Some(o) => Chunk {
            text: format!(
                "{prefix}{}\n{}",
                text[pos..end].trim_end_matches('\n'),
                fence_marker(&o).unwrap_or("```")
            ),
            end,
            reopen: Some(o),
        },
        None => Chunk {
            text: format!("{prefix}{}", text[pos..end].trim_end()),
            end,
            reopen: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str, limit: usize, m: Measure) -> Vec<String> {
        split(text, limit, m).into_iter().map(|c| c.text).collect()
    }

    fn check_limits(text: &str, limit: usize, m: Measure) -> Vec<Chunk> {
        let chunks = split(text, limit, m);
        for c in &chunks {
            assert!(
                m.len(&c.text) <= limit,
                "{} > {limit}: {:?}",
                m.len(&c.text),
                c.text
            );
            assert!(!c.text.trim().is_empty(), "empty chunk");
        }
        chunks
    }

    /// Chunks with reopened fences and separators removed give back the
    /// words of the source, in order.
    fn words_kept(text: &str, chunks: &[Chunk]) {
        let mut joined = String::new();
        for c in chunks {
            joined.push_str(&c.text);
            joined.push(' ');
        }
        let strip = |s: &str| -> Vec<String> {
            s.split_whitespace()
                .filter(|w| !w.starts_with("```"))
                .map(str::to_string)
                .collect()
        };
        let a: String = strip(text).concat();
        let b: String = strip(&joined).concat();
        assert_eq!(a, b);
    }

    #[test]
    fn no_limit_and_short_text_are_one_chunk() {
        assert_eq!(texts("abc", 0, Measure::Chars), vec!["abc"]);
        assert_eq!(texts("héllo", 10, Measure::Chars), vec!["héllo"]);
        assert!(split("  \n ", 10, Measure::Chars).is_empty());
    }

    #[test]
    fn prefers_paragraph_then_line_then_sentence_then_word() {
        let p = "aaaa aaaa aaaa.\n\nbbbb.\ncccc cccc";
        assert_eq!(
            texts(p, 26, Measure::Chars),
            vec!["aaaa aaaa aaaa.", "bbbb.\ncccc cccc"]
        );
        let l = "aaaa aaaa aaaa.\nbbbb. cccc cccc";
        assert_eq!(
            texts(l, 26, Measure::Chars),
            vec!["aaaa aaaa aaaa.", "bbbb. cccc cccc"]
        );
        // A break in the first half of the window only if nothing better.
        let late = "aaaa.\n\nbbbb bbbb bbbb bbbb\ncccc";
        assert_eq!(
            texts(late, 26, Measure::Chars),
            vec!["aaaa.\n\nbbbb bbbb bbbb bbbb", "cccc"]
        );
        let s = "aaaa aaaa. bbbb bbbb cccc";
        assert_eq!(
            texts(s, 20, Measure::Chars),
            vec!["aaaa aaaa.", "bbbb bbbb cccc"]
        );
        let w = "aaaa aaaa bbbb bbbb cccc";
        assert_eq!(
            texts(w, 12, Measure::Chars),
            vec!["aaaa aaaa", "bbbb bbbb", "cccc"]
        );
    }

    #[test]
    fn a_code_block_that_fits_is_kept_whole() {
        let code = "```rust\nfn main() {\n    println!(\"hi\");\n}\n```";
        let text = format!("Intro line here.\n\n{code}\n\nAfter.");
        let chunks = check_limits(&text, 50, Measure::Chars);
        assert!(chunks.iter().any(|c| c.text == code), "{chunks:#?}");
    }

    #[test]
    fn a_long_code_block_is_closed_and_reopened() {
        let body: String = (0..40).map(|i| format!("let x{i} = {i};\n")).collect();
        let text = format!("Here:\n```rust\n{body}```\nDone.");
        let chunks = check_limits(&text, 120, Measure::Chars);
        assert!(chunks.len() > 3);
        let mut inside = 0;
        for c in &chunks {
            let fences = c.text.lines().filter(|l| l.starts_with("```")).count();
            assert_eq!(fences % 2, 0, "unbalanced fence in {:?}", c.text);
            if c.text.starts_with("```rust\n") {
                inside += 1;
            }
        }
        assert!(inside >= 3, "{chunks:#?}");
        // Every code line arrives whole.
        let all: String = chunks.iter().map(|c| c.text.clone() + "\n").collect();
        for i in 0..40 {
            assert!(
                all.contains(&format!("let x{i} = {i};\n")),
                "line {i} broken"
            );
        }
        words_kept(&text, &chunks);
    }

    #[test]
    fn utf16_counts_surrogate_pairs_and_never_splits_a_character() {
        // Each 😀 is 1 char but 2 UTF-16 units.
        let text = "😀".repeat(10);
        let c16 = check_limits(&text, 5, Measure::Utf16);
        assert_eq!(
            c16.iter()
                .map(|c| c.text.chars().count())
                .collect::<Vec<_>>(),
            vec![2, 2, 2, 2, 2]
        );
        let c = check_limits(&text, 5, Measure::Chars);
        assert_eq!(c.len(), 2);
        // Mixed widths.
        let mixed = "é😀a".repeat(50);
        for m in [Measure::Chars, Measure::Utf16] {
            let chunks = check_limits(&mixed, 7, m);
            let joined: String = chunks.iter().map(|c| c.text.as_str()).collect();
            assert_eq!(joined, mixed);
        }
    }

    #[test]
    fn ends_chain_and_continuations_inside_a_fence() {
        let body: String = (0..20).map(|i| format!("line {i}\n")).collect();
        let text = format!("```\n{body}```");
        let chunks = check_limits(&text, 40, Measure::Chars);
        let first = &chunks[0];
        assert_eq!(first.reopen.as_deref(), Some("```"));
        // The rest, split from where the first ended, matches the tail.
        let rest = split_from(
            &text[first.end..],
            first.reopen.as_deref(),
            40,
            Measure::Chars,
        );
        assert_eq!(
            rest.iter().map(|c| &c.text).collect::<Vec<_>>(),
            chunks[1..].iter().map(|c| &c.text).collect::<Vec<_>>()
        );
    }

    #[test]
    fn long_markdown_in_order_within_limit() {
        let mut text = String::new();
        let mut n = 0;
        while text.len() < 10_000 {
            n += 1;
            text.push_str(&format!(
                "Paragraph {n} says something. It has two sentences.\n\n"
            ));
            if n % 25 == 0 {
                text.push_str("```python\nprint('x')\nprint('y')\n```\n\n");
            }
        }
        let chunks = check_limits(&text, 4096, Measure::Utf16);
        assert!(chunks.len() >= 3);
        words_kept(&text, &chunks);
        // Paragraph boundaries: every chunk ends a paragraph.
        for c in &chunks {
            assert!(
                c.text.ends_with('.') || c.text.ends_with("```"),
                "{:?}",
                &c.text[c.text.len() - 20..]
            );
        }
    }

    #[test]
    fn a_single_long_line_is_cut_hard() {
        let text = "x".repeat(25);
        assert_eq!(
            texts(&text, 10, Measure::Chars),
            vec!["x".repeat(10), "x".repeat(10), "x".repeat(5)]
        );
    }

    /// Generated Markdown (paragraphs, lists, fenced blocks, long lines,
    /// wide characters) at many limits: every chunk fits, no word is lost,
    /// reordered or cut, and every chunk's fences balance.
    #[test]
    fn generated_markdown_always_fits_and_loses_nothing() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        let pieces = ["word", "é", "😀", "Sentence.", "end!", "x"];
        for round in 0..300 {
            let mut text = String::new();
            for _ in 0..(5 + next(40)) {
                match next(6) {
                    0 => text.push_str("\n\n"),
                    1 => text.push('\n'),
                    2 => {
                        text.push_str("\n```py\n");
                        for _ in 0..next(12) {
                            text.push_str(&"code ".repeat(1 + next(6) as usize));
                            text.push('\n');
                        }
                        text.push_str("```\n");
                    }
                    _ => {
                        for _ in 0..(1 + next(10)) {
                            text.push_str(pieces[next(pieces.len() as u64) as usize]);
                            text.push(' ');
                        }
                    }
                }
            }
            // Room for a reopened fence, its close and the longest word.
            let limit = 24 + next(200) as usize;
            let m = if round % 2 == 0 {
                Measure::Utf16
            } else {
                Measure::Chars
            };
            let chunks = check_limits(&text, limit, m);
            // Words survive whole (a hard cut may split a word only when
            // one word is longer than a message; none is here).
            let strip = |s: &str| -> Vec<String> {
                s.split_whitespace()
                    .filter(|w| !w.starts_with("```"))
                    .map(str::to_string)
                    .collect()
            };
            let joined: Vec<String> = chunks.iter().flat_map(|c| strip(&c.text)).collect();
            assert_eq!(joined, strip(&text), "limit {limit}: {text:?}");
            for c in &chunks {
                let fences = c
                    .text
                    .lines()
                    .filter(|l| l.trim_start().starts_with("```"))
                    .count();
                let opened_in_source = c.text.lines().next().is_some_and(|l| l.starts_with("```"));
                // A chunk may end inside a block only at the end of the
                // text (an unclosed block in the source).
                if fences % 2 == 1 {
                    assert!(c.end == text.len() || !opened_in_source, "{c:?}");
                }
            }
        }
    }
}
