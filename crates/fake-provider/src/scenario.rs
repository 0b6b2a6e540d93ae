use std::time::Duration;

/// A complete answer. `content` goes through the provider's content field as is, so a leading
/// `<think>` block in it tests inline reasoning; `reasoning` uses the native reasoning field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub reasoning: Option<String>,
    pub content: String,
    /// Text is sent in pieces of this many characters, to exercise reassembly.
    pub chunk_chars: usize,
    /// Ends with the provider's "length" reason instead of a normal stop.
    pub truncated: bool,
    /// (prompt, completion) tokens reported at the end.
    pub usage: (u32, u32),
}

impl Default for Reply {
    fn default() -> Self {
        Reply {
            reasoning: None,
            content: "Hello from the fake provider.".to_owned(),
            chunk_chars: 4,
            truncated: false,
            usage: (12, 7),
        }
    }
}

impl Reply {
    pub fn text(content: impl Into<String>) -> Self {
        Reply {
            content: content.into(),
            ..Reply::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    Reply(Reply),
    /// Nothing for `delay` after the request (response headers included), then the reply.
    SlowFirstByte {
        delay: Duration,
        reply: Reply,
    },
    /// `chunks` pieces of text, then silence with the connection held open.
    Stall {
        chunks: usize,
    },
    /// `chunks` pieces of text, then the connection is dropped without the stream's end.
    Cut {
        chunks: usize,
    },
    /// An HTTP error status with the provider's JSON error body (429 carries `Retry-After`).
    Status {
        code: u16,
        message: String,
    },
    /// One piece of text, then a frame that is not the wire format.
    Garbage,
    /// A complete non-streaming JSON answer, as from a server that ignores `stream: true`.
    NotAStream,
    /// `tokens` one-token chunks, as fast as the connection takes them.
    Bench {
        tokens: usize,
    },
    /// A token every `interval` until the client goes away: for cancellation tests.
    Endless {
        interval: Duration,
    },
    /// `tokens` one-token chunks, one every `interval`: a model's pace, for latency under load.
    Paced {
        tokens: usize,
        interval: Duration,
    },
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario::Reply(Reply::default())
    }
}

impl Scenario {
    /// Model names that pick a scenario, so one running fake serves every mode at once:
    /// `normal`, `think`, `reasoning`, `truncated`, `slow` / `slow-<ms>`, `stall`, `cut`,
    /// `garbage`, `plain`, `status-<code>`, `bench-<tokens>`, `endless` / `endless-<ms>`,
    /// `paced-<tokens>-<ms>`. A `fake-` prefix is allowed.
    pub fn from_model(model: &str) -> Option<Scenario> {
        let name = model.strip_prefix("fake-").unwrap_or(model);
        let (head, arg) = match name.split_once('-') {
            Some((head, arg)) => (head, Some(arg)),
            None => (name, None),
        };
        let number = |default: u64| arg.map_or(Some(default), |a| a.parse::<u64>().ok());
        Some(match head {
            "normal" => Scenario::Reply(Reply::default()),
            "think" => Scenario::Reply(Reply::text(
                "<think>The user greets me; greet back.</think>\n\nHello! <think> is just a tag.",
            )),
            "reasoning" => Scenario::Reply(Reply {
                reasoning: Some("Native reasoning, step by step.".to_owned()),
                ..Reply::default()
            }),
            "truncated" => Scenario::Reply(Reply {
                truncated: true,
                ..Reply::default()
            }),
            "slow" => Scenario::SlowFirstByte {
                delay: Duration::from_millis(number(2000)?),
                reply: Reply::default(),
            },
            "stall" => Scenario::Stall { chunks: 2 },
            "cut" => Scenario::Cut { chunks: 2 },
            "garbage" => Scenario::Garbage,
            "plain" => Scenario::NotAStream,
            "status" => {
                let code = u16::try_from(number(500)?).ok()?;
                Scenario::Status {
                    code,
                    message: default_status_message(code).to_owned(),
                }
            }
            "bench" => Scenario::Bench {
                tokens: usize::try_from(number(1000)?).ok()?,
            },
            "paced" => {
                let (tokens, ms) = arg?.split_once('-')?;
                Scenario::Paced {
                    tokens: tokens.parse().ok()?,
                    interval: Duration::from_millis(ms.parse().ok()?),
                }
            }
            "endless" => Scenario::Endless {
                interval: Duration::from_millis(number(5)?),
            },
            _ => return None,
        })
    }
}

pub(crate) fn default_status_message(code: u16) -> &'static str {
    match code {
        401 => "Incorrect API key provided.",
        429 => "Rate limit reached, retry later.",
        _ => "The server had an error while processing your request.",
    }
}
