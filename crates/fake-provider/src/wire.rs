//! The three wire formats, frame by frame, as the real services send them.

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
    Ollama,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Thinking,
    Text,
}

/// Encodes one response. Anthropic frames depend on what came before (content block indexes),
/// hence the state.
pub(crate) struct Encoder {
    wire: Wire,
    model: String,
    open_block: Option<Block>,
    next_index: usize,
}

fn sse(data: &Value) -> String {
    format!("data: {data}\n\n")
}

fn anthropic_event(data: Value) -> String {
    let kind = data["type"].as_str().unwrap_or("message").to_owned();
    format!("event: {kind}\ndata: {data}\n\n")
}

fn ndjson(data: Value) -> String {
    format!("{data}\n")
}

const CREATED_AT: &str = "2026-01-01T00:00:00.000000Z";

impl Encoder {
    pub(crate) fn new(wire: Wire, model: &str) -> Self {
        Encoder {
            wire,
            model: model.to_owned(),
            open_block: None,
            next_index: 0,
        }
    }

    fn openai_chunk(&self, delta: Value, finish: Value) -> String {
        sse(&json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_767_225_600,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }))
    }

    /// What opens the response before any text.
    pub(crate) fn prelude(&self, prompt_tokens: u32) -> Vec<String> {
        match self.wire {
            Wire::OpenAi => {
                vec![self.openai_chunk(json!({"role": "assistant", "content": ""}), Value::Null)]
            }
            Wire::Anthropic => vec![
                anthropic_event(json!({
                    "type": "message_start",
                    "message": {
                        "id": "msg_fake", "type": "message", "role": "assistant",
                        "model": self.model, "content": [], "stop_reason": null,
                        "stop_sequence": null,
                        "usage": {"input_tokens": prompt_tokens, "output_tokens": 1},
                    },
                })),
                anthropic_event(json!({"type": "ping"})),
            ],
            Wire::Ollama => vec![],
        }
    }

    fn switch_block(&mut self, block: Block, frames: &mut Vec<String>) {
        if self.open_block == Some(block) {
            return;
        }
        self.close_block(frames);
        let content_block = match block {
            Block::Thinking => json!({"type": "thinking", "thinking": ""}),
            Block::Text => json!({"type": "text", "text": ""}),
        };
        frames.push(anthropic_event(json!({
            "type": "content_block_start", "index": self.next_index, "content_block": content_block,
        })));
        self.open_block = Some(block);
    }

    fn close_block(&mut self, frames: &mut Vec<String>) {
        if let Some(block) = self.open_block.take() {
            if block == Block::Thinking {
                frames.push(anthropic_event(json!({
                    "type": "content_block_delta", "index": self.next_index,
                    "delta": {"type": "signature_delta", "signature": "ZmFrZQ=="},
                })));
            }
            frames.push(anthropic_event(
                json!({"type": "content_block_stop", "index": self.next_index}),
            ));
            self.next_index += 1;
        }
    }

    /// Reasoning in the provider's native field.
    pub(crate) fn reasoning(&mut self, text: &str) -> Vec<String> {
        match self.wire {
            Wire::OpenAi => {
                vec![self.openai_chunk(json!({"reasoning_content": text}), Value::Null)]
            }
            Wire::Anthropic => {
                let mut frames = Vec::new();
                self.switch_block(Block::Thinking, &mut frames);
                frames.push(anthropic_event(json!({
                    "type": "content_block_delta", "index": self.next_index,
                    "delta": {"type": "thinking_delta", "thinking": text},
                })));
                frames
            }
            Wire::Ollama => vec![ndjson(json!({
                "model": self.model, "created_at": CREATED_AT,
                "message": {"role": "assistant", "content": "", "thinking": text}, "done": false,
            }))],
        }
    }

    pub(crate) fn content(&mut self, text: &str) -> Vec<String> {
        match self.wire {
            Wire::OpenAi => vec![self.openai_chunk(json!({"content": text}), Value::Null)],
            Wire::Anthropic => {
                let mut frames = Vec::new();
                self.switch_block(Block::Text, &mut frames);
                frames.push(anthropic_event(json!({
                    "type": "content_block_delta", "index": self.next_index,
                    "delta": {"type": "text_delta", "text": text},
                })));
                frames
            }
            Wire::Ollama => vec![ndjson(json!({
                "model": self.model, "created_at": CREATED_AT,
                "message": {"role": "assistant", "content": text}, "done": false,
            }))],
        }
    }

    /// The closing frames. OpenAI sends usage only when the request asked for it, as the real API.
    pub(crate) fn finish(&mut self, truncated: bool, usage: Option<(u32, u32)>) -> Vec<String> {
        match self.wire {
            Wire::OpenAi => {
                let reason = if truncated { "length" } else { "stop" };
                let mut frames = vec![self.openai_chunk(json!({}), json!(reason))];
                if let Some((prompt, completion)) = usage {
                    frames.push(sse(&json!({
                        "id": "chatcmpl-fake", "object": "chat.completion.chunk",
                        "created": 1_767_225_600, "model": self.model, "choices": [],
                        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                  "total_tokens": prompt + completion},
                    })));
                }
                frames.push("data: [DONE]\n\n".to_owned());
                frames
            }
            Wire::Anthropic => {
                let mut frames = Vec::new();
                self.close_block(&mut frames);
                let reason = if truncated { "max_tokens" } else { "end_turn" };
                let (_, completion) = usage.unwrap_or((0, 0));
                frames.push(anthropic_event(json!({
                    "type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": null},
                    "usage": {"output_tokens": completion},
                })));
                frames.push(anthropic_event(json!({"type": "message_stop"})));
                frames
            }
            Wire::Ollama => {
                let (prompt, completion) = usage.unwrap_or((0, 0));
                vec![ndjson(json!({
                    "model": self.model, "created_at": CREATED_AT,
                    "message": {"role": "assistant", "content": ""},
                    "done": true, "done_reason": if truncated { "length" } else { "stop" },
                    "total_duration": 1_000_000, "load_duration": 1000,
                    "prompt_eval_count": prompt, "eval_count": completion,
                }))]
            }
        }
    }

    /// A frame that is not the format: broken JSON in an otherwise well-formed envelope.
    pub(crate) fn garbage(&self) -> String {
        match self.wire {
            Wire::OpenAi => "data: {\"choices\": [tru\n\n".to_owned(),
            Wire::Anthropic => "event: content_block_delta\ndata: not json at all\n\n".to_owned(),
            Wire::Ollama => "{{{ not json\n".to_owned(),
        }
    }
}

/// The provider's JSON error body for an HTTP error status.
pub(crate) fn error_body(wire: Wire, status: u16, message: &str) -> Value {
    match wire {
        Wire::OpenAi => {
            let (kind, code) = match status {
                401 => ("invalid_request_error", "invalid_api_key"),
                429 => ("requests", "rate_limit_exceeded"),
                _ => ("server_error", "internal_error"),
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Wire::Anthropic => {
            let kind = match status {
                401 => "authentication_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Wire::Ollama => json!({"error": message}),
    }
}

/// The provider's non-streaming answer.
pub(crate) fn complete_body(wire: Wire, model: &str, text: &str) -> Value {
    match wire {
        Wire::OpenAi => json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_767_225_600,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
        }),
        Wire::Anthropic => json!({
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 7},
        }),
        Wire::Ollama => json!({
            "model": model, "created_at": CREATED_AT,
            "message": {"role": "assistant", "content": text},
            "done": true, "done_reason": "stop", "prompt_eval_count": 12, "eval_count": 7,
        }),
    }
}
