//! Reading an uploaded file into training conversations, or into a list of problems that each
//! name the record (`line 57` in JSON Lines, `row 3` in CSV, `index 4` in a JSON array), the
//! field and the reason. Record rules are the engine's ([`engine::check_record`]), so whatever
//! passes here the trainer accepts.
use engine::{DatasetFormat, TrainingExample, dataset::RecordError};
use serde_json::{Map, Value};

/// At most this many problems are reported; the count says how many there were in all.
pub const MAX_PROBLEMS: usize = 50;

/// How the file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A JSON array of records.
    Json,
    /// One JSON record per line.
    JsonLines,
    Csv,
}

impl FileKind {
    /// From the client's file name; `None` when it says nothing useful.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "json" => Some(Self::Json),
            "jsonl" | "ndjson" => Some(Self::JsonLines),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }

    /// The extension the stored copy gets.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::JsonLines => "jsonl",
            Self::Csv => "csv",
        }
    }

    pub fn from_extension(ext: &str) -> Option<Self> {
        Self::from_file_name(&format!("x.{ext}"))
    }
}

/// One thing wrong with the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `file`, `line N`, `row N` or `index N`.
    pub record: String,
    pub field: Option<String>,
    pub reason: String,
}

impl Problem {
    fn new(record: impl Into<String>, error: RecordError) -> Self {
        Self { record: record.into(), field: error.field, reason: error.reason }
    }

    fn whole(record: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { record: record.into(), field: None, reason: reason.into() }
    }

    /// The key in the 422 envelope's `fields`: `line 57: output`, or `line 57` alone.
    pub fn key(&self) -> String {
        match &self.field {
            Some(field) => format!("{}: {field}", self.record),
            None => self.record.clone(),
        }
    }
}

/// Everything wrong with a file: the first [`MAX_PROBLEMS`] and how many there were.
#[derive(Debug, Default)]
pub struct Problems {
    pub shown: Vec<Problem>,
    pub total: usize,
}

impl Problems {
    fn push(&mut self, problem: Problem) {
        self.total += 1;
        if self.shown.len() < MAX_PROBLEMS {
            self.shown.push(problem);
        }
    }

    fn one(problem: Problem) -> Self {
        Self { shown: vec![problem], total: 1 }
    }
}

#[derive(Debug)]
pub struct Parsed {
    pub format: DatasetFormat,
    pub examples: Vec<TrainingExample>,
}

/// Checks records one by one against the chosen format, or the format of the first record that
/// has one.
struct Checker {
    format: Option<DatasetFormat>,
    examples: Vec<TrainingExample>,
    problems: Problems,
}

impl Checker {
    fn new(format: Option<DatasetFormat>) -> Self {
        Self { format, examples: Vec::new(), problems: Problems::default() }
    }

    fn record(&mut self, at: impl FnOnce() -> String, record: &Value) {
        match engine::check_record(record, self.format) {
            Ok((format, example)) => {
                self.format.get_or_insert(format);
                self.examples.push(example);
            }
            Err(e) => self.problems.push(Problem::new(at(), e)),
        }
    }

    fn finish(self) -> Result<Parsed, Problems> {
        if self.problems.total > 0 {
            return Err(self.problems);
        }
        match self.format {
            Some(format) if !self.examples.is_empty() => Ok(Parsed { format, examples: self.examples }),
            _ => Err(Problems::one(Problem::whole("file", "has no records"))),
        }
    }
}

/// 1-based line of byte offset `at`.
fn line_of(bytes: &[u8], at: usize) -> usize {
    bytes[..at.min(bytes.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Parses a whole file. `kind` is a hint from the file name: a `.json` file holding one object
/// per line is read as JSON Lines, and a file without a known extension is sniffed.
pub fn parse(bytes: &[u8], kind: Option<FileKind>, format: Option<DatasetFormat>) -> Result<(FileKind, Parsed), Problems> {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let line = line_of(bytes, e.valid_up_to());
            return Err(Problems::one(Problem::whole(
                format!("line {line}"),
                "is not valid UTF-8 text (save the file as UTF-8)",
            )));
        }
    };
    let first = text.trim_start().chars().next();
    let Some(first) = first else {
        return Err(Problems::one(Problem::whole("file", "is empty")));
    };
    let kind = match kind {
        Some(FileKind::Json) if first == '{' => FileKind::JsonLines,
        Some(kind) => kind,
        None if first == '[' => FileKind::Json,
        None => FileKind::JsonLines,
    };
    let parsed = match kind {
        FileKind::Json => parse_json_array(text, format),
        FileKind::JsonLines => parse_json_lines(text, format),
        FileKind::Csv => parse_csv(text, format),
    }?;
    Ok((kind, parsed))
}

fn without_position(message: String) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    }
}

