//! The Bot API's `parse_mode` checks, faithful enough to catch what real
//! Telegram rejects with `400 Bad Request: can't parse entities: ...`:
//! unknown or unbalanced HTML tags, unescaped MarkdownV2 reserved
//! characters, unclosed entities. A successful parse yields the message's
//! plain text (markup removed, escapes and HTML entities decoded), which is
//! what the length limits apply to.

/// A `parse_mode` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseMode {
    /// `HTML`.
    Html,
    /// `MarkdownV2`.
    MarkdownV2,
    /// Legacy `Markdown`.
    Markdown,
}

impl ParseMode {
    /// Parse the parameter (case-insensitive as Telegram is); `Err` carries
    /// the Bot API's description after "Bad Request: ".
    pub(crate) fn from_param(s: &str) -> Result<Option<ParseMode>, String> {
        match s.to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "html" => Ok(Some(ParseMode::Html)),
            "markdownv2" => Ok(Some(ParseMode::MarkdownV2)),
            "markdown" => Ok(Some(ParseMode::Markdown)),
            _ => Err("unsupported parse_mode".into()),
        }
    }
}

/// The plain text of `text` under `mode`, or the reason it can't be parsed
/// (the part after "can't parse entities: ").
pub(crate) fn plain_text(text: &str, mode: Option<ParseMode>) -> Result<String, String> {
    match mode {
        None => Ok(text.to_string()),
        Some(ParseMode::Html) => html(text),
        Some(ParseMode::MarkdownV2) => markdown_v2(text),
        Some(ParseMode::Markdown) => markdown_legacy(text),
    }
}

const HTML_TAGS: &[&str] = &[
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-emoji",
];

fn html(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut stack: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    let bytes = text.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'<' => {
                let Some(len) = text[i..].find('>') else {
                    return Err(format!("Unclosed start tag at byte offset {i}"));
                };
                let inner = &text[i + 1..i + len];
                if let Some(end) = inner.strip_prefix('/') {
                    let name = end.trim().to_ascii_lowercase();
                    match stack.pop() {
                        Some((open, _)) if open == name => {}
                        Some((open, _)) => {
                            return Err(format!(
                                "Unmatched end tag at byte offset {i}, expected \"</{open}>\", found \"</{name}>\""
                            ));
                        }
                        None => return Err(format!("Unexpected end tag at byte offset {i}")),
                    }
                } else {
                    let name_end = inner
                        .find(|c: char| c.is_whitespace() || c == '/')
                        .unwrap_or(inner.len());
                    let name = inner[..name_end].to_ascii_lowercase();
                    if !HTML_TAGS.contains(&name.as_str()) {
                        return Err(format!(
                            "Unsupported start tag \"{name}\" at byte offset {i}"
                        ));
                    }
                    let attrs = &inner[name_end..];
                    if name == "span" && !attrs.contains("tg-spoiler") {
                        return Err(format!(
                            "Tag \"span\" must have class \"tg-spoiler\" at byte offset {i}"
                        ));
                    }
                    stack.push((name, i));
                }
                i += len + 1;
            }
            b'&' => {
                let (s, used) = html_entity(&text[i..]);
                out.push_str(&s);
                i += used;
            }
            _ => {
                let c = text[i..].chars().next().unwrap_or('\u{fffd}');
                out.push(c);
                i += c.len_utf8().max(1);
            }
        }
    }
    if let Some((name, _)) = stack.pop() {
        return Err(format!(
            "Can't find end tag corresponding to start tag \"{name}\""
        ));
    }
    Ok(out)
}

