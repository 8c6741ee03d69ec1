//! Rewrites the list and dict literals of a template's code into mutable values:
//! `[a, b]` becomes `__strata_list([a, b])` and `{k: v}` becomes `__strata_dict({k: v})`, so
//! that `append` and `update` work as dbt's projects expect. A unary `+` (`interval = +1`),
//! which Python's Jinja accepts and minijinja does not, becomes a space. Text outside `{{ }}`
//! and `{% %}`, comments, raw blocks and string literals are left alone.

/// An edit: the position after it in the new text, and the cumulative growth of the text.
pub type Edits = Vec<(usize, isize)>;

/// Jinja keywords after which `[` opens a literal, not a subscript.
const KEYWORDS: [&str; 10] = [
    "in", "not", "and", "or", "if", "else", "is", "return", "do", "set",
];

/// What a bracket opened: a literal to close with `)`, or a subscript, call or group.
#[derive(Clone, Copy, PartialEq)]
enum Open {
    Literal,
    Other,
}

/// The rewritten text and its edits.
pub fn mutable_literals(text: &str) -> (String, Edits) {
    let mut rewriter = Rewriter {
        bytes: text.as_bytes(),
        text,
        out: String::with_capacity(text.len() + text.len() / 8),
        copied: 0,
        growth: 0,
        edits: Vec::new(),
    };
    rewriter.run();
    rewriter.out.push_str(&text[rewriter.copied..]);
    (rewriter.out, rewriter.edits)
}

struct Rewriter<'a> {
    text: &'a str,
    bytes: &'a [u8],
    out: String,
    /// Bytes of `text` already copied to `out`.
    copied: usize,
    growth: isize,
    edits: Edits,
}

