//! Jinja2 macros that take extra positional arguments: a macro whose body reads `varargs`
//! accepts more arguments than it names (older packages' `surrogate_key('a', 'b')`).
//! MiniJinja has no `varargs`, so such a macro gets optional parameters for the extra
//! arguments and a `varargs` list of those given.

/// How many extra positional arguments a `varargs` macro accepts.
const SLOTS: usize = 16;

/// Rewrites the headers of macros that read `varargs`, returning the text and the edits
/// (position after each edit in the new text, cumulative growth).
pub(super) fn rewrite_varargs(text: &str) -> (String, Vec<(usize, isize)>) {
    let mut out = String::with_capacity(text.len());
    let mut edits = Vec::new();
    let mut growth: isize = 0;
    let mut rest = 0;
    let mut from = 0;
    let names: Vec<String> = (0..SLOTS)
        .map(|slot| format!("__strata_va{slot}"))
        .collect();
    while let Some((start, header_end, _)) = crate::blocks::next_tag(text, from, "macro") {
        from = header_end;
        let Some((body_end, _, _)) = crate::blocks::next_tag(text, header_end, "endmacro") else {
            break;
        };
        let header = &text[start..header_end];
        let (Some(open), Some(close)) = (header.find('('), header.rfind(')')) else {
            continue;
        };
        if !text[header_end..body_end].contains("varargs") || close < open {
            continue;
        }
        let optional: Vec<String> = names.iter().map(|name| format!("{name}=none")).collect();
        let parameters = if header[open + 1..close].trim().is_empty() {
            optional.join(", ")
        } else {
            format!(", {}", optional.join(", "))
        };
        let collect = format!(
            "{{% set varargs = [{}] | reject('none') | list %}}",
            names.join(", ")
        );
        for (at, insertion) in [(start + close, parameters), (header_end, collect)] {
            out.push_str(&text[rest..at]);
            out.push_str(&insertion);
            growth += insertion.len() as isize;
            edits.push((out.len(), growth));
            rest = at;
        }
    }
    out.push_str(&text[rest..]);
    (out, edits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_reading_varargs_take_extra_arguments() {
        let text = "{% macro key(first) %}{{ ([first] + varargs) | join('|') }}{% endmacro %}\
                    {% macro plain(a) %}{{ a }}{% endmacro %}\
                    {% macro none_named() -%}{{ varargs | length }}{%- endmacro %}";
        let calls = "{{ key('a', 'b', 'c') }} {{ key('a') }} {{ none_named(1, 2) }}";
        let (rewritten, edits) = rewrite_varargs(&format!("{text}{calls}"));
        assert_eq!(edits.len(), 4);
        let rendered = minijinja::Environment::new()
            .render_str(&rewritten, ())
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(rendered, "a|b|c a 2");
        assert!(!rewritten[rewritten.find("plain").unwrap_or(0)..].starts_with("plain(a,"));
    }
}
