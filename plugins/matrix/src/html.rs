//! Markdown rendered to the HTML Matrix clients show as
//! `org.matrix.custom.html` ([`formatted_body`]): the SDK's
//! [`pincer_sdk::html::render`] (shared with Telegram), with line breaks.

use pincer_sdk::html::render;

/// `text` as a Matrix `formatted_body`: [`render`]ed, with line breaks
/// outside `<pre>` blocks as `<br>` (HTML collapses newlines).
pub fn formatted_body(text: &str) -> String {
    let html = render(text);
    let mut out = String::with_capacity(html.len() + 16);
    let mut rest = html.as_str();
    while let Some(start) = rest.find("<pre>") {
        out.push_str(&rest[..start].replace('\n', "<br>\n"));
        let end = rest[start..]
            .find("</pre>")
            .map_or(rest.len(), |e| start + e + "</pre>".len());
        out.push_str(&rest[start..end]);
        rest = &rest[end..];
    }
    out.push_str(&rest.replace('\n', "<br>\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_become_br_outside_pre_blocks_only() {
        assert_eq!(
            formatted_body("**a**\nb\n```\nx\ny\n```\nc"),
            "<b>a</b><br>\nb<br>\n<pre>x\ny</pre><br>\nc"
        );
    }
}
