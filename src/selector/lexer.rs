//! The tokens of Calico's selector language, lexed exactly as Calico's tokenizer does.
//!
//! Whitespace is a space or a tab, nothing else (a newline is an error). A label is a run of
//! `[A-Za-z0-9_./-]` of at most 512 characters. A string runs from a quote to the next quote of
//! the same kind, with no escapes. The word operators (`contains`, `starts with`, `ends with`,
//! `in`, `not in`) are recognised only straight after a label and must end at a word boundary,
//! so `contains`, `in` or `has` are ordinary label names elsewhere. `has(`, `all(` and
//! `global(` are written without a space before the parenthesis.

use super::SelectorError;

pub const MAX_LABEL_LENGTH: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Label(String),
    Str(String),
    LBrace,
    RBrace,
    Comma,
    Eq,
    Ne,
    In,
    Not,
    NotIn,
    Contains,
    StartsWith,
    EndsWith,
    All,
    Global,
    Has(String),
    LParen,
    RParen,
    And,
    Or,
    Eof,
}

/// A token and the byte offset in the selector where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned {
    pub token: Token,
    pub position: usize,
}

fn is_label_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'-')
}

fn skip_blanks(input: &[u8], mut at: usize) -> usize {
    while at < input.len() && matches!(input[at], b' ' | b'\t') {
        at += 1;
    }
    at
}

fn at_word_boundary(input: &[u8], at: usize) -> bool {
    at >= input.len() || !is_label_char(input[at])
}

/// `word` at `at`, ending at a word boundary: the offset after it.
fn keyword(input: &[u8], at: usize, word: &str) -> Option<usize> {
    let end = at + word.len();
    (input.get(at..end) == Some(word.as_bytes()) && at_word_boundary(input, end)).then_some(end)
}

/// Two words with any blanks (or none) between them, as `starts with` or `notin`; only the
/// second must end at a word boundary, checked after the blanks that follow it.
fn two_words(input: &[u8], at: usize, first: &str, second: &str) -> Option<usize> {
    let mid = at + first.len();
    if input.get(at..mid) != Some(first.as_bytes()) {
        return None;
    }
    let start = skip_blanks(input, mid);
    let end = start + second.len();
    if input.get(start..end) != Some(second.as_bytes()) {
        return None;
    }
    let after = skip_blanks(input, end);
    at_word_boundary(input, after).then_some(after)
}

fn label(input: &[u8], at: usize) -> Result<(String, usize), SelectorError> {
    let mut end = at;
    while end < input.len() && is_label_char(input[end]) {
        end += 1;
    }
    if end == at {
        let found = match input.get(at) {
            Some(c) if c.is_ascii_graphic() => format!("{:?}", *c as char),
            Some(b'\n') => "a line break (only spaces and tabs separate words)".to_string(),
            Some(c) => format!("byte {c:#04x}"),
            None => "the end".to_string(),
        };
        return Err(SelectorError::new(
            at,
            format!("expected a label, found {found}"),
        ));
    }
    if end - at > MAX_LABEL_LENGTH {
        return Err(SelectorError::new(
            at,
            format!("label longer than {MAX_LABEL_LENGTH} characters"),
        ));
    }
    // Label characters are ASCII, so the slice is valid UTF-8.
    let text = String::from_utf8_lossy(&input[at..end]).into_owned();
    Ok((text, end))
}

