//! Dataset records checked field by field, for callers that must tell a person exactly what is
//! wrong (the server's upload validation), and token counts the way the trainer sees them.
//!
//! The rules are at least as strict as [`crate::train::parse_record`]: a record accepted here is
//! accepted by the trainer, both in its original form and in the normalized `messages` form
//! written by [`normalized_record`] (the tests check that on every case they try).

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use serde_json::{Value, json};

use crate::chat::{ChatMessage, ChatTemplate};
use crate::error::{EngineError, Result};
use crate::tokenizer::Tokenizer;
use crate::train::{DatasetFormat, TrainingExample, tokenize_example};

/// Roles a conversation may use; chat templates reject or mangle others.
pub const ROLES: [&str; 3] = ["system", "user", "assistant"];

/// What is wrong with one record: the field (a path such as `messages[2].content`, or `None`
/// for the record as a whole) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub field: Option<String>,
    pub reason: String,
}

impl RecordError {
    fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: Some(field.into()), reason: reason.into() }
    }

    fn record(reason: impl Into<String>) -> Self {
        Self { field: None, reason: reason.into() }
    }
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// The name used in APIs and files: `alpaca`, `sharegpt`, `messages`.
pub fn format_name(format: DatasetFormat) -> &'static str {
    match format {
        DatasetFormat::Alpaca => "alpaca",
        DatasetFormat::ShareGpt => "sharegpt",
        DatasetFormat::Messages => "messages",
    }
}

pub fn parse_format_name(name: &str) -> Option<DatasetFormat> {
    match name {
        "alpaca" => Some(DatasetFormat::Alpaca),
        "sharegpt" => Some(DatasetFormat::ShareGpt),
        "messages" => Some(DatasetFormat::Messages),
        _ => None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A required string field.
fn string<'a>(obj: &'a Value, key: &str, path: &str) -> std::result::Result<&'a str, RecordError> {
    match obj.get(key) {
        None => Err(RecordError::field(path, "is missing")),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(RecordError::field(path, format!("must be a string, found {}", kind(other)))),
    }
}

/// An optional string field: absent, null or a string.
fn optional_string<'a>(obj: &'a Value, key: &str) -> std::result::Result<Option<&'a str>, RecordError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(RecordError::field(key, format!("must be a string, found {}", kind(other)))),
    }
}

fn non_empty<'a>(value: &'a str, path: &str) -> std::result::Result<&'a str, RecordError> {
    if value.trim().is_empty() { Err(RecordError::field(path, "must not be empty")) } else { Ok(value) }
}

/// Checks one record against `format` (or the format its keys suggest when `None`) and returns
/// the conversation it describes, with the format used.
pub fn check_record(
    record: &Value,
    format: Option<DatasetFormat>,
) -> std::result::Result<(DatasetFormat, TrainingExample), RecordError> {
    if !record.is_object() {
        return Err(RecordError::record(format!("must be a JSON object, found {}", kind(record))));
    }
    let format = match format.or_else(|| DatasetFormat::detect(record)) {
        Some(f) => f,
        None => {
            return Err(RecordError::record(
                "is not alpaca (instruction, output), sharegpt (conversations) or messages (messages)",
            ));
        }
    };
    let mut messages = Vec::new();
    match format {
        DatasetFormat::Alpaca => {
            let instruction = non_empty(string(record, "instruction", "instruction")?, "instruction")?;
            let input = optional_string(record, "input")?;
            let output = non_empty(string(record, "output", "output")?, "output")?;
            if let Some(system) = optional_string(record, "system")?.filter(|s| !s.is_empty()) {
                messages.push(ChatMessage::new("system", system));
            }
            // The same joining as the trainer's parser.
            let mut user = instruction.to_string();
            if let Some(input) = input.filter(|i| !i.is_empty()) {
                user.push_str("\n\n");
                user.push_str(input);
            }
            messages.push(ChatMessage::new("user", user));
            messages.push(ChatMessage::new("assistant", output));
        }
        DatasetFormat::ShareGpt => {
            let turns = list(record, "conversations")?;
            for (i, turn) in turns.iter().enumerate() {
                let at = format!("conversations[{i}]");
                if !turn.is_object() {
                    return Err(RecordError::field(at, format!("must be an object, found {}", kind(turn))));
                }
                let from = string(turn, "from", &format!("{at}.from"))?;
                let role = match from {
                    "human" | "user" => "user",
                    "gpt" | "assistant" | "model" => "assistant",
                    "system" => "system",
                    other => {
                        return Err(RecordError::field(
                            format!("{at}.from"),
                            format!("unknown speaker {other:?} (human, gpt or system)"),
                        ));
                    }
                };
                let value = string(turn, "value", &format!("{at}.value"))?;
                messages.push(ChatMessage::new(role, value));
            }
        }
        DatasetFormat::Messages => {
            let list = list(record, "messages")?;
            for (i, m) in list.iter().enumerate() {
                let at = format!("messages[{i}]");
                if !m.is_object() {
                    return Err(RecordError::field(at, format!("must be an object, found {}", kind(m))));
                }
                let role = string(m, "role", &format!("{at}.role"))?;
                if !ROLES.contains(&role) {
                    return Err(RecordError::field(
                        format!("{at}.role"),
                        format!("unknown role {role:?} (system, user or assistant)"),
                    ));
                }
                let content = string(m, "content", &format!("{at}.content"))?;
                messages.push(ChatMessage::new(role, content));
            }
        }
    }
    check_conversation(&messages, format)?;
    Ok((format, TrainingExample { messages }))
}

