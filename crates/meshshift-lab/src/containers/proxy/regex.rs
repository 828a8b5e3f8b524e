//! A small regular-expression matcher for VirtualService `regex` matches.
//!
//! Why our own: the lab may not add crates, and Istio's `regex` matches (Envoy `safe_regex`, RE2 syntax,
//! whole-string match) in routing rules are short patterns over URI paths and header values. This covers
//! the RE2 subset such rules use: literals, `.`, escapes (`\d \w \s` and their negations, escaped
//! punctuation), classes `[a-z0-9_-]` / `[^/]`, groups `( )` / `(?: )`, alternation `|`, anchors `^ $`,
//! and the quantifiers `* + ? {m} {m,} {m,n}` (greedy, or lazy with a trailing `?`). It backtracks with a
//! step budget, so a pathological pattern fails to match instead of hanging a request. Anything else
//! (flags, named groups, Unicode classes) is a parse error: the route is then skipped with a warning.

use std::cell::Cell;

/// How many matching steps one `full_match` may take before giving up (no match).
const STEP_BUDGET: u64 = 200_000;

/// Why a pattern is not supported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegexError {
    /// The pattern ended where more was expected.
    #[error("regex {pattern:?}: unexpected end")]
    UnexpectedEnd {
        /// The pattern.
        pattern: String,
    },
    /// A construct outside the supported subset.
    #[error("regex {pattern:?}: unsupported or invalid syntax at offset {offset}")]
    Unsupported {
        /// The pattern.
        pattern: String,
        /// Character offset.
        offset: usize,
    },
}

/// A compiled pattern; matches whole strings only (as Envoy's `safe_regex` does).
#[derive(Debug, Clone, PartialEq)]
pub struct Regex {
    source: String,
    root: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Literal(char),
    /// `.`: any character but a newline.
    Any,
    Class {
        ranges: Vec<(char, char)>,
        negated: bool,
    },
    Start,
    End,
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
        greedy: bool,
    },
}