pub fn tokenize(selector: &str) -> Result<Vec<Spanned>, SelectorError> {
    let input = selector.as_bytes();
    let mut tokens: Vec<Spanned> = Vec::new();
    let mut at = 0;
    loop {
        at = skip_blanks(input, at);
        let start = at;
        let Some(&c) = input.get(at) else {
            tokens.push(Spanned {
                token: Token::Eof,
                position: at,
            });
            return Ok(tokens);
        };
        let after_label = matches!(tokens.last().map(|t| &t.token), Some(Token::Label(_)));
        let (token, next) = match c {
            b'(' => (Token::LParen, at + 1),
            b')' => (Token::RParen, at + 1),
            b'{' => (Token::LBrace, at + 1),
            b'}' => (Token::RBrace, at + 1),
            b',' => (Token::Comma, at + 1),
            b'"' | b'\'' => {
                let body = at + 1;
                let Some(len) = input[body..].iter().position(|b| *b == c) else {
                    return Err(SelectorError::new(at, "unterminated string"));
                };
                let value = String::from_utf8_lossy(&input[body..body + len]).into_owned();
                (Token::Str(value), body + len + 1)
            }
            b'=' => match input.get(at + 1) {
                Some(b'=') => (Token::Eq, at + 2),
                _ => return Err(SelectorError::new(at, "expected ==")),
            },
            b'!' => match input.get(at + 1) {
                Some(b'=') => (Token::Ne, at + 2),
                _ => (Token::Not, at + 1),
            },
            b'&' => match input.get(at + 1) {
                Some(b'&') => (Token::And, at + 2),
                _ => return Err(SelectorError::new(at, "expected &&")),
            },
            b'|' => match input.get(at + 1) {
                Some(b'|') => (Token::Or, at + 2),
                _ => return Err(SelectorError::new(at, "expected ||")),
            },
            _ if after_label => {
                if let Some(end) = keyword(input, at, "contains") {
                    (Token::Contains, end)
                } else if let Some(end) = two_words(input, at, "starts", "with") {
                    (Token::StartsWith, end)
                } else if let Some(end) = two_words(input, at, "ends", "with") {
                    (Token::EndsWith, end)
                } else if let Some(end) = two_words(input, at, "not", "in") {
                    (Token::NotIn, end)
                } else if let Some(end) = keyword(input, at, "in") {
                    (Token::In, end)
                } else {
                    let previous = match tokens.last().map(|t| &t.token) {
                        Some(Token::Label(l)) => l.clone(),
                        _ => String::new(),
                    };
                    return Err(SelectorError::new(
                        at,
                        format!(
                            "expected an operator after label {previous:?} (==, !=, in, not in, contains, starts with, ends with)"
                        ),
                    ));
                }
            }
            _ if input[at..].starts_with(b"has(") => {
                let inner = skip_blanks(input, at + 4);
                let (name, end) = label(input, inner)?;
                let end = skip_blanks(input, end);
                if input.get(end) != Some(&b')') {
                    return Err(SelectorError::new(end, "expected ) to close has("));
                }
                (Token::Has(name), end + 1)
            }
            _ if input[at..].starts_with(b"all(") => {
                let end = skip_blanks(input, at + 4);
                if input.get(end) != Some(&b')') {
                    return Err(SelectorError::new(end, "expected ) after all("));
                }
                (Token::All, end + 1)
            }
            _ if input[at..].starts_with(b"global(") => {
                let end = skip_blanks(input, at + 7);
                if input.get(end) != Some(&b')') {
                    return Err(SelectorError::new(end, "expected ) after global("));
                }
                (Token::Global, end + 1)
            }
            _ => {
                let (name, end) = label(input, at)?;
                (Token::Label(name), end)
            }
        };
        tokens.push(Spanned {
            token,
            position: start,
        });
        at = next;
    }
}

#[cfg(test)]
mod tests {
    use super::Token::*;
    use super::*;

    fn kinds(input: &str) -> Option<Vec<Token>> {
        tokenize(input)
            .ok()
            .map(|t| t.into_iter().map(|s| s.token).collect())
    }

    fn l(s: &str) -> Token {
        Label(s.to_string())
    }

    fn s(v: &str) -> Token {
        Str(v.to_string())
    }

