//! Markdown (the CommonMark subset models write) rendered to the small HTML
//! subset chat platforms accept (Telegram's `parse_mode = "HTML"`, Matrix's
//! `org.matrix.custom.html`): `<b>`, `<i>`, `<s>`,
//! `<code>`, `<pre><code class="language-x">`, `<a href>` and
//! `<blockquote>`. Everything else is escaped (`&`, `<`, `>`), so the output
//! is always well-formed: every tag it opens it closes, and unmatched
//! Markdown markers stay as literal text.

/// Escape text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

fn escape_attr(text: &str) -> String {
    escape(text).replace('"', "&quot;")
}

/// Render Markdown `text` to HTML (newlines kept as they are).
pub fn render(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut lines = text.split('\n').peekable();
    let mut first = true;
    let mut quote: Vec<String> = Vec::new();
    let newline = |out: &mut String, first: &mut bool| {
        if !*first {
            out.push('\n');
        }
        *first = false;
    };
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        // A blockquote ends at the first line that is not quoted.
        if let Some(q) = trimmed.strip_prefix('>') {
            quote.push(inline(q.strip_prefix(' ').unwrap_or(q)));
            continue;
        }
        if !quote.is_empty() {
            newline(&mut out, &mut first);
            out.push_str("<blockquote>");
            out.push_str(&quote.join("\n"));
            out.push_str("</blockquote>");
            quote.clear();
        }
        if let Some(info) = trimmed.strip_prefix("```") {
            let lang: String = info
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '_' | '#'))
                .collect();
            let mut code = Vec::new();
            for l in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    break;
                }
                code.push(l);
            }
            newline(&mut out, &mut first);
            if lang.is_empty() {
                out.push_str("<pre>");
                out.push_str(&escape(&code.join("\n")));
                out.push_str("</pre>");
            } else {
                out.push_str(&format!(
                    "<pre><code class=\"language-{}\">{}</code></pre>",
                    escape_attr(&lang),
                    escape(&code.join("\n"))
                ));
            }
            continue;
        }
        newline(&mut out, &mut first);
        let hashes = trimmed.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&hashes) && trimmed[hashes..].starts_with(' ') {
            out.push_str("<b>");
            out.push_str(&inline(trimmed[hashes..].trim()));
            out.push_str("</b>");
        } else if let Some(item) = ["- ", "* ", "+ "]
            .iter()
            .find_map(|b| trimmed.strip_prefix(b))
        {
            let indent = &line[..line.len() - trimmed.len()];
            out.push_str(indent);
            out.push_str("• ");
            out.push_str(&inline(item));
        } else if trimmed.chars().all(|c| matches!(c, '-' | '*' | '_'))
            && trimmed.chars().count() >= 3
        {
            out.push_str("──────");
        } else {
            out.push_str(&inline(line));
        }
    }
    if !quote.is_empty() {
        newline(&mut out, &mut first);
        out.push_str("<blockquote>");
        out.push_str(&quote.join("\n"));
        out.push_str("</blockquote>");
    }
    out
}

/// Render the inline Markdown of one line.
fn inline(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    render_span(&chars, &mut out);
    out
}

fn find(chars: &[char], from: usize, pat: &[char]) -> Option<usize> {
    if pat.is_empty() || chars.len() < pat.len() {
        return None;
    }
    (from..=chars.len() - pat.len()).find(|&i| chars[i..i + pat.len()] == *pat)
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        _ => out.push(c),
    }
}

