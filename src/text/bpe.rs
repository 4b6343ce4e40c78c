//! CLIP's byte-level BPE tokenizer (as open_clip's `SimpleTokenizer` and Hugging Face's
//! `CLIPTokenizer`): clean the text (a subset of ftfy's fixes: NFC, straight quotes, ligatures,
//! full-width ASCII, control characters; HTML entities unescaped twice), collapse whitespace,
//! lower-case, split with CLIP's pattern, map bytes to printable characters, apply the merges,
//! and frame with `<start_of_text>` … `<end_of_text>` (truncated to the context length with
//! the end token kept last).

use std::collections::HashMap;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

use crate::error::{Error, Result};

pub struct ClipBpe {
    encoder: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    byte_enc: Vec<char>,
    pat: Regex,
    pub sot: u32,
    pub eot: u32,
}

/// GPT-2's reversible byte → printable character map, indexed by byte.
fn bytes_to_unicode() -> Vec<char> {
    let mut out = vec!['\0'; 256];
    for (b, c) in byte_order() {
        out[b as usize] = c;
    }
    out
}

/// `(byte, character)` in the reference's order (printable bytes first), which is also the
/// order of the first 256 vocabulary entries.
fn byte_order() -> Vec<(u8, char)> {
    let mut bs: Vec<u32> = (u32::from('!')..=u32::from('~'))
        .chain(u32::from('¡')..=u32::from('¬'))
        .chain(u32::from('®')..=u32::from('ÿ'))
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.iter()
        .zip(&cs)
        .map(|(&b, &c)| (b as u8, char::from_u32(c).expect("valid")))
        .collect()
}

/// One merge, `"a b"` → `("a", "b")`.
fn merge_pair(line: &str) -> Result<(String, String)> {
    line.split_once(' ')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(|| bad(format!("merge `{line}` is not two symbols")))
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Format {
        format: "CLIP BPE vocabulary",
        reason: reason.into(),
    }
}

const PATTERN: &str =
    r"(?i)<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

impl ClipBpe {
    fn build(encoder: HashMap<String, u32>, merges: Vec<(String, String)>) -> Result<Self> {
        let ranks = merges
            .into_iter()
            .enumerate()
            .map(|(i, p)| (p, i))
            .collect();
        let id = |k: &str| {
            encoder
                .get(k)
                .copied()
                .ok_or_else(|| bad(format!("no `{k}` token")))
        };
        let sot = id("<|startoftext|>").or_else(|_| id("<start_of_text>"))?;
        let eot = id("<|endoftext|>").or_else(|_| id("<end_of_text>"))?;
        Ok(Self {
            encoder,
            ranks,
            byte_enc: bytes_to_unicode(),
            pat: Regex::new(PATTERN).expect("valid pattern"),
            sot,
            eot,
        })
    }

    /// From open_clip's `bpe_simple_vocab_16e6.txt` (gunzipped): the first 48,894 merges
    /// after the header line define the vocabulary of 49,408 tokens.
    pub fn from_open_clip(text: &str) -> Result<Self> {
        let lines: Vec<&str> = text.split('\n').collect();
        let n = 49152 - 256 - 2;
        if lines.len() < n + 1 {
            return Err(bad(format!(
                "{} lines, expected at least {}",
                lines.len(),
                n + 1
            )));
        }
        let merges: Vec<(String, String)> = lines[1..=n]
            .iter()
            .map(|l| merge_pair(l))
            .collect::<Result<_>>()?;
        Self::open_clip_layout(merges)
    }