fn parse_json_lines(text: &str, format: Option<DatasetFormat>) -> Result<Parsed, Problems> {
    let mut checker = Checker::new(format);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("line {}", i + 1);
        match serde_json::from_str::<Value>(line) {
            Ok(record) => checker.record(at, &record),
            Err(e) => {
                let reason = format!("is not valid JSON: {} (column {})", without_position(e.to_string()), e.column());
                checker.problems.push(Problem::whole(at(), reason));
            }
        }
    }
    checker.finish()
}

fn parse_json_array(text: &str, format: Option<DatasetFormat>) -> Result<Parsed, Problems> {
    let records: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(records)) => records,
        Ok(other) => {
            let found = if other.is_object() { "an object" } else { "a single value" };
            return Err(Problems::one(Problem::whole(
                "file",
                format!("must hold a JSON array of records (or one JSON record per line), found {found}"),
            )));
        }
        Err(e) => {
            let reason = format!("is not valid JSON: {} (column {})", without_position(e.to_string()), e.column());
            return Err(Problems::one(Problem::whole(format!("line {}", e.line()), reason)));
        }
    };
    let mut checker = Checker::new(format);
    for (i, record) in records.iter().enumerate() {
        checker.record(|| format!("index {i}"), record);
    }
    checker.finish()
}

/// Column layouts a CSV file may have (header names, case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CsvLayout {
    /// instruction, output, and optionally input and system: one record per row.
    Alpaca,
    /// role, content (or from, value): one message per row, grouped into conversations by a
    /// `conversation_id` column, or else each system/user…assistant exchange is one record.
    Rows(DatasetFormat),
}

const CONVERSATION_COLUMNS: [&str; 3] = ["conversation_id", "conversation", "id"];

fn parse_csv(text: &str, format: Option<DatasetFormat>) -> Result<Parsed, Problems> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(text.as_bytes());
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(|c| c.trim().to_lowercase()).collect(),
        Err(e) => return Err(Problems::one(Problem::whole("row 1", csv_reason(&e)))),
    };
    let col = |name: &str| headers.iter().position(|h| h == name);
    let layout = if col("instruction").is_some() && col("output").is_some() {
        Some(CsvLayout::Alpaca)
    } else if col("role").is_some() && col("content").is_some() {
        Some(CsvLayout::Rows(DatasetFormat::Messages))
    } else if col("from").is_some() && col("value").is_some() {
        Some(CsvLayout::Rows(DatasetFormat::ShareGpt))
    } else {
        None
    };
    let fits = match (layout, format) {
        (Some(CsvLayout::Alpaca), Some(DatasetFormat::Alpaca) | None) => true,
        (Some(CsvLayout::Rows(have)), Some(want)) => have == want,
        (Some(CsvLayout::Rows(_)), None) => true,
        _ => false,
    };
    let Some(layout) = layout.filter(|_| fits) else {
        let wanted = match format {
            Some(DatasetFormat::Alpaca) => "instruction, output and optionally input, system",
            Some(DatasetFormat::Messages) => "role, content and optionally conversation_id",
            Some(DatasetFormat::ShareGpt) => "from, value and optionally conversation_id",
            None => "instruction, input, output[, system] (alpaca), role, content (messages) or from, value (sharegpt)",
        };
        return Err(Problems::one(Problem {
            record: "row 1".into(),
            field: Some("header".into()),
            reason: format!("the columns must be {wanted}; found {}", headers.join(", ")),
        }));
    };

    let mut checker = Checker::new(Some(match layout {
        CsvLayout::Alpaca => DatasetFormat::Alpaca,
        CsvLayout::Rows(f) => f,
    }));
    // Conversations being assembled from rows: (row numbers, messages).
    let mut group: Option<(Vec<usize>, Vec<Value>, Option<String>)> = None;
    let (speaker, words, list) = match layout {
        CsvLayout::Rows(DatasetFormat::ShareGpt) => ("from", "value", "conversations"),
        _ => ("role", "content", "messages"),
    };
    let flush = |checker: &mut Checker, group: Option<(Vec<usize>, Vec<Value>, Option<String>)>| {
        let Some((rows, messages, _)) = group else { return };
        let record = Value::Object(Map::from_iter([(list.to_owned(), Value::Array(messages))]));
        match engine::check_record(&record, checker.format) {
            Ok((_, example)) => checker.examples.push(example),
            Err(e) => checker.problems.push(row_problem(&rows, list, e)),
        }
    };
    let conversation_col = CONVERSATION_COLUMNS.iter().find_map(|c| col(c));
    for (i, row) in reader.records().enumerate() {
        // Spreadsheet numbering: the header is row 1.
        let number = i + 2;
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                checker.problems.push(Problem::whole(format!("row {number}"), csv_reason(&e)));
                continue;
            }
        };
        let cell = |name: &str| col(name).and_then(|c| row.get(c)).unwrap_or("");
        match layout {
            CsvLayout::Alpaca => {
                let mut record = Map::new();
                for name in ["instruction", "input", "output", "system"] {
                    if col(name).is_some() && !(matches!(name, "input" | "system") && cell(name).is_empty()) {
                        record.insert(name.to_owned(), Value::String(cell(name).to_owned()));
                    }
                }
                checker.record(|| format!("row {number}"), &Value::Object(record));
            }
            CsvLayout::Rows(_) => {
                if row.iter().all(|c| c.trim().is_empty()) {
                    continue;
                }
                let role = cell(speaker).trim().to_owned();
                let id = conversation_col.map(|c| row.get(c).unwrap_or("").to_owned());
                let starts_new = match (&group, &id) {
                    (None, _) => true,
                    (Some((_, _, current)), Some(id)) => current.as_ref() != Some(id),
                    (Some((_, messages, _)), None) => {
                        let last = messages.last().and_then(|m| m[speaker].as_str()).unwrap_or("");
                        let is_reply = matches!(last, "assistant" | "gpt" | "model");
                        role == "system" || (is_reply && !matches!(role.as_str(), "assistant" | "gpt" | "model"))
                    }
                };
                if starts_new {
                    flush(&mut checker, group.take());
                    group = Some((Vec::new(), Vec::new(), id));
                }
                let (rows, messages, _) = group.as_mut().expect("a group is open");
                rows.push(number);
                messages.push(Value::Object(Map::from_iter([
                    (speaker.to_owned(), Value::String(role)),
                    (words.to_owned(), Value::String(cell(words).to_owned())),
                ])));
            }
        }
    }
    flush(&mut checker, group.take());
    checker.finish()
}

