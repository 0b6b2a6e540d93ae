//! Server-sent events framing, as OpenAI and Anthropic stream. Bytes arrive in arbitrary chunks:
//! a frame, a line, even a UTF-8 character may be split, so lines are assembled from raw bytes.

use crate::LlmError;

/// Longer lines mean a broken or hostile upstream; refusing them bounds memory.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `None` means the default type ("message").
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// A chunk ended with `\r`; a `\n` starting the next one belongs to the same line break.
    skip_lf: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<Vec<SseEvent>, LlmError> {
        if self.skip_lf && !chunk.is_empty() {
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
            self.skip_lf = false;
        }
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut pos = 0;
        while let Some(offset) = self.buf[pos..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
        {
            let end = pos + offset;
            let line = self.buf[pos..end].to_vec();
            let mut next = end + 1;
            if self.buf[end] == b'\r' {
                match self.buf.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            pos = next;
            self.line(&line, &mut events)?;
        }
        self.buf.drain(..pos);
        if self.buf.len() > MAX_LINE_BYTES {
            return Err(LlmError::Protocol("event-stream line too long".into()));
        }
        Ok(events)
    }

    /// End of input. A last event without its closing blank line is still delivered: some servers
    /// close the connection right after the final `data:` line.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, LlmError> {
        let mut events = Vec::new();
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.line(&line, &mut events)?;
        }
        self.line(b"", &mut events)?;
        Ok(events.pop())
    }

    fn line(&mut self, line: &[u8], events: &mut Vec<SseEvent>) -> Result<(), LlmError> {
        if line.is_empty() {
            if self.has_data {
                events.push(SseEvent {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.event = None;
            self.has_data = false;
            return Ok(());
        }
        let line = std::str::from_utf8(line)
            .map_err(|_| LlmError::Protocol("event-stream line is not UTF-8".into()))?;
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_data_comments_and_crlf() {
        let mut parser = SseParser::new();
        let events = parser
            .feed(b": keep-alive\r\nevent: delta\r\ndata: a\r\ndata:b\r\n\r\ndata: c\n\n")
            .unwrap();
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: Some("delta".into()),
                    data: "a\nb".into()
                },
                SseEvent {
                    event: None,
                    data: "c".into()
                },
            ]
        );
    }

    #[test]
    fn cr_split_from_lf_is_one_line_break() {
        let mut parser = SseParser::new();
        assert!(parser.feed(b"data: x\r").unwrap().is_empty());
        assert!(parser.feed(b"\n").unwrap().is_empty());
        assert_eq!(parser.feed(b"\r\n").unwrap().len(), 1);
    }

    #[test]
    fn last_event_without_blank_line_is_delivered() {
        let mut parser = SseParser::new();
        assert!(parser.feed(b"data: [DONE]").unwrap().is_empty());
        assert_eq!(parser.finish().unwrap().unwrap().data, "[DONE]");
    }

    #[test]
    fn invalid_utf8_is_a_protocol_error() {
        let mut parser = SseParser::new();
        assert!(matches!(
            parser.feed(b"data: \xff\xfe\n"),
            Err(LlmError::Protocol(_))
        ));
    }
}
