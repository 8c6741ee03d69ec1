//! Scanning a template for `{% keyword … %}` … `{% endkeyword %}` blocks (snapshots, custom
//! materializations) and blanking text while keeping every byte offset, line and column.

/// The next `{% keyword … %}` tag at or after `from`: where it starts, where its text
/// ends, and the name that follows the keyword, if any.
pub(crate) fn next_tag(
    text: &str,
    from: usize,
    keyword: &str,
) -> Option<(usize, usize, Option<String>)> {
    let mut at = from;
    while let Some(offset) = text[at..].find("{%") {
        let start = at + offset;
        let close = start + text[start..].find("%}")?;
        let inner = text[start + 2..close]
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        let mut words = inner.split_whitespace();
        if words.next() == Some(keyword) {
            let name = words.next().map(str::to_string);
            return Some((start, close + 2, name));
        }
        at = close + 2;
    }
    None
}

/// `text` with everything outside `start..end` blanked: each character becomes as many
/// spaces as it has bytes, newlines stay, so offsets, lines and columns are the file's.
pub(crate) fn blank_outside(text: &str, start: usize, end: usize) -> String {
    let blank = |part: &str| -> String {
        part.chars()
            .map(|c| {
                if c == '\n' {
                    String::from("\n")
                } else {
                    " ".repeat(c.len_utf8())
                }
            })
            .collect()
    };
    format!(
        "{}{}{}",
        blank(&text[..start]),
        &text[start..end],
        blank(&text[end..])
    )
}

/// `text` with every `{% keyword %}` … `{% endkeyword %}` block blanked (offsets kept), and
/// how many blocks there were.
pub(crate) fn blank_blocks(text: &str, keyword: &str) -> (String, usize) {
    let end_keyword = format!("end{keyword}");
    let mut blanked = String::with_capacity(text.len());
    let mut kept_from = 0;
    let mut count = 0;
    while let Some((start, _, _)) = next_tag(text, kept_from, keyword) {
        let Some((_, after, _)) = next_tag(text, start, &end_keyword) else {
            break;
        };
        blanked.push_str(&text[kept_from..start]);
        blanked.push_str(&blank_outside(&text[start..after], 0, 0));
        kept_from = after;
        count += 1;
    }
    blanked.push_str(&text[kept_from..]);
    (blanked, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_blanked_in_place() {
        let text = "{% macro a() %}1{% endmacro %}\n{%- materialization m, default -%}\n{{ x }}\n{%- endmaterialization -%}\n{% macro b() %}2{% endmacro %}";
        let (blanked, count) = blank_blocks(text, "materialization");
        assert_eq!(count, 1);
        assert_eq!(blanked.len(), text.len());
        assert!(!blanked.contains("materialization"));
        assert_eq!(blanked.find("macro b"), text.find("macro b"));
        assert_eq!(blanked.lines().count(), text.lines().count());
    }
}
