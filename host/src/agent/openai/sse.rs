//! A server-sent events parser for the Chat Completions stream: bytes in
//! (split anywhere by the network), the `data` of each complete event out.
//!
//! It follows the SSE grammar as far as Chat Completions needs: lines end
//! in `\n`, `\r\n` or `\r` (a `\r\n` may be split across chunks); a blank
//! line ends an event; `:` starts a comment; several `data:` lines of one
//! event are joined with `\n`; other fields (`event`, `id`, `retry`) are
//! ignored. Written by hand rather than with a crate: it is this page of
//! code, and the stream's framing is the one thing the provider must not
//! get wrong, so it is tested here with every split of a sample stream.

/// A line (or the unterminated rest of the stream) longer than this is an
/// error: a server that never sends a newline must not grow memory forever.
pub(super) const MAX_LINE: usize = 8 << 20;

/// The parser's state between chunks.
#[derive(Debug, Default)]
pub(super) struct SseParser {
    /// Bytes after the last complete line.
    buf: Vec<u8>,
    /// The event being read.
    event: PendingEvent,
}

#[derive(Debug, Default)]
struct PendingEvent {
    data: String,
    has_data: bool,
}

impl PendingEvent {
    fn line(&mut self, line: &[u8], out: &mut Vec<String>) {
        if line.is_empty() {
            if self.has_data {
                out.push(std::mem::take(&mut self.data));
                self.has_data = false;
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(&String::from_utf8_lossy(value));
            self.has_data = true;
        }
    }
}

impl SseParser {
    /// Feed the next chunk; returns the data of each event it completed.
    /// `Err` carries the length of an over-long line.
    pub(super) fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, usize> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(rel) = self.buf[start..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
        {
            let end = start + rel;
            let next = if self.buf[end] == b'\r' {
                match self.buf.get(end + 1) {
                    Some(b'\n') => end + 2,
                    Some(_) => end + 1,
                    // Maybe the first half of a `\r\n`: wait for the next chunk.
                    None => break,
                }
            } else {
                end + 1
            };
            self.event.line(&self.buf[start..end], &mut out);
            start = next;
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            return Err(self.buf.len());
        }
        Ok(out)
    }

    /// The stream ended: complete what is pending. Lenient on purpose: an
    /// event not followed by a blank line is still delivered.
    pub(super) fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.buf);
        let rest = rest.strip_suffix(b"\r").unwrap_or(&rest);
        if !rest.is_empty() {
            self.event.line(rest, &mut out);
        }
        self.event.line(b"", &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(pieces: &[&[u8]]) -> Vec<String> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(p.push(piece).expect("line within limit"));
        }
        out.extend(p.finish());
        out
    }

    #[test]
    fn every_split_of_a_stream_gives_the_same_events() {
        let stream: &[u8] = b": keep-alive comment\r\n\r\ndata: {\"a\":1}\r\n\r\n\
            data:{\"b\":\"x\\ny\"}\n\nevent: message\ndata: first\ndata: second\n\n\
            data: caf\xc3\xa9\r\rdata: [DONE]\n\n";
        let expected = vec![
            "{\"a\":1}".to_string(),
            "{\"b\":\"x\\ny\"}".to_string(),
            "first\nsecond".to_string(),
            "café".to_string(),
            "[DONE]".to_string(),
        ];
        assert_eq!(parse_in_pieces(&[stream]), expected);
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let got = parse_in_pieces(&[&stream[..i], &stream[i..j], &stream[j..]]);
                assert_eq!(got, expected, "split at {i} and {j}");
            }
        }
    }

    #[test]
    fn unterminated_last_event_is_delivered_at_the_end() {
        assert_eq!(parse_in_pieces(&[b"data: [DONE]"]), vec!["[DONE]"]);
        assert_eq!(parse_in_pieces(&[b"data: x\r"]), vec!["x"]);
        assert!(parse_in_pieces(&[b": only a comment\n"]).is_empty());
    }

    #[test]
    fn a_line_without_end_is_bounded() {
        let mut p = SseParser::default();
        let big = vec![b'a'; MAX_LINE];
        assert!(p.push(&big).is_ok());
        assert_eq!(p.push(b"a"), Err(MAX_LINE + 1));
    }
}
