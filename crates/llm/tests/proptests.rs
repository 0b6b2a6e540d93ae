//! Parsers give the same result for every way the same bytes can be chunked.

use llm::ThinkSplitter;
use llm::ndjson::LineSplitter;
use llm::sse::{SseEvent, SseParser};
use proptest::prelude::*;

/// Cuts `len` units at the given (wrapped) positions.
fn cut_points(len: usize, raw: &[usize]) -> Vec<usize> {
    let mut cuts: Vec<usize> = raw.iter().map(|c| c % (len + 1)).collect();
    cuts.push(0);
    cuts.push(len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

fn split_think(text: &str, raw_cuts: &[usize]) -> (String, String) {
    let boundaries: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let cuts = cut_points(boundaries.len() - 1, raw_cuts);
    let mut splitter = ThinkSplitter::new();
    let (mut reasoning, mut answer) = (String::new(), String::new());
    for pair in cuts.windows(2) {
        let split = splitter.push(&text[boundaries[pair[0]]..boundaries[pair[1]]]);
        reasoning += &split.reasoning;
        answer += &split.answer;
    }
    let split = splitter.finish();
    (reasoning + &split.reasoning, answer + &split.answer)
}

/// The rule, stated on the whole text at once.
fn expected_think(text: &str) -> (String, String) {
    match text.trim_start().strip_prefix("<think>") {
        Some(rest) => match rest.find("</think>") {
            Some(end) => (
                rest[..end].to_owned(),
                rest[end + 8..].trim_start().to_owned(),
            ),
            None => (rest.to_owned(), String::new()),
        },
        None => (String::new(), text.to_owned()),
    }
}

fn think_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("<think>"),
        Just("</think>"),
        Just("<"),
        Just("</"),
        Just("<thi"),
        Just("</thin"),
        Just("k>"),
        Just(">"),
        Just(" "),
        Just("\n"),
        Just("a"),
        Just("é"),
        Just("日本"),
        Just("think"),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

fn sse_events() -> impl Strategy<Value = Vec<(Option<String>, Vec<String>)>> {
    let event = (
        proptest::option::of("[a-z_]{1,12}"),
        proptest::collection::vec("[^\r\n]{0,16}", 1..4),
    );
    proptest::collection::vec(event, 0..6)
}

fn parse_sse(bytes: &[u8], raw_cuts: &[usize]) -> Vec<SseEvent> {
    let cuts = cut_points(bytes.len(), raw_cuts);
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for pair in cuts.windows(2) {
        events.extend(parser.feed(&bytes[pair[0]..pair[1]]).unwrap());
    }
    events.extend(parser.finish().unwrap());
    events
}

proptest! {
    #[test]
    fn think_splitter_is_chunking_independent(
        text in think_text(),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        prop_assert_eq!(split_think(&text, &cuts), expected_think(&text));
    }

    #[test]
    fn think_splitter_one_char_at_a_time(text in think_text()) {
        let every: Vec<usize> = (0..=text.chars().count()).collect();
        prop_assert_eq!(split_think(&text, &every), expected_think(&text));
    }

    #[test]
    fn sse_parser_is_chunking_independent(
        events in sse_events(),
        line_end in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
        comments in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let mut wire = String::new();
        for (name, lines) in &events {
            if comments {
                wire += &format!(": keep-alive{line_end}");
            }
            if let Some(name) = name {
                wire += &format!("event: {name}{line_end}");
            }
            for line in lines {
                wire += &format!("data: {line}{line_end}");
            }
            wire += line_end;
        }
        let expected: Vec<SseEvent> = events
            .iter()
            .map(|(name, lines)| SseEvent { event: name.clone(), data: lines.join("\n") })
            .collect();
        prop_assert_eq!(parse_sse(wire.as_bytes(), &cuts), expected);
    }

    #[test]
    fn ndjson_splitter_is_chunking_independent(
        lines in proptest::collection::vec("[a-z0-9{}\":, é]{0,20}[a-z0-9{}]", 0..8),
        crlf in any::<bool>(),
        trailing_newline in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let end = if crlf { "\r\n" } else { "\n" };
        let mut wire = lines.join(&format!("{end}{end}"));
        if trailing_newline {
            wire += end;
        }
        let bytes = wire.as_bytes();
        let cuts = cut_points(bytes.len(), &cuts);
        let mut splitter = LineSplitter::new();
        let mut seen = Vec::new();
        for pair in cuts.windows(2) {
            seen.extend(splitter.feed(&bytes[pair[0]..pair[1]]).unwrap());
        }
        seen.extend(splitter.finish().unwrap());
        prop_assert_eq!(seen, lines);
    }
}
