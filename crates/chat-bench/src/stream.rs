//! Reading one streamed answer: frames are split on the blank line, and only what the benchmark
//! needs is looked at (is it a content frame, is it the end), so the load generator stays cheap.
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Whether a frame carries answer text: the platform's `content` event, or an OpenAI chunk with a
/// non-empty `content` (the first chunk has an empty one; gateways may put a space after the colon).
fn has_text(wire: Wire, frame: &[u8]) -> bool {
    match wire {
        Wire::Platform => frame.starts_with(b"event: content"),
        Wire::OpenAi => {
            let mut rest = frame;
            while let Some(at) = find(rest, b"\"content\":") {
                rest = &rest[at + 10..];
                let value = rest.strip_prefix(b" ").unwrap_or(rest);
                if value.starts_with(b"\"") && !value.starts_with(b"\"\"") {
                    return true;
                }
            }
            false
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `data: {chat.completion.chunk}` frames ending in `data: [DONE]`.
    OpenAi,
    /// The platform's `event: content` … `event: done` frames.
    Platform,
}

/// What a finished stream showed.
pub struct Streamed {
    /// From sending the request to the first content frame.
    pub ttft: Duration,
    pub chunks: usize,
}

/// Where the stream is while it is read.
pub struct Reader {
    wire: Wire,
    sent: Instant,
    buf: Vec<u8>,
    pub first_content: Option<Instant>,
    pub chunks: usize,
    pub ended: bool,
    failure: Option<String>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Reader {
    pub fn new(wire: Wire, sent: Instant) -> Self {
        Reader { wire, sent, buf: Vec::with_capacity(1024), first_content: None, chunks: 0, ended: false, failure: None }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(at) = find(&self.buf[start..], b"\n\n") {
            let end = start + at;
            self.frame(start, end);
            start = end + 2;
        }
        self.buf.drain(..start);
    }

    fn frame(&mut self, start: usize, end: usize) {
        let frame = &self.buf[start..end];
        let done = match self.wire {
            Wire::OpenAi => frame.starts_with(b"data: [DONE]"),
            Wire::Platform => frame.starts_with(b"event: done"),
        };
        if done {
            if self.wire == Wire::Platform && find(frame, b"\"finish_reason\":\"stop\"").is_none() {
                self.failure = Some(String::from_utf8_lossy(frame).into_owned());
            }
            self.ended = true;
        } else if frame.starts_with(b"event: error") {
            self.failure = Some(String::from_utf8_lossy(frame).into_owned());
        } else if has_text(self.wire, frame) {
            self.chunks += 1;
            self.first_content.get_or_insert_with(Instant::now);
        }
    }

    pub fn finish(self, expected_chunks: usize) -> Result<Streamed> {
        if let Some(failure) = self.failure {
            bail!("the stream failed: {failure}");
        }
        if !self.ended {
            bail!("the stream ended without its end frame after {} chunks", self.chunks);
        }
        if self.chunks != expected_chunks {
            bail!("{} content chunks instead of {expected_chunks}", self.chunks);
        }
        let first = self.first_content.expect("chunks were counted");
        Ok(Streamed { ttft: first - self.sent, chunks: self.chunks })
    }
}

/// Reads `response` to its end.
pub async fn read_all(mut response: reqwest::Response, wire: Wire, sent: Instant, expected_chunks: usize) -> Result<Streamed> {
    if !response.status().is_success() {
        let status = response.status();
        bail!("HTTP {status}: {}", response.text().await.unwrap_or_default());
    }
    let mut reader = Reader::new(wire, sent);
    while let Some(bytes) = response.chunk().await? {
        reader.feed(&bytes);
    }
    reader.finish(expected_chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_are_counted_once() {
        let wire = "event: meta\ndata: {}\n\nevent: content\ndata: {\"delta\":\"tok \"}\n\nevent: content\ndata: {\"delta\":\"tok \"}\n\nevent: done\ndata: {\"finish_reason\":\"stop\"}\n\n";
        for split in 0..wire.len() {
            let mut reader = Reader::new(Wire::Platform, Instant::now());
            reader.feed(&wire.as_bytes()[..split]);
            reader.feed(&wire.as_bytes()[split..]);
            let streamed = reader.finish(2).expect("complete");
            assert_eq!(streamed.chunks, 2);
        }
    }

    #[test]
    fn openai_chunks_count_only_with_text() {
        let mut reader = Reader::new(Wire::OpenAi, Instant::now());
        reader.feed(b"data: {\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}\n\n");
        reader.feed(b"data: {\"delta\":{\"content\":\"tok \"}}\n\ndata: {\"delta\": {\"content\": \"tok \"}}\n\n");
        reader.feed(b"data: {\"delta\":{},\"finish_reason\":\"stop\"}\n\ndata: [DONE]\n\n");
        assert_eq!(reader.finish(2).expect("complete").chunks, 2);
    }

    #[test]
    fn an_error_or_a_missing_end_fails() {
        let mut reader = Reader::new(Wire::Platform, Instant::now());
        reader.feed(b"event: error\ndata: {}\n\nevent: done\ndata: {\"finish_reason\":\"error\"}\n\n");
        assert!(reader.finish(0).is_err());
        let mut reader = Reader::new(Wire::OpenAi, Instant::now());
        reader.feed(b"data: {\"content\":\"tok \"}\n\n");
        assert!(reader.finish(1).is_err());
    }
}