impl Rewriter<'_> {
    fn run(&mut self) {
        let mut at = 0;
        while let Some(found) = self.text[at..].find('{') {
            let start = at + found;
            at = match self.bytes.get(start + 1) {
                Some(b'#') => self.skip_past(start, "#}"),
                Some(b'%') if self.is_raw(start + 2) => self.skip_past(start, "endraw"),
                Some(b'{') => self.code(start + 2),
                Some(b'%') => self.statement(start + 2),
                _ => start + 1,
            };
        }
    }

    fn skip_past(&self, from: usize, marker: &str) -> usize {
        self.text[from..]
            .find(marker)
            .map_or(self.text.len(), |found| from + found + marker.len())
    }

    fn is_raw(&self, at: usize) -> bool {
        self.text[at..]
            .trim_start_matches(['-', '+'])
            .trim_start()
            .starts_with("raw")
    }

    fn insert(&mut self, at: usize, what: &str) {
        self.out.push_str(&self.text[self.copied..at]);
        self.out.push_str(what);
        self.copied = at;
        self.growth += what.len() as isize;
        self.edits.push((self.out.len(), self.growth));
    }

    /// Rewrites a `{% … %}` tag whose code starts at `at`. The expression of a `do` tag is
    /// wrapped in a call (`do __strata_eval(expr)`): minijinja's `do` takes only calls, dbt's
    /// any expression (`{% do x.append(y) if z %}`).
    fn statement(&mut self, at: usize) -> usize {
        let mut word = at;
        while matches!(self.bytes.get(word), Some(b'-' | b'+')) {
            word += 1;
        }
        while self.bytes.get(word).is_some_and(u8::is_ascii_whitespace) {
            word += 1;
        }
        let is_do = self.text[word..].starts_with("do")
            && self
                .bytes
                .get(word + 2)
                .is_some_and(u8::is_ascii_whitespace);
        if !is_do {
            return self.code(at);
        }
        self.insert(word + 3, "__strata_eval(");
        let end = self.code(word + 3);
        let mut close = end - 2;
        if matches!(self.bytes.get(close - 1), Some(b'-' | b'+')) {
            close -= 1;
        }
        self.insert(close, ")");
        end
    }

    /// Replaces the byte at `at` with a space (no edit: offsets stay the same).
    fn blank(&mut self, at: usize) {
        self.out.push_str(&self.text[self.copied..at]);
        self.out.push(' ');
        self.copied = at + 1;
    }

    /// Rewrites the code of one tag starting at `at`; returns where the tag ends.
    fn code(&mut self, mut at: usize) -> usize {
        let start = at;
        let mut stack: Vec<Open> = Vec::new();
        // The last significant token: whether it ends an operand (then `[` is a subscript).
        let mut after_operand = false;
        while at < self.bytes.len() {
            let byte = self.bytes[at];
            match byte {
                b'\'' | b'"' => {
                    at = self.string_end(at);
                    after_operand = true;
                    continue;
                }
                b'}' | b'%' if stack.is_empty() && self.bytes.get(at + 1) == Some(&b'}') => {
                    return at + 2;
                }
                b'[' | b'{' | b'(' => {
                    let literal = byte != b'(' && (byte == b'{' || !after_operand);
                    if literal {
                        self.insert(
                            at,
                            if byte == b'[' {
                                "__strata_list("
                            } else {
                                "__strata_dict("
                            },
                        );
                    }
                    stack.push(if literal { Open::Literal } else { Open::Other });
                    after_operand = false;
                }
                b']' | b'}' | b')' => {
                    if stack.pop() == Some(Open::Literal) {
                        self.insert(at + 1, ")");
                    }
                    after_operand = true;
                }
                b if b.is_ascii_alphanumeric() || b == b'_' => {
                    let end = at
                        + self.bytes[at..]
                            .iter()
                            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                            .count();
                    after_operand = !KEYWORDS.contains(&&self.text[at..end]);
                    at = end;
                    continue;
                }
                b'+' if !after_operand
                    && at != start
                    && !matches!(self.bytes.get(at + 1..at + 3), Some(b"%}" | b"}}")) =>
                {
                    self.blank(at);
                }
                b if b.is_ascii_whitespace() => {}
                _ => after_operand = false,
            }
            at += 1;
        }
        at
    }

    fn string_end(&self, start: usize) -> usize {
        let quote = self.bytes[start];
        let mut at = start + 1;
        while at < self.bytes.len() {
            match self.bytes[at] {
                b'\\' => at += 2,
                b if b == quote => return at + 1,
                _ => at += 1,
            }
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::mutable_literals;

    #[test]
    fn literals_are_wrapped_and_subscripts_are_not() {
        let (out, _) = mutable_literals(
            "select [1] {% set xs = [] %}{% set d = {'a': [1, 2]} %}{{ xs[0] }}{{ f([x])[1] }}{% for i in [1, 2] %}{% endfor %}",
        );
        assert_eq!(
            out,
            "select [1] {% set xs = __strata_list([]) %}{% set d = __strata_dict({'a': __strata_list([1, 2])}) %}{{ xs[0] }}{{ f(__strata_list([x]))[1] }}{% for i in __strata_list([1, 2]) %}{% endfor %}"
        );
    }

    #[test]
    fn do_takes_any_expression() {
        let (out, _) = mutable_literals("{%- do xs.append(1) if y else none -%}{% do f() %}");
        assert_eq!(
            out,
            "{%- do __strata_eval(xs.append(1) if y else none )-%}{% do __strata_eval(f() )%}"
        );
    }

    #[test]
    fn unary_plus_becomes_a_space_and_whitespace_control_stays() {
        let (out, edits) = mutable_literals("{%+ set i = +1 +%}{{ a + +b }}");
        assert_eq!(out, "{%+ set i =  1 +%}{{ a +  b }}");
        assert!(edits.is_empty());
    }

    #[test]
    fn strings_comments_and_raw_blocks_are_left_alone() {
        let text = "{# [x] #}{{ '[not]' ~ \"{also}\" }}{% raw %}{{ [1] }}{% endraw %}";
        assert_eq!(mutable_literals(text).0, text);
    }

    #[test]
    fn edits_record_the_growth() {
        let (out, edits) = mutable_literals("{{ [] }}");
        assert_eq!(out, "{{ __strata_list([]) }}");
        assert_eq!(edits, vec![(17, 14), (20, 15)]);
    }
}
