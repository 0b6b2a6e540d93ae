//! Byte-level BPE tokenizer built from a GGUF's embedded vocabulary, reproducing llama.cpp's
//! `gpt2`-model tokenization (special-token partition, pre-tokenizer regexes, ranked merges).

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Content;
use fancy_regex::Regex;

use crate::config::Metadata;
use crate::error::{EngineError, Result};

/// GGUF `tokenizer.ggml.token_type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenKind {
    fn from_gguf(v: i64) -> Self {
        match v {
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Normal,
        }
    }
}

/// GPT-2's main split rule, with the `\s+` fallback that llama.cpp's hand-written matcher applies.
const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// How text is cut into words before merges; named after llama.cpp's `tokenizer.ggml.pre` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// `gpt2` and relatives: the GPT-2 rule alone.
    Gpt2,
    /// `smollm`, `starcoder`, `refact`, …: every digit stands alone, then the GPT-2 rule.
    DigitsThenGpt2,
}

impl PreTokenizer {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" => Ok(PreTokenizer::DigitsThenGpt2),
            "gpt2" | "default" | "mpt" | "olmo" | "jais" => Ok(PreTokenizer::Gpt2),
            other => Err(EngineError::Unsupported(format!("pre-tokenizer {other}"))),
        }
    }
}

pub struct Tokenizer {
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    token_ids: HashMap<String, u32>,
    /// (left, right) → (rank, merged token).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Tokens matched verbatim before BPE, longest first, as llama.cpp orders them.
    special: Vec<u32>,
    pre: PreTokenizer,
    pattern: Regex,
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// Tokens that end a generation: EOS plus control tokens such as `<|im_end|>`.
    eog_ids: Vec<u32>,
    pub add_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("pre", &self.pre)
            .finish_non_exhaustive()
    }
}

/// GPT-2's reversible map from bytes to printable characters.
fn byte_level_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (b'!' as u32..=b'~' as u32).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        };
    }
    table
}

