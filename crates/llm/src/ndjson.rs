//! Newline-delimited JSON framing, as Ollama streams: one object per line, lines split across
//! chunks at any byte.

use crate::LlmError;
use crate::sse::MAX_LINE_BYTES;

#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Complete, non-blank lines in this chunk, without their line endings.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<String>, LlmError> {
        self.buf.extend_from_slice(chunk);
        let mut lines = Vec::new();
        let mut pos = 0;
        while let Some(offset) = self.buf[pos..].iter().position(|&b| b == b'\n') {
            let end = pos + offset;
            if let Some(line) = decode(&self.buf[pos..end])? {
                lines.push(line);
            }
            pos = end + 1;
        }
        self.buf.drain(..pos);
        if self.buf.len() > MAX_LINE_BYTES {
            return Err(LlmError::Protocol("NDJSON line too long".into()));
        }
        Ok(lines)
    }

    /// A last line without a trailing newline.
    pub fn finish(&mut self) -> Result<Option<String>, LlmError> {
        let rest = std::mem::take(&mut self.buf);
        decode(&rest)
    }
}

fn decode(line: &[u8]) -> Result<Option<String>, LlmError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line)
        .map_err(|_| LlmError::Protocol("NDJSON line is not UTF-8".into()))?;
    Ok((!line.trim().is_empty()).then(|| line.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_across_chunks_with_crlf_and_blanks() {
        let mut splitter = LineSplitter::new();
        assert_eq!(
            splitter.feed(b"{\"a\":1}\r\n\n{\"b\"").unwrap(),
            vec!["{\"a\":1}"]
        );
        assert_eq!(splitter.feed(b":2}").unwrap(), Vec::<String>::new());
        assert_eq!(splitter.finish().unwrap().as_deref(), Some("{\"b\":2}"));
    }
}