impl Regex {
    /// Parses `pattern`.
    pub fn new(pattern: &str) -> Result<Regex, RegexError> {
        let mut parser = Parser { chars: pattern.chars().collect(), pos: 0, pattern };
        let root = parser.alternation()?;
        if parser.pos < parser.chars.len() {
            return Err(parser.unsupported());
        }
        Ok(Regex { source: pattern.to_owned(), root })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `text` matches.
    pub fn full_match(&self, text: &str) -> bool {
        let matcher = Matcher { input: text.chars().collect(), budget: Cell::new(STEP_BUDGET) };
        let len = matcher.input.len();
        matcher.node(&self.root, 0, &mut |end| end == len)
    }
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    pattern: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Result<char, RegexError> {
        let c = self.peek().ok_or_else(|| RegexError::UnexpectedEnd { pattern: self.pattern.to_owned() })?;
        self.pos += 1;
        Ok(c)
    }

    fn unsupported(&self) -> RegexError {
        RegexError::Unsupported { pattern: self.pattern.to_owned(), offset: self.pos }
    }

    fn alternation(&mut self) -> Result<Node, RegexError> {
        let mut alternatives = vec![self.concatenation()?];
        while self.peek() == Some('|') {
            self.pos += 1;
            alternatives.push(self.concatenation()?);
        }
        Ok(if alternatives.len() == 1 { alternatives.remove(0) } else { Node::Alt(alternatives) })
    }

    fn concatenation(&mut self) -> Result<Node, RegexError> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            items.push(self.quantified(atom)?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Node::Concat(items) })
    }

    fn quantified(&mut self, atom: Node) -> Result<Node, RegexError> {
        let mut node = atom;
        loop {
            let single = |min, max| Some((min, max, 1));
            let (min, max, width) = match self.peek() {
                Some('*') => single(0, None),
                Some('+') => single(1, None),
                Some('?') => single(0, Some(1)),
                Some('{') => self.braces()?,
                _ => None,
            }
            .map_or((0, None, 0), |b| b);
            if width == 0 {
                return Ok(node);
            }
            self.pos += width;
            if matches!(node, Node::Start | Node::End | Node::Repeat { .. }) {
                return Err(self.unsupported());
            }
            let greedy = if self.peek() == Some('?') {
                self.pos += 1;
                false
            } else {
                true
            };
            node = Node::Repeat { node: Box::new(node), min, max, greedy };
        }
    }

    /// `{m}`, `{m,}`, `{m,n}` at the cursor as (min, max, width in chars), or `None` (not a repetition:
    /// RE2 then reads the brace as a literal).
    fn braces(&self) -> Result<Option<(u32, Option<u32>, usize)>, RegexError> {
        let rest: String = self.chars[self.pos..].iter().collect();
        let Some(close) = rest.find('}') else { return Ok(None) };
        let inner = &rest[1..close];
        let parse = |s: &str| s.parse::<u32>().ok();
        let bounds = match inner.split_once(',') {
            None => parse(inner).map(|m| (m, Some(m))),
            Some((m, "")) => parse(m).map(|m| (m, None)),
            Some((m, n)) => parse(m).zip(parse(n)).map(|(m, n)| (m, Some(n))),
        };
        match bounds {
            Some((min, Some(max))) if max < min => Err(self.unsupported()),
            Some((min, max)) => Ok(Some((min, max, inner.chars().count() + 2))),
            None => Ok(None),
        }
    }

    fn atom(&mut self) -> Result<Node, RegexError> {
        match self.next()? {
            '(' => {
                if self.peek() == Some('?') {
                    self.pos += 1;
                    if self.next()? != ':' {
                        return Err(self.unsupported());
                    }
                }
                let inner = self.alternation()?;
                if self.next()? != ')' {
                    return Err(self.unsupported());
                }
                // Wrapped, so that `(a*)*` is a repetition of a group, while `a**` stays an error.
                Ok(Node::Concat(vec![inner]))
            }
            '[' => self.class(),
            '.' => Ok(Node::Any),
            '^' => Ok(Node::Start),
            '$' => Ok(Node::End),
            '\\' => self.escape(),
            '*' | '+' | '?' | ')' => {
                self.pos -= 1;
                Err(self.unsupported())
            }
            c => Ok(Node::Literal(c)),
        }
    }

    fn escape(&mut self) -> Result<Node, RegexError> {
        let c = self.next()?;
        Ok(match class_escape(c) {
            Some((ranges, negated)) => Node::Class { ranges, negated },
            None => Node::Literal(self.literal_escape(c)?),
        })
    }

    fn literal_escape(&self, c: char) -> Result<char, RegexError> {
        match c {
            'n' => Ok('\n'),
            't' => Ok('\t'),
            'r' => Ok('\r'),
            c if c.is_ascii_punctuation() => Ok(c),
            _ => Err(self.unsupported()),
        }
    }

    fn class(&mut self) -> Result<Node, RegexError> {
        let negated = if self.peek() == Some('^') {
            self.pos += 1;
            true
        } else {
            false
        };
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let c = self.next()?;
            if c == ']' && !first {
                break;
            }
            first = false;
            let low = if c == '\\' {
                let e = self.next()?;
                if let Some((more, false)) = class_escape(e) {
                    ranges.extend(more);
                    continue;
                }
                self.literal_escape(e)?
            } else {
                c
            };
            if self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|&n| n != ']') {
                self.pos += 1;
                let mut high = self.next()?;
                if high == '\\' {
                    let e = self.next()?;
                    high = self.literal_escape(e)?;
                }
                if high < low {
                    return Err(self.unsupported());
                }
                ranges.push((low, high));
            } else {
                ranges.push((low, low));
            }
        }
        Ok(Node::Class { ranges, negated })
    }
}

/// `\d \w \s` and their negations as (ranges, negated).
fn class_escape(c: char) -> Option<(Vec<(char, char)>, bool)> {
    let digits = vec![('0', '9')];
    let word = vec![('0', '9'), ('a', 'z'), ('A', 'Z'), ('_', '_')];
    let space = vec![(' ', ' '), ('\t', '\t'), ('\n', '\n'), ('\r', '\r'), ('\x0b', '\x0c')];
    match c {
        'd' => Some((digits, false)),
        'D' => Some((digits, true)),
        'w' => Some((word, false)),
        'W' => Some((word, true)),
        's' => Some((space, false)),
        'S' => Some((space, true)),
        _ => None,
    }
}

/// Backtracking matcher in continuation-passing style: `node(n, pos, k)` tries every way `n` can match
/// at `pos` and calls `k` with each end position until `k` accepts.
struct Matcher {
    input: Vec<char>,
    budget: Cell<u64>,
}

