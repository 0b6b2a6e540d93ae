//! Field checks shared by every resource: one answer names every bad field at once, and the
//! common text rules read the same everywhere.
use crate::error::{ApiError, FieldErrors};

/// Collects per-field results so one answer names every bad field at once.
#[derive(Default)]
pub struct Checks(FieldErrors);

impl Checks {
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(why) => {
                self.0.insert(field.to_owned(), why);
                None
            }
        }
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() { Ok(()) } else { Err(ApiError::Validation(self.0)) }
    }
}

/// Trimmed, non-empty, at most `max` characters: names and titles.
pub fn required_text(raw: &str, max: usize) -> Result<String, String> {
    match raw.trim() {
        "" => Err("must not be empty".into()),
        t if t.chars().count() > max => Err(format!("must be at most {max} characters")),
        t => Ok(t.to_owned()),
    }
}

/// Trimmed, at most `max` characters; empty means none: descriptions.
pub fn optional_text(raw: &str, max: usize) -> Result<Option<String>, String> {
    match raw.trim() {
        "" => Ok(None),
        t if t.chars().count() > max => Err(format!("must be at most {max} characters")),
        t => Ok(Some(t.to_owned())),
    }
}

/// Longest description any resource keeps.
pub const DESCRIPTION_MAX: usize = 2000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rules_trim_and_count_characters_not_bytes() {
        assert_eq!(required_text("  名字 ", 2).unwrap(), "名字");
        assert_eq!(required_text("名字长", 2).unwrap_err(), "must be at most 2 characters");
        assert_eq!(required_text("   ", 2).unwrap_err(), "must not be empty");
        assert_eq!(optional_text("  ", 5).unwrap(), None);
        assert_eq!(optional_text(" a ", 5).unwrap(), Some("a".into()));
        assert!(optional_text("abcdef", 5).is_err());
    }
}