fn render_span(chars: &[char], out: &mut String) {
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        // Backslash escapes of Markdown punctuation.
        if c == '\\' && i + 1 < chars.len() && chars[i + 1].is_ascii_punctuation() {
            push_escaped(out, chars[i + 1]);
            i += 2;
            continue;
        }
        if c == '`'
            && let Some(end) = find(chars, i + 1, &['`']).filter(|&e| e > i + 1)
        {
            out.push_str("<code>");
            for &ch in &chars[i + 1..end] {
                push_escaped(out, ch);
            }
            out.push_str("</code>");
            i = end + 1;
            continue;
        }
        if c == '['
            && let Some(close) = find(chars, i + 1, &[']', '('])
            && let Some(end) = find(chars, close + 2, &[')'])
        {
            let url: String = chars[close + 2..end].iter().collect();
            let url = url.trim();
            let ok = ["https://", "http://", "tg://", "mailto:"]
                .iter()
                .any(|p| url.starts_with(p))
                && !url.contains(char::is_whitespace);
            if ok && close > i + 1 {
                out.push_str(&format!("<a href=\"{}\">", escape_attr(url)));
                render_span(&chars[i + 1..close], out);
                out.push_str("</a>");
                i = end + 1;
                continue;
            }
        }
        let pairs: [(&[char], &str); 4] = [
            (&['*', '*'], "b"),
            (&['_', '_'], "b"),
            (&['~', '~'], "s"),
            (&['*'], "i"),
        ];
        let mut matched = false;
        for (marker, tag) in pairs.iter().chain(std::iter::once(&(&['_'][..], "i"))) {
            let n = marker.len();
            if chars.len() < i + n || chars[i..i + n] != **marker {
                continue;
            }
            let open = i + n;
            // Content may not start with a space; `_` must sit at word edges.
            if open >= chars.len() || chars[open].is_whitespace() {
                continue;
            }
            if marker[0] == '_' && i > 0 && chars[i - 1].is_alphanumeric() {
                continue;
            }
            let mut from = open;
            let close = loop {
                let Some(at) = find(chars, from, marker) else {
                    break None;
                };
                let before_ok = !chars[at - 1].is_whitespace();
                let after = chars.get(at + n).copied();
                let edge_ok = marker[0] != '_' || !after.is_some_and(char::is_alphanumeric);
                // `*a**` must not close an italic on the first `*` of `**`.
                let single_ok = n == 2 || (after != Some(marker[0]) && chars[at - 1] != marker[0]);
                if at > open && before_ok && edge_ok && single_ok {
                    // `***` closing `**`: the inner `*` closes first.
                    if n == 2 && after == Some(marker[0]) {
                        break Some(at + 1);
                    }
                    break Some(at);
                }
                from = at + 1;
            };
            if let Some(close) = close {
                out.push_str(&format!("<{tag}>"));
                render_span(&chars[open..close], out);
                out.push_str(&format!("</{tag}>"));
                i = close + n;
                matched = true;
                break;
            }
        }
        if matched {
            continue;
        }
        push_escaped(out, c);
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_markup_becomes_tags_and_the_rest_is_escaped() {
        assert_eq!(
            render("**bold** and *it* or _it_ ~~gone~~ `a<b>&c` 1 < 2 & 3 > 1"),
            "<b>bold</b> and <i>it</i> or <i>it</i> <s>gone</s> <code>a&lt;b&gt;&amp;c</code> 1 &lt; 2 &amp; 3 &gt; 1"
        );
        assert_eq!(
            render("see [the docs](https://example.com/a?b=1&c=\"2\")"),
            "see <a href=\"https://example.com/a?b=1&amp;c=&quot;2&quot;\">the docs</a>"
        );
        // Not a link scheme we allow: left as text.
        assert_eq!(
            render("[x](javascript:alert(1))"),
            "[x](javascript:alert(1))"
        );
    }

    #[test]
    fn unmatched_markers_and_snake_case_stay_literal() {
        assert_eq!(render("2 * 3 = 6 and a*b"), "2 * 3 = 6 and a*b");
        assert_eq!(render("snake_case_name"), "snake_case_name");
        assert_eq!(render("**unclosed"), "**unclosed");
        assert_eq!(render("<script>"), "&lt;script&gt;");
        assert_eq!(render("\\*not italic\\*"), "*not italic*");
    }

    #[test]
    fn blocks_headings_lists_quotes_and_code() {
        let md = "# Title\n\n- one\n- **two**\n> quoted <x>\n> more\nafter\n```rust\nfn a() -> &str { \"<\" }\n```\n```\nplain\n```";
        assert_eq!(
            render(md),
            "<b>Title</b>\n\n• one\n• <b>two</b>\n<blockquote>quoted &lt;x&gt;\nmore</blockquote>\nafter\n<pre><code class=\"language-rust\">fn a() -&gt; &amp;str { \"&lt;\" }</code></pre>\n<pre>plain</pre>"
        );
        // An unterminated fence takes the rest of the text.
        assert_eq!(render("```\n*x*"), "<pre>*x*</pre>");
    }

    #[test]
    fn nested_markup_stays_balanced() {
        assert_eq!(render("**bold *and it***"), "<b>bold <i>and it</i></b>");
        assert_eq!(
            render("*it with **b** inside*"),
            "<i>it with <b>b</b> inside</i>"
        );
    }
}