/// A conversation's error pointed at the row of the message it concerns: `messages[2].role`
/// becomes row `rows[2]`, field `role`.
fn row_problem(rows: &[usize], list: &str, e: RecordError) -> Problem {
    let first = format!("row {}", rows[0]);
    let Some(field) = e.field.as_deref() else { return Problem::new(first, e) };
    let indexed = field.strip_prefix(list).and_then(|rest| rest.strip_prefix('[')).and_then(|rest| rest.split_once(']'));
    match indexed.and_then(|(i, rest)| Some((rows.get(i.parse::<usize>().ok()?)?, rest))) {
        Some((row, rest)) => Problem {
            record: format!("row {row}"),
            field: rest.strip_prefix('.').map(str::to_owned),
            reason: e.reason,
        },
        None => Problem { record: first, field: None, reason: format!("the conversation starting here {}", e.reason) },
    }
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("has {len} cells where the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8 text".into(),
        _ => format!("cannot be read as CSV: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str, kind: Option<FileKind>, format: Option<DatasetFormat>) -> Vec<(String, String)> {
        match parse(text.as_bytes(), kind, format) {
            Ok((_, parsed)) => panic!("expected problems, parsed {} records", parsed.examples.len()),
            Err(p) => p.shown.iter().map(|p| (p.key(), p.reason.clone())).collect(),
        }
    }

    fn records(text: &str, kind: Option<FileKind>) -> Parsed {
        parse(text.as_bytes(), kind, None).unwrap_or_else(|p| panic!("{:?}", p.shown)).1
    }

    #[test]
    fn json_lines_name_the_line() {
        let mut text = String::new();
        for i in 1..=60 {
            if i == 57 {
                text.push_str("{\"instruction\": \"q\", \"output\": }\n");
            } else {
                text.push_str(&format!("{{\"instruction\": \"q{i}\", \"output\": \"a\"}}\n"));
            }
        }
        let p = problems(&text, Some(FileKind::JsonLines), None);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, "line 57");
        assert!(p[0].1.contains("not valid JSON"), "{p:?}");
    }

    #[test]
    fn csv_with_quoted_newlines_bom_and_chinese() {
        let text = "\u{feff}instruction,input,output\n\"第一行\n第二行\",,\"回答，带逗号\"\nhi,,\"say \"\"hello\"\"\"\n";
        let parsed = records(text, Some(FileKind::Csv));
        assert_eq!(parsed.format, DatasetFormat::Alpaca);
        assert_eq!(parsed.examples.len(), 2);
        assert_eq!(parsed.examples[0].messages[0].content, "第一行\n第二行");
        assert_eq!(parsed.examples[1].messages[1].content, "say \"hello\"");
    }

    #[test]
    fn csv_message_rows_group_into_conversations() {
        let text = "conversation_id,role,content\n1,user,a\n1,assistant,b\n1,user,c\n1,assistant,d\n2,user,e\n2,assistant,f\n";
        let parsed = records(text, Some(FileKind::Csv));
        assert_eq!(parsed.examples.len(), 2);
        assert_eq!(parsed.examples[0].messages.len(), 4);
        let text = "role,content\nsystem,s\nuser,a\nassistant,b\nuser,c\nassistant,d\n";
        assert_eq!(records(text, Some(FileKind::Csv)).examples.len(), 2);
        let p = problems("role,content\nuser,a\nbot,b\n", Some(FileKind::Csv), None);
        assert_eq!(p[0].0, "row 3: role", "{p:?}");
    }

    #[test]
    fn csv_problems_name_the_row() {
        let p = problems("instruction,output\nq,a\nq\n", Some(FileKind::Csv), None);
        assert_eq!(p[0].0, "row 3");
        let p = problems("instruction,output\nq,a\nq,\n", Some(FileKind::Csv), None);
        assert_eq!(p[0], ("row 3: output".into(), "must not be empty".into()));
        let p = problems("question,answer\nq,a\n", Some(FileKind::Csv), None);
        assert_eq!(p[0].0, "row 1: header");
    }

    #[test]
    fn json_arrays_name_the_index() {
        let p = problems(r#"[{"instruction": "q", "output": "a"}, {"instruction": "q", "output": 5}]"#, None, None);
        assert_eq!(p[0].0, "index 1: output");
        assert!(p[0].1.contains("must be a string"));
        let p = problems("[\n{\"instruction\": \"q\",\n \"output\": \"a\"},\n{oops}\n]", Some(FileKind::Json), None);
        assert_eq!(p[0].0, "line 4");
    }

    #[test]
    fn empty_files_and_other_encodings_are_refused() {
        assert_eq!(problems("", None, None)[0].0, "file");
        assert_eq!(problems("\u{feff}  \n", None, None)[0].0, "file");
        assert_eq!(problems("[]", None, None)[0], ("file".into(), "has no records".into()));
        let latin1 = b"{\"instruction\": \"caf\xe9\", \"output\": \"x\"}\n";
        let p = parse(latin1, None, None).unwrap_err();
        assert_eq!(p.shown[0].record, "line 1");
    }

    #[test]
    fn a_json_file_with_one_record_per_line_is_json_lines() {
        let (kind, parsed) =
            parse(b"{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}\n", Some(FileKind::Json), None)
                .unwrap();
        assert_eq!(kind, FileKind::JsonLines);
        assert_eq!(parsed.format, DatasetFormat::Messages);
    }

    #[test]
    fn the_first_record_sets_the_format_for_the_rest() {
        let text = "{\"instruction\": \"q\", \"output\": \"a\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}\n";
        let p = problems(text, None, None);
        assert_eq!(p[0].0, "line 2: instruction");
    }

    use proptest::prelude::*;

    proptest! {
        /// Any alpaca records, whatever their text (quotes, commas, newlines, BOM-like and CJK
        /// characters), read back the same from JSON Lines, a JSON array and CSV.
        #[test]
        fn every_layout_reads_the_same_records(
            records in proptest::collection::vec(
                ("[^\u{0}]{1,40}", "[^\u{0}]{0,20}", "[^\u{0}]{1,40}")
                    .prop_filter("non-blank", |(i, _, o)| !i.trim().is_empty() && !o.trim().is_empty()),
                1..8,
            )
        ) {
            let values: Vec<Value> = records
                .iter()
                .map(|(i, x, o)| serde_json::json!({"instruction": i, "input": x, "output": o}))
                .collect();
            let want: Vec<TrainingExample> =
                values.iter().map(|v| engine::check_record(v, None).unwrap().1).collect();

            let lines: String = values.iter().map(|v| format!("{v}\n")).collect();
            let array = serde_json::to_string_pretty(&values).unwrap();
            let mut csv_out = csv::Writer::from_writer(Vec::new());
            csv_out.write_record(["instruction", "input", "output"]).unwrap();
            for (i, x, o) in &records {
                csv_out.write_record([i, x, o]).unwrap();
            }
            let csv_bytes = csv_out.into_inner().unwrap();

            for (kind, bytes) in [
                (FileKind::JsonLines, lines.into_bytes()),
                (FileKind::Json, array.into_bytes()),
                (FileKind::Csv, csv_bytes),
            ] {
                let (_, parsed) = parse(&bytes, Some(kind), None).map_err(|p| TestCaseError::fail(format!("{kind:?}: {:?}", p.shown)))?;
                prop_assert_eq!(parsed.format, DatasetFormat::Alpaca);
                prop_assert_eq!(&parsed.examples, &want, "{:?}", kind);
            }
        }
    }

    #[test]
    fn problems_are_capped_but_counted() {
        let text = "{\"x\": 1}\n".repeat(80);
        let p = parse(text.as_bytes(), None, None).unwrap_err();
        assert_eq!((p.shown.len(), p.total), (MAX_PROBLEMS, 80));
    }
}
