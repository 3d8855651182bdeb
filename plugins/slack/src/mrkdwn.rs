//! Markdown (CommonMark-style) rendered into Slack's `mrkdwn`:
//! `**bold**` → `*bold*`, `*it*` / `_it_` → `_it_`, `~~st~~` → `~st~`,
//! headings → bold lines, `[text](url)` and `<url>` → `<url|text>` links,
//! `*`/`+`/`-` items → `•` bullets; `&`, `<` and `>` are escaped as Slack
//! requires (also inside code, which Slack shows verbatim otherwise), and
//! code fences lose their language tag.

/// Render `md` for Slack.
pub fn render(md: &str) -> String {
    let mut out = Vec::new();
    let mut in_fence = false;
    for line in md.split('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            out.push("```".to_string());
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            out.push(escape(line));
            continue;
        }
        out.push(render_line(line));
    }
    out.join("\n")
}

/// `&`, `<` and `>` as Slack's entities.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
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
    if let Some(item) = rest
        .strip_prefix("* ")
        .or_else(|| rest.strip_prefix("+ "))
        .or_else(|| rest.strip_prefix("- "))
    {
        return format!("{indent}• {}", inline(item));
    }
    if let Some(quote) = rest.strip_prefix("> ") {
        return format!("{indent}> {}", inline(quote));
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
        if c == '`'
            && let Some(end) = (i + 1..chars.len()).find(|&j| chars[j] == '`')
        {
            let code: String = chars[i..=end].iter().collect();
            out.push_str(&escape(&code));
            i = end + 1;
            continue;
        }
        if c == '\\' && i + 1 < chars.len() && chars[i + 1].is_ascii_punctuation() {
            out.push_str(&escape(&chars[i + 1].to_string()));
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
            let next = chars.get(i + 1).is_some_and(|n| !n.is_whitespace());
            let prev = i > 0 && !chars[i - 1].is_whitespace();
            out.push(if next || prev { '_' } else { '*' });
            i += 1;
            continue;
        }
        if c == '['
            && let Some((text, url, len)) = link(&chars[i..])
        {
            out.push_str(&format!("<{}|{}>", escape(&url), inline(&text)));
            i += len;
            continue;
        }
        if c == '<'
            && let Some((url, len)) = autolink(&chars[i..])
        {
            out.push_str(&format!("<{}>", escape(&url)));
            i += len;
            continue;
        }
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
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
    if url.is_empty() || url.contains(char::is_whitespace) || url.contains('|') {
        return None;
    }
    Some((text, url, end + 1))
}

/// `<scheme://...>` at the start of `chars`: the URL and length in chars.
fn autolink(chars: &[char]) -> Option<(String, usize)> {
    let end = chars.iter().position(|c| *c == '>')?;
    let url: String = chars[1..end].iter().collect();
    let ok =
        (url.starts_with("http://") || url.starts_with("https://") || url.starts_with("mailto:"))
            && !url.contains(char::is_whitespace)
            && !url.contains('|');
    ok.then_some((url, end + 1))
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn markdown_becomes_mrkdwn() {
        assert_eq!(render("**bold** and *it*"), "*bold* and _it_");
        assert_eq!(render("__b__ _i_ ~~gone~~"), "*b* _i_ ~gone~");
        assert_eq!(render("# Title\n## **Sub**"), "*Title*\n*Sub*");
        assert_eq!(render("* one\n+ two\n- three"), "• one\n• two\n• three");
        assert_eq!(
            render("see [docs](https://x.dev/a?b=1&c=2) or <https://y>"),
            "see <https://x.dev/a?b=1&amp;c=2|docs> or <https://y>"
        );
        assert_eq!(render("2 * 3 < 7 & 1 > 0"), "2 * 3 &lt; 7 &amp; 1 &gt; 0");
        assert_eq!(render(r"a \*literal\*"), "a *literal*");
        assert_eq!(render("> quoted **x**"), "> quoted *x*");
    }

    #[test]
    fn code_is_kept_but_escaped() {
        let md = "run `a **b** <c>`\n```rust\nlet x = **y** && z;\n```\n**after**";
        assert_eq!(
            render(md),
            "run `a **b** &lt;c&gt;`\n```\nlet x = **y** &amp;&amp; z;\n```\n*after*"
        );
    }
}