    // The cases of Calico's tokenizer tests (libcalico-go/lib/selector/tokenizer).
    #[test]
    fn lexes_as_calico_does() {
        let cases: Vec<(String, Option<Vec<Token>>)> = vec![
            (r#"a=="b""#.into(), Some(vec![l("a"), Eq, s("b"), Eof])),
            (r#"a!="b""#.into(), Some(vec![l("a"), Ne, s("b"), Eof])),
            (r#"a != "b""#.into(), Some(vec![l("a"), Ne, s("b"), Eof])),
            (
                r#"(a=="b")"#.into(),
                Some(vec![LParen, l("a"), Eq, s("b"), RParen, Eof]),
            ),
            (
                r#"label == "value""#.into(),
                Some(vec![l("label"), Eq, s("value"), Eof]),
            ),
            (
                r#"label contains "value""#.into(),
                Some(vec![l("label"), Contains, s("value"), Eof]),
            ),
            (
                r#"contains contains "contains""#.into(),
                Some(vec![l("contains"), Contains, s("contains"), Eof]),
            ),
            (
                "contains contains 'contains'".into(),
                Some(vec![l("contains"), Contains, s("contains"), Eof]),
            ),
            (
                r#"label contains"value""#.into(),
                Some(vec![l("label"), Contains, s("value"), Eof]),
            ),
            (
                r#"label startswith "value""#.into(),
                Some(vec![l("label"), StartsWith, s("value"), Eof]),
            ),
            (
                r#"label endswith "value""#.into(),
                Some(vec![l("label"), EndsWith, s("value"), Eof]),
            ),
            (
                r#"label starts with "value""#.into(),
                Some(vec![l("label"), StartsWith, s("value"), Eof]),
            ),
            (
                r#"startswith starts with "value""#.into(),
                Some(vec![l("startswith"), StartsWith, s("value"), Eof]),
            ),
            (
                r#"label ends with "value""#.into(),
                Some(vec![l("label"), EndsWith, s("value"), Eof]),
            ),
            (
                r#"endswith ends with "value""#.into(),
                Some(vec![l("endswith"), EndsWith, s("value"), Eof]),
            ),
            (
                r#"label starts  with "value""#.into(),
                Some(vec![l("label"), StartsWith, s("value"), Eof]),
            ),
            (
                r#"label ends  with "value""#.into(),
                Some(vec![l("label"), EndsWith, s("value"), Eof]),
            ),
            (
                format!(r#"{} == "value""#, "a".repeat(512)),
                Some(vec![l(&"a".repeat(512)), Eq, s("value"), Eof]),
            ),
            (format!(r#"{} == "value""#, "a".repeat(513)), None),
            (r#"label == "value"#.into(), None),
            ("label == 'value".into(), None),
            (r#"label = "value""#.into(), None),
            ("all(".into(), None),
            ("global(".into(), None),
            ("has()".into(), None),
            ("has(foo".into(), None),
            ("has( foo ".into(), None),
            (r#"a == "b" & has(foo)"#.into(), None),
            (r#"a == "b" | has(foo)"#.into(), None),
            (r#"label starts foo "value""#.into(), None),
            (r#"label inf "value""#.into(), None),
            (r#"label ends foo "value""#.into(), None),
            (r#"label ends withs "value""#.into(), None),
            (r#"label squiggles "value""#.into(), None),
            (
                r#"a not in "bar" && !has(foo) || b in c"#.into(),
                Some(vec![
                    l("a"),
                    NotIn,
                    s("bar"),
                    And,
                    Not,
                    Has("foo".into()),
                    Or,
                    l("b"),
                    In,
                    l("c"),
                    Eof,
                ]),
            ),
            (
                "has(calico/k8s_ns)".into(),
                Some(vec![Has("calico/k8s_ns".into()), Eof]),
            ),
            (
                "has(calico/k8s_NS-.1/role)".into(),
                Some(vec![Has("calico/k8s_NS-.1/role".into()), Eof]),
            ),
            (
                r#"calico/k8s_ns == "kube-system" && k8s-app == "kube-dns""#.into(),
                Some(vec![
                    l("calico/k8s_ns"),
                    Eq,
                    s("kube-system"),
                    And,
                    l("k8s-app"),
                    Eq,
                    s("kube-dns"),
                    Eof,
                ]),
            ),
            (
                r#"a  not  in  "bar"  &&  ! has( foo )  ||  b  in  c "#.into(),
                Some(vec![
                    l("a"),
                    NotIn,
                    s("bar"),
                    And,
                    Not,
                    Has("foo".into()),
                    Or,
                    l("b"),
                    In,
                    l("c"),
                    Eof,
                ]),
            ),
            (
                r#"a notin"bar"&&!has(foo)||b in"c""#.into(),
                Some(vec![
                    l("a"),
                    NotIn,
                    s("bar"),
                    And,
                    Not,
                    Has("foo".into()),
                    Or,
                    l("b"),
                    In,
                    s("c"),
                    Eof,
                ]),
            ),
            (
                "a not in {}".into(),
                Some(vec![l("a"), NotIn, LBrace, RBrace, Eof]),
            ),
            (
                r#"a not in {"a","B"}"#.into(),
                Some(vec![
                    l("a"),
                    NotIn,
                    LBrace,
                    s("a"),
                    Comma,
                    s("B"),
                    RBrace,
                    Eof,
                ]),
            ),
            ("global()".into(), Some(vec![Global, Eof])),
            ("all( )".into(), Some(vec![All, Eof])),
        ];
        for (input, expected) in cases {
            assert_eq!(kinds(&input), expected, "{input:?}");
        }
    }

    #[test]
    fn only_spaces_and_tabs_separate_words() {
        assert!(kinds("a == 'b'\t&& c == 'd'").is_some());
        assert!(
            kinds("a == 'b'\n").is_none(),
            "a trailing newline is an error"
        );
        assert!(kinds("a == 'b'\r\n&& c == 'd'").is_none());
        assert_eq!(
            kinds("has (a)"),
            Some(vec![l("has"), LParen, l("a"), RParen, Eof]),
            "has( must be written together, or it is a label (which the parser rejects)"
        );
        assert!(kinds("a not in x").is_none());
        assert!(kinds("é == 'x'").is_none(), "labels are ASCII");
    }

    #[test]
    fn strings_have_no_escapes() {
        assert_eq!(
            kinds(r#"a == "it's""#),
            Some(vec![l("a"), Eq, s("it's"), Eof])
        );
        assert_eq!(
            kinds(r#"a == 'say "hi"'"#),
            Some(vec![l("a"), Eq, s(r#"say "hi""#), Eof])
        );
        assert!(kinds(r#"a == "x\"y""#).is_none());
    }

    #[test]
    fn errors_carry_the_position() {
        let err = tokenize("a == 'b' && c = 'd'").unwrap_err();
        assert_eq!(err.position, 14);
        let err = tokenize("a == 'b' && %").unwrap_err();
        assert_eq!(err.position, 12);
    }
}