impl Matcher {
    fn node(&self, node: &Node, pos: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
        let left = self.budget.get();
        if left == 0 {
            return false;
        }
        self.budget.set(left - 1);
        match node {
            Node::Literal(c) => self.input.get(pos) == Some(c) && k(pos + 1),
            Node::Any => self.input.get(pos).is_some_and(|&c| c != '\n') && k(pos + 1),
            Node::Class { ranges, negated } => {
                self.input.get(pos).is_some_and(|&c| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated)
                    && k(pos + 1)
            }
            Node::Start => pos == 0 && k(pos),
            Node::End => pos == self.input.len() && k(pos),
            Node::Concat(items) => self.concat(items, pos, k),
            Node::Alt(alternatives) => alternatives.iter().any(|a| self.node(a, pos, &mut *k)),
            Node::Repeat { node, min, max, greedy } => self.repeat(node, *min, *max, *greedy, 0, pos, k),
        }
    }

    fn concat(&self, items: &[Node], pos: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
        match items.split_first() {
            None => k(pos),
            Some((first, rest)) => self.node(first, pos, &mut |p| self.concat(rest, p, &mut *k)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn repeat(
        &self,
        node: &Node,
        min: u32,
        max: Option<u32>,
        greedy: bool,
        count: u32,
        pos: usize,
        k: &mut dyn FnMut(usize) -> bool,
    ) -> bool {
        let may_continue = max.is_none_or(|m| count < m);
        let once_more = |k: &mut dyn FnMut(usize) -> bool| {
            may_continue
                && self.node(node, pos, &mut |p| {
                    // An iteration that consumed nothing after the minimum would loop forever.
                    if p == pos && count >= min {
                        return false;
                    }
                    self.repeat(node, min, max, greedy, count + 1, p, &mut *k)
                })
        };
        if count < min {
            return once_more(k);
        }
        if greedy { once_more(&mut *k) || k(pos) } else { k(pos) || once_more(k) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        Regex::new(pattern).unwrap_or_else(|e| panic!("{e}")).full_match(text)
    }

    #[test]
    fn literals_and_dots_match_whole_strings_only() {
        assert!(m("/productpage", "/productpage"));
        assert!(!m("/product", "/productpage"), "whole-string match, like Envoy's safe_regex");
        assert!(m("/a.c", "/abc"));
        assert!(!m("/a\\.c", "/abc"));
        assert!(m("/a\\.c", "/a.c"));
    }

    #[test]
    fn quantifiers() {
        assert!(m("/api/v1/products/\\d+", "/api/v1/products/42"));
        assert!(!m("/api/v1/products/\\d+", "/api/v1/products/"));
        assert!(m("/static/.*", "/static/"));
        assert!(m("/static/.*", "/static/css/x.css"));
        assert!(m("ab?c", "ac"));
        assert!(m("ab{2,3}c", "abbbc"));
        assert!(!m("ab{2,3}c", "abbbbc"));
        assert!(m("ab{2}c", "abbc"));
        assert!(m("ab{2,}c", "abbbbbc"));
        assert!(m("a.*?b", "axxb"));
        assert!(m("a{x", "a{x"), "a brace that is not a repetition is a literal");
    }

    #[test]
    fn classes_groups_and_alternation() {
        assert!(m("/reviews/[0-9]+", "/reviews/7"));
        assert!(m("/[^/]+/x", "/abc/x"));
        assert!(!m("/[^/]+/x", "/a/b/x"));
        assert!(m("/(login|logout)", "/logout"));
        assert!(!m("/(login|logout)", "/log"));
        assert!(m("/(?:a|b)+", "/abba"));
        assert!(m("^/v[12]/.*$", "/v2/x"));
        assert!(m("[\\w-]+", "a_b-c"));
        assert!(m("[-a]+", "-a-"));
    }

    #[test]
    fn unsupported_syntax_is_an_error() {
        assert!(Regex::new("(?i)abc").is_err());
        assert!(Regex::new("(abc").is_err());
        assert!(Regex::new("*a").is_err());
        assert!(Regex::new("a{3,1}").is_err());
        assert!(Regex::new("\\pL").is_err());
    }

    #[test]
    fn pathological_patterns_give_up_instead_of_hanging() {
        let text = "a".repeat(40) + "b";
        assert!(!m("(a*)*c", &text));
        assert!(!m("(a|a)*c", &text));
    }
}
