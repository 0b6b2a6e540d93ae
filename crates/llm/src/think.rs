//! Separating a leading `<think>…</think>` block from the answer (R-LLM-2).
//!
//! Reasoning models served through plain chat APIs (DeepSeek-R1 distills, QwQ, many llama.cpp and
//! vLLM setups) put their reasoning inline. Only a block at the very start counts: a `<think>`
//! later in the answer is the model talking about the tag, and stays answer text. Tags arrive split
//! across arbitrary chunk boundaries, so partial tags are held back until they resolve.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// What one pushed chunk contributed. Within a chunk reasoning always precedes the answer, because
/// the splitter only ever moves forward from reasoning to answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    pub reasoning: String,
    pub answer: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing decided yet: only whitespace and a prefix of `<think>` seen.
    Start,
    Thinking,
    /// Just after `</think>`: whitespace separating reasoning from the answer is dropped.
    AfterThink,
    Answer,
}

#[derive(Debug, Clone)]
pub struct ThinkSplitter {
    state: State,
    pending: String,
}

impl Default for ThinkSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl ThinkSplitter {
    pub fn new() -> Self {
        ThinkSplitter {
            state: State::Start,
            pending: String::new(),
        }
    }

    pub fn push(&mut self, chunk: &str) -> Split {
        let mut out = Split::default();
        self.pending.push_str(chunk);
        loop {
            match self.state {
                State::Start => {
                    let trimmed = self.pending.trim_start();
                    if trimmed.is_empty() {
                        return out;
                    }
                    if let Some(rest) = trimmed.strip_prefix(OPEN) {
                        self.pending = rest.to_owned();
                        self.state = State::Thinking;
                    } else if OPEN.starts_with(trimmed) {
                        return out;
                    } else {
                        out.answer.push_str(&self.pending);
                        self.pending.clear();
                        self.state = State::Answer;
                    }
                }
                State::Thinking => {
                    if let Some(end) = self.pending.find(CLOSE) {
                        out.reasoning.push_str(&self.pending[..end]);
                        self.pending.drain(..end + CLOSE.len());
                        self.state = State::AfterThink;
                    } else {
                        let keep = partial_suffix(&self.pending, CLOSE);
                        let emit = self.pending.len() - keep;
                        out.reasoning.push_str(&self.pending[..emit]);
                        self.pending.drain(..emit);
                        return out;
                    }
                }
                State::AfterThink => {
                    let trimmed = self.pending.trim_start();
                    if trimmed.is_empty() {
                        self.pending.clear();
                        return out;
                    }
                    out.answer.push_str(trimmed);
                    self.pending.clear();
                    self.state = State::Answer;
                }
                State::Answer => {
                    out.answer.push_str(&self.pending);
                    self.pending.clear();
                    return out;
                }
            }
        }
    }

    /// Releases whatever was held back at the end of the stream: an unfinished `<think>` prefix is
    /// answer text, an unclosed think block is all reasoning.
    pub fn finish(&mut self) -> Split {
        let mut out = Split::default();
        let held = std::mem::take(&mut self.pending);
        match self.state {
            State::Start | State::Answer => out.answer = held,
            State::Thinking => out.reasoning = held,
            State::AfterThink => {}
        }
        self.state = State::Answer;
        out
    }
}

/// Length of the longest proper prefix of `tag` that `text` ends with. Tags are ASCII, so the cut
/// always falls on a char boundary.
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .find(|&k| text.ends_with(&tag[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&str]) -> (String, String) {
        let mut splitter = ThinkSplitter::new();
        let (mut reasoning, mut answer) = (String::new(), String::new());
        for chunk in chunks {
            let split = splitter.push(chunk);
            reasoning += &split.reasoning;
            answer += &split.answer;
        }
        let split = splitter.finish();
        (reasoning + &split.reasoning, answer + &split.answer)
    }

    #[test]
    fn leading_block_is_reasoning() {
        assert_eq!(
            run(&["<think>plan</think>\n\nHello"]),
            ("plan".into(), "Hello".into())
        );
    }

    #[test]
    fn leading_whitespace_before_block_is_allowed() {
        assert_eq!(run(&["\n  <think>x</think>y"]), ("x".into(), "y".into()));
    }

    #[test]
    fn tags_split_one_byte_at_a_time() {
        let text = "<think>a<b</think>answer";
        let chunks: Vec<String> = text.chars().map(String::from).collect();
        let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
        assert_eq!(run(&chunks), ("a<b".into(), "answer".into()));
    }

    #[test]
    fn later_think_tag_is_answer_text() {
        assert_eq!(
            run(&["Use ", "<think>", " tags</think>"]),
            (String::new(), "Use <think> tags</think>".into())
        );
    }

    #[test]
    fn unclosed_block_is_all_reasoning() {
        assert_eq!(
            run(&["<think>still going </th"]),
            ("still going </th".into(), String::new())
        );
    }

    #[test]
    fn partial_open_tag_at_end_is_answer() {
        assert_eq!(run(&[" <thi"]), (String::new(), " <thi".into()));
    }

    #[test]
    fn text_without_block_keeps_leading_whitespace() {
        assert_eq!(run(&["\n", "\nHi"]), (String::new(), "\n\nHi".into()));
    }

    #[test]
    fn multibyte_text_around_tags() {
        assert_eq!(
            run(&["<think>日本", "語</thi", "nk>é"]),
            ("日本語".into(), "é".into())
        );
    }
}
