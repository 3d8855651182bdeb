//! Markdown (CommonMark-style) rendered into WhatsApp's own formatting:
//! `**bold**` → `*bold*`, `*it*` / `_it_` → `_it_`, `~~st~~` → `~st~`,
//! headings → bold lines, `[text](url)` → `text (url)`, `* item` → `- item`;
//! code fences and inline code are kept verbatim (WhatsApp shows both).

/// Render `md` for WhatsApp.
pub fn render(md: &str) -> String {
    let mut out = Vec::new();
    let mut in_fence = false;
    for line in md.split('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            // Drop the language tag: WhatsApp would show it as text.
            out.push("```".to_string());
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            out.push(line.to_string());
            continue;
        }
        out.push(render_line(line));
    }
    out.join("\n")
}

fn render_line(line: &str) -> String {
    let indent = &line[..line.len() - line.trim_start().len()];
    let rest = line.trim_start();
    let hashes = rest.bytes().take_while(|b| *b == b'#').count();
    if (1..=6).contains(&hashes) && rest[hashes..].starts_with(' ') {
        let title = inline(rest[hashes..].trim());
        return if title.is_empty() {
            String::new()
        } else {
            format!("{indent}*{}*", title.trim_matches('*'))
        };
    }
    if let Some(item) = rest.strip_prefix("* ").or_else(|| rest.strip_prefix("+ ")) {
        return format!("{indent}- {}", inline(item));
    }
    format!("{indent}{}", inline(rest))
}

/// Inline spans of one line.
fn inline(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let at = |i: usize, pat: &str| {
        pat.chars()
            .enumerate()
            .all(|(k, c)| chars.get(i + k) == Some(&c))
    };
    while i < chars.len() {
        let c = chars[i];
        // Inline code: copied as it is, up to the closing backtick.
        if c == '`'
            && let Some(end) = (i + 1..chars.len()).find(|&j| chars[j] == '`')
        {
            out.extend(&chars[i..=end]);
            i = end + 1;
            continue;
        }
        if c == '\\' && i + 1 < chars.len() && chars[i + 1].is_ascii_punctuation() {
            out.push(chars[i + 1]);
            i += 2;
            continue;
        }
        if at(i, "**") || at(i, "__") {
            out.push('*');
            i += 2;
            continue;
        }
        if at(i, "~~") {
            out.push('~');
            i += 2;
            continue;
        }
        if c == '*' {
            // Emphasis when it touches a word on the inner side.
            let next = chars.get(i + 1).is_some_and(|n| !n.is_whitespace());
            let prev = i > 0 && !chars[i - 1].is_whitespace();
            out.push(if next || prev { '_' } else { '*' });
            i += 1;
            continue;
        }
        if c == '['
            && let Some((text, url, len)) = link(&chars[i..])
        {
            out.push_str(&inline(&text));
            if url != text {
                out.push_str(&format!(" ({url})"));
            }
            i += len;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// `[text](url)` at the start of `chars`: text, url and length in chars.
fn link(chars: &[char]) -> Option<(String, String, usize)> {
    let close = chars.iter().position(|c| *c == ']')?;
    if chars.get(close + 1) != Some(&'(') {
        return None;
    }
    let end = close + 2 + chars[close + 2..].iter().position(|c| *c == ')')?;
    let text: String = chars[1..close].iter().collect();
    let url: String = chars[close + 2..end].iter().collect();
    if url.is_empty() || url.contains(char::is_whitespace) {
        return None;
    }
    Some((text, url, end + 1))
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn markdown_becomes_whatsapp() {
        assert_eq!(render("**bold** and *it*"), "*bold* and _it_");
        assert_eq!(render("__b__ _i_ ~~gone~~"), "*b* _i_ ~gone~");
        assert_eq!(render("# Title\n## **Sub**"), "*Title*\n*Sub*");
        assert_eq!(render("* one\n+ two\n- three"), "- one\n- two\n- three");
        assert_eq!(
            render("see [docs](https://x.dev/a) or <https://y>"),
            "see docs (https://x.dev/a) or <https://y>"
        );
        assert_eq!(render("2 * 3 = 6"), "2 * 3 = 6");
        assert_eq!(render(r"a \*literal\*"), "a *literal*");
    }

    #[test]
    fn code_is_left_alone() {
        let md = "run `a **b**`\n```rust\nlet x = **y**;\n```\n**after**";
        assert_eq!(
            render(md),
            "run `a **b**`\n```\nlet x = **y**;\n```\n*after*"
        );
    }
}