    /// A vocabulary laid out as open_clip lays out its own: the 256 byte symbols, the same
    /// with `</w>`, one token per merge (in rank order), then `<|startoftext|>` and
    /// `<|endoftext|>`. With CLIP's merges this is CLIP's tokenizer; with a few, a small one
    /// for tests.
    pub fn open_clip_layout(merges: Vec<(String, String)>) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        if let Some((a, b)) = merges.iter().find(|(a, b)| !seen.insert(format!("{a}{b}"))) {
            return Err(bad(format!(
                "the merge `{a} {b}` makes a token made before"
            )));
        }
        let order = byte_order();
        let mut vocab: Vec<String> = order.iter().map(|(_, c)| c.to_string()).collect();
        vocab.extend(order.iter().map(|(_, c)| format!("{c}</w>")));
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.push("<|startoftext|>".into());
        vocab.push("<|endoftext|>".into());
        let encoder = vocab
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, i as u32))
            .collect();
        Self::build(encoder, merges)
    }

    /// From a Hugging Face tokenizer folder's `vocab.json` and `merges.txt`.
    pub fn from_hf(vocab_json: &str, merges_txt: &str) -> Result<Self> {
        let encoder: HashMap<String, u32> =
            serde_json::from_str(vocab_json).map_err(|e| bad(format!("vocab.json: {e}")))?;
        let merges = merges_txt
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .map(merge_pair)
            .collect::<Result<_>>()?;
        Self::build(encoder, merges)
    }

    /// From the lists a pack stores: the vocabulary (index = token id) and the merges in rank
    /// order (`"a b"`).
    pub fn from_lists(vocab: &[String], merges: &[String]) -> Result<Self> {
        let encoder: HashMap<String, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        if encoder.len() != vocab.len() {
            return Err(bad("the vocabulary repeats a token"));
        }
        let merges = merges
            .iter()
            .map(|l| merge_pair(l))
            .collect::<Result<_>>()?;
        Self::build(encoder, merges)
    }

    /// The vocabulary (index = token id) and the merges in rank order, as [`Self::from_lists`]
    /// reads them; ids must run 0..n without gaps.
    pub fn to_lists(&self) -> Result<(Vec<String>, Vec<String>)> {
        let mut vocab: Vec<Option<String>> = vec![None; self.encoder.len()];
        for (t, &i) in &self.encoder {
            match vocab.get_mut(i as usize) {
                Some(slot @ None) => *slot = Some(t.clone()),
                _ => {
                    return Err(bad(format!(
                        "token ids are not 0..{} without gaps (`{t}` has {i})",
                        self.encoder.len()
                    )));
                }
            }
        }
        let vocab: Vec<String> = vocab.into_iter().map(Option::unwrap_or_default).collect();
        let mut merges: Vec<(usize, String)> = self
            .ranks
            .iter()
            .map(|((a, b), &r)| (r, format!("{a} {b}")))
            .collect();
        merges.sort();
        Ok((vocab, merges.into_iter().map(|(_, m)| m).collect()))
    }

    pub fn vocab_size(&self) -> usize {
        self.encoder.len()
    }

    fn bpe(&self, word: &str, out: &mut Vec<u32>) {
        let mut parts: Vec<String> = word.chars().map(|c| c.to_string()).collect();
        if let Some(last) = parts.last_mut() {
            last.push_str("</w>");
        }
        loop {
            let best = parts
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| {
                    self.ranks
                        .get(&(w[0].clone(), w[1].clone()))
                        .map(|&r| (r, i))
                })
                .min();
            let Some((_, _)) = best else { break };
            let (first, second) = {
                let (_, i) = best.expect("some");
                (parts[i].clone(), parts[i + 1].clone())
            };
            // Merge every occurrence of the best pair, left to right (as the reference does).
            let mut merged = Vec::with_capacity(parts.len());
            let mut i = 0;
            while i < parts.len() {
                if i + 1 < parts.len() && parts[i] == first && parts[i + 1] == second {
                    merged.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    merged.push(parts[i].clone());
                    i += 1;
                }
            }
            parts = merged;
            if parts.len() == 1 {
                break;
            }
        }
        for p in parts {
            // Every symbol a merge can form is in the vocabulary.
            if let Some(&id) = self.encoder.get(&p) {
                out.push(id);
            }
        }
    }

    /// `<start_of_text> tokens… <end_of_text>`, at most `context` ids (the end token is kept).
    pub fn encode(&self, text: &str, context: usize) -> Vec<u32> {
        let text = whitespace_clean(&basic_clean(text)).to_lowercase();
        let mut ids = vec![self.sot];
        for m in self.pat.find_iter(&text) {
            let word: String = m
                .as_str()
                .bytes()
                .map(|b| self.byte_enc[b as usize])
                .collect();
            self.bpe(&word, &mut ids);
        }
        ids.push(self.eot);
        if ids.len() > context {
            ids.truncate(context.max(2));
            *ids.last_mut().expect("non-empty") = self.eot;
        }
        ids
    }
}