impl Tokenizer {
    pub fn from_gguf(content: &Content) -> Result<Self> {
        let md = Metadata { map: &content.metadata };
        let model = md.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(EngineError::Unsupported(format!("tokenizer model {model}")));
        }
        let pre = match md.opt("tokenizer.ggml.pre") {
            Some(_) => PreTokenizer::from_name(md.string("tokenizer.ggml.pre")?)?,
            None => PreTokenizer::Gpt2,
        };
        let bad = |k: &str| EngineError::Metadata(format!("{k} has an unexpected type"));
        let tokens: Vec<String> = md
            .get("tokenizer.ggml.tokens")?
            .to_vec()
            .map_err(|_| bad("tokenizer.ggml.tokens"))?
            .iter()
            .map(|v| v.to_string().cloned().map_err(|_| bad("tokenizer.ggml.tokens")))
            .collect::<Result<_>>()?;
        let kinds: Vec<TokenKind> = match md.opt("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|_| bad("tokenizer.ggml.token_type"))?
                .iter()
                .map(|v| v.to_i32().map(|x| TokenKind::from_gguf(x as i64)))
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| bad("tokenizer.ggml.token_type"))?,
            None => vec![TokenKind::Normal; tokens.len()],
        };
        let merges: Vec<String> = md
            .get("tokenizer.ggml.merges")?
            .to_vec()
            .map_err(|_| bad("tokenizer.ggml.merges"))?
            .iter()
            .map(|v| v.to_string().cloned().map_err(|_| bad("tokenizer.ggml.merges")))
            .collect::<Result<_>>()?;
        let mut tok = Self::new(tokens, kinds, &merges, pre)?;
        tok.bos_token_id = md.opt_u32("tokenizer.ggml.bos_token_id")?;
        tok.eos_token_id = md.opt_u32("tokenizer.ggml.eos_token_id")?;
        tok.add_bos = md.opt_bool("tokenizer.ggml.add_bos_token").unwrap_or(false);
        tok.eog_ids = tok.eos_token_id.into_iter().collect();
        // llama.cpp treats these as end-of-generation whatever the EOS id says.
        for text in ["<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end|>", "<end_of_turn>"] {
            if let Some(&id) = tok.token_ids.get(text)
                && !tok.eog_ids.contains(&id) {
                    tok.eog_ids.push(id);
                }
        }
        Ok(tok)
    }

    /// Builds a tokenizer from a vocabulary in byte-level form and `"left right"` merges in
    /// rank order.
    pub fn new(
        tokens: Vec<String>,
        kinds: Vec<TokenKind>,
        merges: &[String],
        pre: PreTokenizer,
    ) -> Result<Self> {
        if kinds.len() != tokens.len() {
            return Err(EngineError::Metadata("token_type and tokens differ in length".into()));
        }
        let token_ids: HashMap<String, u32> =
            tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let mut merge_map = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let Some((l, r)) = m.split_once(' ') else {
                return Err(EngineError::Metadata(format!("malformed merge {m:?}")));
            };
            let (Some(&li), Some(&ri), Some(&mi)) =
                (token_ids.get(l), token_ids.get(r), token_ids.get(&format!("{l}{r}")))
            else {
                continue;
            };
            merge_map.entry((li, ri)).or_insert((rank as u32, mi));
        }
        let mut special: Vec<u32> = (0..tokens.len() as u32)
            .filter(|&i| {
                matches!(
                    kinds[i as usize],
                    TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown
                ) && !tokens[i as usize].is_empty()
            })
            .collect();
        special.sort_by_key(|&i| std::cmp::Reverse(tokens[i as usize].len()));
        let byte_to_char = byte_level_alphabet();
        let char_to_byte = byte_to_char.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        Ok(Self {
            tokens,
            kinds,
            token_ids,
            merges: merge_map,
            special,
            pre,
            pattern: Regex::new(GPT2_PATTERN).expect("static pattern"),
            byte_to_char,
            char_to_byte,
            bos_token_id: None,
            eos_token_id: None,
            eog_ids: Vec::new(),
            add_bos: false,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_ids.get(text).copied()
    }

    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(|s| s.as_str())
    }

    pub fn token_kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.eog_ids.contains(&id)
    }

    pub fn end_of_generation_ids(&self) -> &[u32] {
        &self.eog_ids
    }

    /// Token ids for `text`, without BOS. With `parse_special`, control tokens written in the
    /// text (e.g. `<|im_start|>`) become their ids; without it they are tokenized as text.
    /// User-defined tokens are always matched, as llama.cpp does.
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        for fragment in self.partition_special(text, parse_special) {
            match fragment {
                Fragment::Token(id) => out.push(id),
                Fragment::Text(t) => self.encode_text(t, &mut out),
            }
        }
        out
    }

    fn partition_special<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let mut fragments = vec![Fragment::Text(text)];
        for &id in &self.special {
            let kind = self.kinds[id as usize];
            if !parse_special && matches!(kind, TokenKind::Control | TokenKind::Unknown) {
                continue;
            }
            let needle = self.tokens[id as usize].as_str();
            let mut next = Vec::with_capacity(fragments.len());
            for f in fragments {
                let Fragment::Text(mut rest) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(pos) = rest.find(needle) {
                    if pos > 0 {
                        next.push(Fragment::Text(&rest[..pos]));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[pos + needle.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            fragments = next;
        }
        fragments
    }

    fn pre_split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut words = Vec::new();
        let push_gpt2 = |piece: &'t str, words: &mut Vec<&'t str>| {
            for m in self.pattern.find_iter(piece) {
                match m {
                    Ok(m) => words.push(m.as_str()),
                    // Backtracking limits cannot be hit by this pattern; keep the text whole.
                    Err(_) => words.push(piece),
                }
            }
        };
        match self.pre {
            PreTokenizer::Gpt2 => push_gpt2(text, &mut words),
            PreTokenizer::DigitsThenGpt2 => {
                let mut start = 0;
                for (i, c) in text.char_indices() {
                    if c.is_numeric() {
                        if start < i {
                            push_gpt2(&text[start..i], &mut words);
                        }
                        words.push(&text[i..i + c.len_utf8()]);
                        start = i + c.len_utf8();
                    }
                }
                if start < text.len() {
                    push_gpt2(&text[start..], &mut words);
                }
            }
        }
        words
    }

    fn encode_text(&self, text: &str, out: &mut Vec<u32>) {
        for word in self.pre_split(text) {
            let encoded: String = word.bytes().map(|b| self.byte_to_char[b as usize]).collect();
            self.bpe_word(&encoded, out);
        }
    }

    fn bpe_word(&self, word: &str, out: &mut Vec<u32>) {
        // Symbols are token ids; a character missing from the vocabulary falls back to its bytes.
        let mut symbols: Vec<u32> = Vec::with_capacity(word.len());
        let mut buf = [0u8; 4];
        for c in word.chars() {
            match self.token_ids.get(c.encode_utf8(&mut buf) as &str) {
                Some(&id) => symbols.push(id),
                None => {
                    for b in c.to_string().bytes() {
                        let ch = self.byte_to_char[b as usize];
                        if let Some(&id) = self.token_ids.get(ch.encode_utf8(&mut buf) as &str) {
                            symbols.push(id);
                        }
                    }
                }
            }
        }
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..symbols.len().saturating_sub(1) {
                if let Some(&(rank, merged)) = self.merges.get(&(symbols[i], symbols[i + 1]))
                    && best.is_none_or(|(r, _, _)| rank < r) {
                        best = Some((rank, i, merged));
                    }
            }
            let Some((_, i, merged)) = best else { break };
            symbols[i] = merged;
            symbols.remove(i + 1);
        }
        out.extend(symbols);
    }

    /// Raw bytes a token stands for. Control tokens yield their text only with `special`.
    pub fn token_bytes(&self, id: u32, special: bool) -> Vec<u8> {
        let Some(text) = self.tokens.get(id as usize) else {
            return Vec::new();
        };
        match self.kinds[id as usize] {
            TokenKind::Normal => {
                text.chars().map(|c| self.char_to_byte.get(&c).copied().unwrap_or(b'?')).collect()
            }
            TokenKind::UserDefined => text.as_bytes().to_vec(),
            TokenKind::Control | TokenKind::Unknown if special => text.as_bytes().to_vec(),
            _ => Vec::new(),
        }
    }

    /// Text of a whole sequence; invalid UTF-8 (a token sequence cut mid-character) is replaced.
    pub fn decode(&self, ids: &[u32], special: bool) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_bytes(id, special)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

/// Turns a stream of token ids into text deltas that never split a UTF-8 character: bytes of an
/// incomplete character wait for the next token.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes and returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap());
                    match e.error_len() {
                        // Incomplete trailing character: keep it for later.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Bytes that can never become valid are replaced, as decode() does.
                        Some(len) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + len);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left at the end of the stream, replaced if it is not valid.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stream_never_splits_characters() {
        let text = "héllo 🚀 大模型";
        let bytes = text.as_bytes();
        for chunk in 1..=5 {
            let mut s = Utf8Stream::new();
            let mut out = String::new();
            for c in bytes.chunks(chunk) {
                let delta = s.push(c);
                assert!(text.contains(&delta));
                out.push_str(&delta);
            }
            out.push_str(&s.finish());
            assert_eq!(out, text);
        }
    }

    #[test]
    fn byte_alphabet_is_a_bijection() {
        let t = byte_level_alphabet();
        let set: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
    }
}