fn list<'a>(record: &'a Value, key: &str) -> std::result::Result<&'a Vec<Value>, RecordError> {
    match record.get(key) {
        None => Err(RecordError::field(key, "is missing")),
        Some(Value::Array(items)) if items.is_empty() => Err(RecordError::field(key, "must not be empty")),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(RecordError::field(key, format!("must be a list, found {}", kind(other)))),
    }
}

/// Rules on the conversation as a whole, whatever its source format.
fn check_conversation(messages: &[ChatMessage], format: DatasetFormat) -> std::result::Result<(), RecordError> {
    let list = match format {
        DatasetFormat::Alpaca => "output",
        DatasetFormat::ShareGpt => "conversations",
        DatasetFormat::Messages => "messages",
    };
    if !messages.iter().any(|m| m.role == "assistant" && !m.content.trim().is_empty()) {
        return Err(RecordError::field(list, "has no non-empty assistant reply to learn from"));
    }
    Ok(())
}

/// The record in `messages` form: one JSON Lines line of the normalized training file.
pub fn normalized_record(example: &TrainingExample) -> Value {
    json!({ "messages": example.messages })
}

/// Counts the tokens of conversations as the trainer would feed them (chat template, BOS),
/// loading only the tokenizer and template from a GGUF file, never its weights.
#[derive(Debug)]
pub struct TokenCounter {
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
}

impl TokenCounter {
    pub fn from_gguf_file(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
        let content = Content::read(&mut BufReader::new(file)).map_err(|e| {
            EngineError::Metadata(format!("{}: not a readable GGUF file: {e}", path.display()))
        })?;
        let tokenizer = Tokenizer::from_gguf(&content)?;
        let token_text = |id: Option<u32>| id.and_then(|id| tokenizer.token_text(id)).unwrap_or_default().to_string();
        let template = match content.metadata.get("tokenizer.chat_template") {
            Some(v) => {
                let source = v
                    .to_string()
                    .map_err(|_| EngineError::Metadata("tokenizer.chat_template is not a string".into()))?;
                Some(ChatTemplate::new(source, &token_text(tokenizer.bos_token_id), &token_text(tokenizer.eos_token_id))?)
            }
            None => None,
        };
        Ok(Self { tokenizer, template })
    }

    /// Tokens of the whole conversation, before any `max_seq_len` truncation. Without a chat
    /// template (the trainer refuses such a model) the contents are counted one after another.
    pub fn count(&self, example: &TrainingExample) -> Result<usize> {
        match &self.template {
            Some(template) => Ok(tokenize_example(&self.tokenizer, template, example, usize::MAX)?.ids.len()),
            None => Ok(example.messages.iter().map(|m| self.tokenizer.encode(&m.content, false).len()).sum()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::parse_record;

    fn ok(record: Value, format: Option<DatasetFormat>) -> TrainingExample {
        let (_, example) = check_record(&record, format).unwrap_or_else(|e| panic!("{record}: {e}"));
        // Whatever passes here passes the trainer, as given and as normalized.
        parse_record(&record, 0).unwrap_or_else(|e| panic!("trainer rejects {record}: {e}"));
        let normalized = parse_record(&normalized_record(&example), 0).expect("trainer reads the normalized form");
        assert_eq!(normalized, example);
        example
    }

    fn err(record: Value, format: Option<DatasetFormat>) -> RecordError {
        check_record(&record, format).expect_err(&record.to_string())
    }

    #[test]
    fn accepts_every_format() {
        let e = ok(json!({"instruction": "Add", "input": "1+1", "output": "2", "system": "Be brief"}), None);
        assert_eq!(e.messages.len(), 3);
        assert_eq!(e.messages[1].content, "Add\n\n1+1");
        ok(json!({"instruction": "你好", "output": "你好！"}), Some(DatasetFormat::Alpaca));
        let e = ok(json!({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}), None);
        assert_eq!(e.messages[1].role, "assistant");
        ok(json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}), None);
    }

    #[test]
    fn names_the_field_and_the_reason() {
        let e = err(json!({"instruction": "x"}), None);
        assert_eq!(e.field, None, "no format recognised: {e}");
        let e = err(json!({"instruction": "x"}), Some(DatasetFormat::Alpaca));
        assert_eq!((e.field.as_deref(), e.reason.as_str()), (Some("output"), "is missing"));
        let e = err(json!({"instruction": "x", "output": 3}), None);
        assert_eq!(e.field.as_deref(), Some("output"));
        assert!(e.reason.contains("found a number"), "{e}");
        let e = err(json!({"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}), None);
        assert_eq!(e.field.as_deref(), Some("messages[1].role"));
        let e = err(json!({"messages": [{"role": "user", "content": "q"}]}), None);
        assert!(e.reason.contains("assistant"), "{e}");
        let e = err(json!({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt"}]}), None);
        assert_eq!(e.field.as_deref(), Some("conversations[1].value"));
        let e = err(json!(["not", "an", "object"]), None);
        assert!(e.reason.contains("object"), "{e}");
        let e = err(json!({"messages": "hi"}), None);
        assert_eq!(e.field.as_deref(), Some("messages"));
    }

    #[test]
    fn a_chosen_format_wins_over_detection() {
        let e = err(json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}), Some(DatasetFormat::Alpaca));
        assert_eq!(e.field.as_deref(), Some("instruction"));
    }
}