/// The part of ftfy's `fix_text` that ordinary prompts need, then HTML unescaping (twice, as
/// the reference) and trimming.
fn basic_clean(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.nfc() {
        match c {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' => s.push('\''),
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' => s.push('"'),
            '\u{FB00}' => s.push_str("ff"),
            '\u{FB01}' => s.push_str("fi"),
            '\u{FB02}' => s.push_str("fl"),
            '\u{FB03}' => s.push_str("ffi"),
            '\u{FB04}' => s.push_str("ffl"),
            '\u{FB05}' | '\u{FB06}' => s.push_str("st"),
            '\u{3000}' => s.push(' '),
            '\u{FF01}'..='\u{FF5E}' => {
                s.push(char::from_u32(c as u32 - 0xFF01 + 0x21).expect("ASCII"))
            }
            '\t' | '\n' | '\r' => s.push(c),
            c if c.general_category_group() == GeneralCategoryGroup::Other && (c as u32) < 0xA0 => {
                // C0/C1 control characters.
            }
            c => s.push(c),
        }
    }
    html_unescape(&html_unescape(&s)).trim().to_string()
}

fn whitespace_clean(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Named (`&amp;` `&lt;` `&gt;` `&quot;` `&apos;` `&nbsp;`) and numeric character references.
fn html_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail[1..].find(';').map(|e| e + 1).filter(|&e| e <= 10);
        let decoded = end.and_then(|e| {
            let name = &tail[1..e];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{A0}'),
                _ => {
                    if let Some(h) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                        u32::from_str_radix(h, 16).ok().and_then(char::from_u32)
                    } else if let Some(d) = name.strip_prefix('#') {
                        d.parse::<u32>().ok().and_then(char::from_u32)
                    } else {
                        None
                    }
                }
            };
            c.map(|c| (c, e + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &tail[len..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_open_clip_layout_tokenizes_with_its_merges() {
        let m = |a: &str, b: &str| (a.to_string(), b.to_string());
        let t = ClipBpe::open_clip_layout(vec![m("r", "e"), m("re", "d</w>")]).unwrap();
        assert_eq!(t.vocab_size(), 512 + 2 + 2);
        let ids = t.encode("red re", 77);
        // <|startoftext|>, "red</w>", "r", "e</w>", <|endoftext|>.
        assert_eq!(ids.len(), 5);
        assert_eq!((ids[0], ids[4]), (t.sot, t.eot));
        assert_eq!(ids[1], 513);
        let again = ClipBpe::open_clip_layout(vec![m("r", "ed</w>"), m("re", "d</w>")]);
        assert!(again.is_err(), "two merges making `red</w>`");
    }

    #[test]
    fn byte_map_is_a_bijection_onto_printables() {
        let m = bytes_to_unicode();
        let set: std::collections::BTreeSet<char> = m.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(m[b'a' as usize], 'a');
        assert_eq!(m[b' ' as usize], 'Ġ');
    }

    #[test]
    fn html_and_quotes_are_cleaned() {
        assert_eq!(
            basic_clean(" &amp;amp; “hi” &#65;&#x42; &bogus; "),
            "& \"hi\" AB &bogus;"
        );
    }
}