/// Decode the HTML entity at the start of `s` (which starts with `&`):
/// the text it stands for and the bytes it used. An unknown entity stays a
/// literal `&`, as Telegram leaves it.
fn html_entity(s: &str) -> (String, usize) {
    let end = s
        .char_indices()
        .take(12)
        .find(|&(_, c)| c == ';')
        .map(|(i, _)| i);
    if let Some(end) = end {
        let name = &s[1..end];
        let decoded = match name {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            _ => name
                .strip_prefix("#x")
                .or_else(|| name.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        if let Some(c) = decoded {
            return (c.to_string(), end + 1);
        }
    }
    ("&".into(), 1)
}

const MDV2_RESERVED: &str = "_*[]()~`>#+-=|{}.!\\";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Md {
    Bold,
    Italic,
    Underline,
    Strikethrough,
    Spoiler,
    TextUrl,
}

fn markdown_v2(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut stack: Vec<(Md, usize)> = Vec::new();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut k = 0;
    let at_line_start = |k: usize| k == 0 || chars[k - 1].1 == '\n';
    while k < chars.len() {
        let (i, c) = chars[k];
        let next = chars.get(k + 1).map(|&(_, c)| c);
        match c {
            '\\' => match next {
                Some(n) if (n as u32) > 0 && (n as u32) < 127 => {
                    out.push(n);
                    k += 2;
                }
                _ => return Err(reserved(c)),
            },
            '`' => {
                let pre = next == Some('`') && chars.get(k + 2).map(|&(_, c)| c) == Some('`');
                let fence = if pre { 3 } else { 1 };
                // Code: only '`' and '\' are special until the closing fence.
                let mut j = k + fence;
                let mut body = String::new();
                loop {
                    let Some(&(_, ch)) = chars.get(j) else {
                        return Err(format!(
                            "Can't find end of {} entity at byte offset {i}",
                            if pre { "Pre" } else { "Code" }
                        ));
                    };
                    if ch == '\\' {
                        match chars.get(j + 1) {
                            Some(&(_, n)) => {
                                body.push(n);
                                j += 2;
                                continue;
                            }
                            None => return Err(reserved('\\')),
                        }
                    }
                    if ch == '`' {
                        let closes =
                            (0..fence).all(|d| chars.get(j + d).map(|&(_, c)| c) == Some('`'));
                        if closes {
                            j += fence;
                            break;
                        }
                        return Err(format!("Can't find end of Pre entity at byte offset {i}"));
                    }
                    body.push(ch);
                    j += 1;
                }
                if pre {
                    // The first line is the optional language.
                    match body.split_once('\n') {
                        Some((_, code)) => out.push_str(code),
                        None => out.push_str(&body),
                    }
                } else {
                    out.push_str(&body);
                }
                k = j;
            }
            '*' => {
                toggle(&mut stack, Md::Bold, i)?;
                k += 1;
            }
            '_' if next == Some('_') => {
                toggle(&mut stack, Md::Underline, i)?;
                k += 2;
            }
            '_' => {
                toggle(&mut stack, Md::Italic, i)?;
                k += 1;
            }
            '~' => {
                toggle(&mut stack, Md::Strikethrough, i)?;
                k += 1;
            }
            '|' if next == Some('|') => {
                toggle(&mut stack, Md::Spoiler, i)?;
                k += 2;
            }
            '!' if next == Some('[') => {
                stack.push((Md::TextUrl, i));
                k += 2;
            }
            '[' => {
                stack.push((Md::TextUrl, i));
                k += 1;
            }
            ']' if matches!(stack.last(), Some((Md::TextUrl, _))) => {
                stack.pop();
                k += 1;
                if chars.get(k).map(|&(_, c)| c) == Some('(') {
                    // The URL: up to an unescaped ')'.
                    let mut j = k + 1;
                    loop {
                        match chars.get(j).map(|&(_, c)| c) {
                            None => {
                                return Err(format!(
                                    "Can't find end of a URL at byte offset {}",
                                    chars[k].0
                                ));
                            }
                            Some('\\') => j += 2,
                            Some(')') => break,
                            Some(_) => j += 1,
                        }
                    }
                    k = j + 1;
                }
            }
            '>' if at_line_start(k) => k += 1,
            c if MDV2_RESERVED.contains(c) => return Err(reserved(c)),
            c => {
                out.push(c);
                k += 1;
            }
        }
    }
    if let Some((kind, at)) = stack.pop() {
        return Err(format!(
            "Can't find end of {kind:?} entity at byte offset {at}"
        ));
    }
    Ok(out)
}

fn reserved(c: char) -> String {
    format!("Character '{c}' is reserved and must be escaped with the preceding '\\'")
}

/// Open `kind`, or close it if it is the innermost open entity; closing a
/// non-innermost one is an error (entities must nest).
fn toggle(stack: &mut Vec<(Md, usize)>, kind: Md, at: usize) -> Result<(), String> {
    match stack.iter().rposition(|(k, _)| *k == kind) {
        None => {
            stack.push((kind, at));
            Ok(())
        }
        Some(p) if p + 1 == stack.len() => {
            stack.pop();
            Ok(())
        }
        Some(_) => {
            let (inner, start) = stack[stack.len() - 1];
            Err(format!(
                "Can't find end of {inner:?} entity at byte offset {start}"
            ))
        }
    }
}

fn markdown_legacy(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut k = 0;
    while k < chars.len() {
        let (i, c) = chars[k];
        match c {
            '\\' if matches!(chars.get(k + 1), Some(&(_, '*' | '_' | '`' | '['))) => {
                out.push(chars[k + 1].1);
                k += 2;
            }
            '*' | '_' | '`' => {
                let pre = c == '`'
                    && chars.get(k + 1).map(|&(_, c)| c) == Some('`')
                    && chars.get(k + 2).map(|&(_, c)| c) == Some('`');
                let fence = if pre { 3 } else { 1 };
                let start = k + fence;
                let close = (start..chars.len())
                    .find(|&j| (0..fence).all(|d| chars.get(j + d).map(|&(_, x)| x) == Some(c)));
                let Some(close) = close else {
                    return Err(format!(
                        "Can't find end of the entity starting at byte offset {i}"
                    ));
                };
                out.extend(chars[start..close].iter().map(|&(_, x)| x));
                k = close + fence;
            }
            '[' => {
                let close = (k + 1..chars.len()).find(|&j| chars[j].1 == ']');
                let Some(close) = close else {
                    return Err(format!(
                        "Can't find end of the entity starting at byte offset {i}"
                    ));
                };
                out.extend(chars[k + 1..close].iter().map(|&(_, x)| x));
                k = close + 1;
                if chars.get(k).map(|&(_, c)| c) == Some('(') {
                    match (k..chars.len()).find(|&j| chars[j].1 == ')') {
                        Some(end) => k = end + 1,
                        None => {
                            return Err(format!(
                                "Can't find end of the entity starting at byte offset {i}"
                            ));
                        }
                    }
                }
            }
            c => {
                out.push(c);
                k += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html_ok(s: &str) -> String {
        plain_text(s, Some(ParseMode::Html)).expect(s)
    }
    fn v2(s: &str) -> Result<String, String> {
        plain_text(s, Some(ParseMode::MarkdownV2))
    }

    #[test]
    fn html_known_tags_and_entities_parse_to_plain_text() {
        assert_eq!(
            html_ok("<b>bold</b> <a href=\"https://x\">link</a> &lt;tag&gt; &amp; &#33;&#x41;"),
            "bold link <tag> & !A"
        );
        assert_eq!(
            html_ok("<pre><code class=\"language-rust\">fn</code></pre>"),
            "fn"
        );
        assert_eq!(html_ok("a & b"), "a & b");
        assert_eq!(html_ok("<span class=\"tg-spoiler\">s</span>"), "s");
    }

    #[test]
    fn html_unknown_unbalanced_or_mismatched_tags_fail() {
        let e = plain_text("hi <br> there", Some(ParseMode::Html)).unwrap_err();
        assert_eq!(e, "Unsupported start tag \"br\" at byte offset 3");
        let e = plain_text("<b>open", Some(ParseMode::Html)).unwrap_err();
        assert!(
            e.contains("Can't find end tag corresponding to start tag \"b\""),
            "{e}"
        );
        let e = plain_text("<b><i>x</b></i>", Some(ParseMode::Html)).unwrap_err();
        assert!(e.starts_with("Unmatched end tag at byte offset 7"), "{e}");
        assert!(plain_text("x</b>", Some(ParseMode::Html)).is_err());
        assert!(plain_text("a <b", Some(ParseMode::Html)).is_err());
        assert!(plain_text("<span>x</span>", Some(ParseMode::Html)).is_err());
    }

    #[test]
    fn markdown_v2_needs_reserved_characters_escaped() {
        assert_eq!(
            v2("Hello, world\\! 1\\.5 \\- *bold* _it_ __u__ ~s~ ||sp|| `a_b` [l](https://x.y/\\))")
                .unwrap(),
            "Hello, world! 1.5 - bold it u s sp a_b l"
        );
        assert_eq!(v2("```rust\nlet a = 1;\n```").unwrap(), "let a = 1;\n");
        assert_eq!(v2(">quote").unwrap(), "quote");
        let e = v2("Hello!").unwrap_err();
        assert_eq!(
            e,
            "Character '!' is reserved and must be escaped with the preceding '\\'"
        );
        assert!(v2("1.5").is_err());
        assert!(v2("a - b").is_err());
        assert!(
            v2("*open")
                .unwrap_err()
                .contains("Can't find end of Bold entity")
        );
        assert!(v2("*a _b* c_").is_err());
        assert!(v2("`code").is_err());
        assert!(v2("trailing\\").is_err());
    }

    #[test]
    fn legacy_markdown_needs_closed_entities_only() {
        let md = |s| plain_text(s, Some(ParseMode::Markdown));
        assert_eq!(
            md("*b* _i_ `c` [t](http://u) 1.5!").unwrap(),
            "b i c t 1.5!"
        );
        assert!(md("snake_case").is_err());
        assert_eq!(md("snake\\_case").unwrap(), "snake_case");
    }

    #[test]
    fn no_input_panics_any_parser() {
        let nasty =
            "<b>é&#x1F980;&amp;<a href='x'>\\*_~||`[]()```py\n🦀\\`!>#+-=|{}.\\<i></b>&;&#;&#xZZ;";
        let cut: Vec<usize> = nasty.char_indices().map(|(i, _)| i).collect();
        for &a in &cut {
            for &b in cut.iter().filter(|&&b| b >= a) {
                for mode in [ParseMode::Html, ParseMode::MarkdownV2, ParseMode::Markdown] {
                    let _ = plain_text(&nasty[a..b], Some(mode));
                }
            }
        }
    }

    #[test]
    fn parse_mode_names_are_case_insensitive() {
        assert_eq!(ParseMode::from_param("html"), Ok(Some(ParseMode::Html)));
        assert_eq!(
            ParseMode::from_param("MarkdownV2"),
            Ok(Some(ParseMode::MarkdownV2))
        );
        assert_eq!(ParseMode::from_param(""), Ok(None));
        assert!(ParseMode::from_param("rtf").is_err());
    }
}
