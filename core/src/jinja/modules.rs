//! `modules`: the Python modules dbt hands to templates, as far as packages use them —
//! `modules.re` (`sub`, `search`, `match`, `fullmatch`, `findall`, `split`, `escape`,
//! `compile`, `IGNORECASE`) with Python's pattern syntax as the `regex` crate reads it (no
//! look-around or back-references inside patterns), and `modules.datetime` (`date`,
//! `datetime`, `datetime.now()` / `utcnow()`, `date.today()`, `strftime`, `isoformat`), with
//! `modules.pytz.timezone('UTC')`. What else a template asks of them fails naming it.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use minijinja::value::{Kwargs, Object, ObjectRepr, from_args};
use minijinja::{Error, ErrorKind, State, Value};

fn unsupported(what: &str) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("{what} is not supported by Strata's `modules`; see docs/dbt-compatibility.md"),
    )
}

/// The `modules` global.
#[derive(Debug)]
pub struct Modules;

impl Object for Modules {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(match key.as_str()? {
            "re" => Value::from_object(Re),
            "datetime" => Value::from_object(DatetimeModule),
            "pytz" => Value::from_object(Pytz),
            _ => return None,
        })
    }
}

/// Python's `re.IGNORECASE` flag value.
const IGNORECASE: i64 = 2;

/// `modules.re`.
#[derive(Debug)]
struct Re;

impl Object for Re {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        matches!(key.as_str()?, "IGNORECASE" | "I").then(|| Value::from(IGNORECASE))
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        if method == "escape" {
            let (text,): (String,) = from_args(args)?;
            return Ok(Value::from(regex::escape(&text)));
        }
        let (pattern, rest) = args
            .split_first()
            .ok_or_else(|| Error::new(ErrorKind::MissingArgument, "re needs a pattern"))?;
        let flags = flags_of(rest)?;
        let compiled = Pattern::new(&pattern.to_string(), flags)?;
        if method == "compile" {
            return Ok(Value::from_object(compiled));
        }
        compiled.apply(method, rest)
    }
}

/// The `flags=` keyword (or a trailing number) of a `re` call.
fn flags_of(args: &[Value]) -> Result<i64, Error> {
    for arg in args {
        if let Ok(kwargs) = Kwargs::try_from(arg.clone())
            && let Some(flags) = kwargs.get::<Option<i64>>("flags")?
        {
            return Ok(flags);
        }
    }
    Ok(0)
}

/// A compiled pattern (`re.compile(…)`), also what every `re` function uses.
#[derive(Debug)]
struct Pattern {
    source: String,
    regex: regex::Regex,
    flags: i64,
}

impl Pattern {
    fn new(source: &str, flags: i64) -> Result<Pattern, Error> {
        Ok(Pattern {
            source: source.to_string(),
            regex: build(source, flags)?,
            flags,
        })
    }

    /// `sub`, `search`, `match`, `fullmatch`, `findall`, `split` over the text in `args`.
    fn apply(&self, method: &str, args: &[Value]) -> Result<Value, Error> {
        let positional: Vec<&Value> = args
            .iter()
            .filter(|arg| Kwargs::try_from((*arg).clone()).is_err())
            .collect();
        let text = |index: usize| -> Result<String, Error> {
            positional
                .get(index)
                .map(|value| value.to_string())
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::MissingArgument,
                        format!("re.{method}() needs the text"),
                    )
                })
        };
        match method {
            "sub" => {
                let (replacement, subject) = (text(0)?, text(1)?);
                let count = positional
                    .get(2)
                    .and_then(|v| i64::try_from((*v).clone()).ok());
                let limit = usize::try_from(count.unwrap_or(0)).unwrap_or(0);
                Ok(Value::from(
                    self.regex
                        .replacen(&subject, limit, python_replacement(&replacement).as_str())
                        .into_owned(),
                ))
            }
            "search" => Ok(self.found(self.regex.captures(&text(0)?))),
            "match" => {
                let anchored = build(&format!("^(?:{})", self.source), self.flags)?;
                Ok(self.found(anchored.captures(&text(0)?)))
            }
            "fullmatch" => {
                let anchored = build(&format!("^(?:{})$", self.source), self.flags)?;
                Ok(self.found(anchored.captures(&text(0)?)))
            }
            "findall" => {
                let subject = text(0)?;
                let groups = self.regex.captures_len() - 1;
                let found: Vec<Value> = self
                    .regex
                    .captures_iter(&subject)
                    .map(|captures| {
                        let group = |index: usize| {
                            Value::from(captures.get(index).map_or("", |m| m.as_str()))
                        };
                        match groups {
                            0 => group(0),
                            1 => group(1),
                            _ => Value::from((1..=groups).map(group).collect::<Vec<_>>()),
                        }
                    })
                    .collect();
                Ok(Value::from(found))
            }
            "split" => Ok(Value::from(
                self.regex
                    .split(&text(0)?)
                    .map(Value::from)
                    .collect::<Vec<_>>(),
            )),
            other => Err(unsupported(&format!("re.{other}()"))),
        }
    }

    fn found(&self, captures: Option<regex::Captures<'_>>) -> Value {
        match captures {
            Some(captures) => Value::from_object(Match {
                groups: captures
                    .iter()
                    .map(|group| group.map(|m| (m.as_str().to_string(), m.start(), m.end())))
                    .collect(),
            }),
            None => Value::from(()),
        }
    }
}

impl Object for Pattern {
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        self.apply(method, args)
    }
}

fn build(source: &str, flags: i64) -> Result<regex::Regex, Error> {
    regex::RegexBuilder::new(source)
        .case_insensitive(flags & IGNORECASE != 0)
        .build()
        .map_err(|err| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("modules.re: the pattern '{source}' is not supported: {err}"),
            )
        })
}

/// Python's `\1` and `\g<name>` in a replacement, as the `regex` crate writes them.
fn python_replacement(replacement: &str) -> String {
    let mut out = String::with_capacity(replacement.len());
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('$', _) => out.push_str("$$"),
            ('\\', Some(digit)) if digit.is_ascii_digit() => {
                chars.next();
                out.push_str(&format!("${{{digit}}}"));
            }
            ('\\', Some('g')) => {
                chars.next();
                let name: String = chars.by_ref().skip(1).take_while(|&c| c != '>').collect();
                out.push_str(&format!("${{{name}}}"));
            }
            ('\\', Some('\\')) => {
                chars.next();
                out.push('\\');
            }
            _ => out.push(c),
        }
    }
    out
}

/// A match: `group(n)`, `groups()`, `start()`, `end()`, `span()`; true in a condition.
#[derive(Debug)]
struct Match {
    groups: Vec<Option<(String, usize, usize)>>,
}

impl Object for Match {
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let index = match args.first() {
            Some(value) => usize::try_from(value.clone()).unwrap_or(0),
            None => 0,
        };
        let group = self.groups.get(index).cloned().flatten();
        Ok(match method {
            "group" => group.map_or(Value::from(()), |(text, _, _)| Value::from(text)),
            "groups" => Value::from(
                self.groups[1..]
                    .iter()
                    .map(|group| {
                        group
                            .as_ref()
                            .map_or(Value::from(()), |(t, _, _)| Value::from(t.clone()))
                    })
                    .collect::<Vec<_>>(),
            ),
            "start" => Value::from(group.map_or(-1, |(_, start, _)| start as i64)),
            "end" => Value::from(group.map_or(-1, |(_, _, end)| end as i64)),
            "span" => Value::from(group.map_or(vec![-1, -1], |(_, s, e)| vec![s as i64, e as i64])),
            other => return Err(unsupported(&format!("match.{other}()"))),
        })
    }

    fn is_true(self: &Arc<Self>) -> bool {
        true
    }
}

/// `modules.datetime`.
#[derive(Debug)]
struct DatetimeModule;

impl Object for DatetimeModule {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(match key.as_str()? {
            "datetime" => Value::from_object(Constructor::DateTime),
            "date" => Value::from_object(Constructor::Date),
            _ => return None,
        })
    }
}

/// `datetime.datetime` and `datetime.date`: callable, with `now()`, `utcnow()`, `today()`.
#[derive(Debug, Clone, Copy)]
enum Constructor {
    DateTime,
    Date,
}

impl Object for Constructor {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn call(self: &Arc<Self>, _state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let (numbers, kwargs) = match args.split_last() {
            Some((last, numbers)) if Kwargs::try_from(last.clone()).is_ok() => {
                (numbers, Kwargs::try_from(last.clone()).ok())
            }
            _ => (args, None),
        };
        let number = |index: usize, default: i64| -> Result<i64, Error> {
            numbers.get(index).map_or(Ok(default), |value| {
                i64::try_from(value.clone()).map_err(|_| {
                    Error::new(ErrorKind::InvalidOperation, "datetime parts are numbers")
                })
            })
        };
        let utc = match &kwargs {
            Some(kwargs) => {
                let zone: Option<Value> = kwargs.get("tzinfo")?;
                kwargs.assert_all_used()?;
                zone.is_some_and(|zone| !zone.is_none())
            }
            None => false,
        };
        let part = |value: i64| u32::try_from(value).unwrap_or(u32::MAX);
        let date = NaiveDate::from_ymd_opt(
            i32::try_from(number(0, 1970)?).unwrap_or(i32::MAX),
            part(number(1, 1)?),
            part(number(2, 1)?),
        )
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "not a valid date"))?;
        let moment = date
            .and_hms_micro_opt(
                part(number(3, 0)?),
                part(number(4, 0)?),
                part(number(5, 0)?),
                part(number(6, 0)?),
            )
            .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "not a valid time"))?;
        Ok(Value::from_object(Moment {
            moment,
            date_only: matches!(**self, Constructor::Date),
            utc,
        }))
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        _args: &[Value],
    ) -> Result<Value, Error> {
        let now = chrono::Utc::now().naive_utc();
        match method {
            "now" | "utcnow" | "today" => Ok(Value::from_object(Moment {
                moment: now,
                date_only: matches!(**self, Constructor::Date),
                utc: false,
            })),
            other => Err(unsupported(&format!("datetime.{other}()"))),
        }
    }
}

/// A `datetime` or `date` value: renders as Python's `str()`.
#[derive(Debug)]
struct Moment {
    moment: NaiveDateTime,
    date_only: bool,
    /// Made with `tzinfo=pytz.timezone('UTC')`: renders with `+00:00`.
    utc: bool,
}

impl Moment {
    fn text(&self, separator: &str) -> String {
        if self.date_only {
            return self.moment.format("%Y-%m-%d").to_string();
        }
        let fraction = if self.moment.nanosecond() >= 1000 {
            format!(".{:06}", self.moment.nanosecond() / 1000)
        } else {
            String::new()
        };
        let zone = if self.utc { "+00:00" } else { "" };
        format!(
            "{}{separator}{}{fraction}{zone}",
            self.moment.format("%Y-%m-%d"),
            self.moment.format("%H:%M:%S")
        )
    }
}

impl Object for Moment {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let value = match key.as_str()? {
            "year" => i64::from(self.moment.year()),
            "month" => i64::from(self.moment.month()),
            "day" => i64::from(self.moment.day()),
            "hour" => i64::from(self.moment.hour()),
            "minute" => i64::from(self.moment.minute()),
            "second" => i64::from(self.moment.second()),
            _ => return None,
        };
        Some(Value::from(value))
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            "strftime" => {
                let (format,): (String,) = from_args(args)?;
                Ok(Value::from(self.moment.format(&format).to_string()))
            }
            "isoformat" => Ok(Value::from(self.text(if self.date_only {
                ""
            } else {
                "T"
            }))),
            "date" => Ok(Value::from_object(Moment {
                moment: self.moment,
                date_only: true,
                utc: false,
            })),
            other => Err(unsupported(&format!("datetime value .{other}()"))),
        }
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text(" "))
    }
}

/// `modules.pytz`: `timezone('UTC')` (other zones would need a time-zone database).
#[derive(Debug)]
struct Pytz;

impl Object for Pytz {
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let (zone,): (String,) = from_args(args)?;
        match (method, zone.as_str()) {
            ("timezone", "UTC" | "utc" | "Etc/UTC") => Ok(Value::from("UTC")),
            ("timezone", other) => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "modules.pytz.timezone('{other}'): Strata knows only UTC at compile time; compute local times in SQL (convert_timezone)"
                ),
            )),
            (other, _) => Err(unsupported(&format!("pytz.{other}()"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str) -> Result<String, String> {
        let mut env = minijinja::Environment::new();
        env.add_global("modules", Value::from_object(Modules));
        env.render_str(template, ()).map_err(|err| err.to_string())
    }

    #[test]
    fn re_answers_as_python() {
        let slug = "{% set s = modules.re.sub('[ -]+', '_', 'Credit card - Visa') | lower %}\
                    {{ modules.re.sub('[^a-z0-9_]+', '', s) }}";
        assert_eq!(render(slug).as_deref(), Ok("credit_card_visa"));
        let groups = "{% set m = modules.re.search('(\\\\d+)-(\\\\d+)', 'v 12-34') %}\
                      {{ m.group(0) }} {{ m.group(2) }} {{ m.start() }} {{ 'yes' if m else 'no' }}";
        assert_eq!(render(groups).as_deref(), Ok("12-34 34 2 yes"));
        assert_eq!(
            render("{{ modules.re.match('b', 'ab') is none }} {{ modules.re.sub('(a)(b)', '\\\\2\\\\1', 'ab') }}").as_deref(),
            Ok("True ba")
        );
        assert_eq!(
            render("{{ modules.re.findall('[a-z]', 'A1b2C', flags=modules.re.IGNORECASE) | join(',') }}").as_deref(),
            Ok("A,b,C")
        );
        assert_eq!(
            render("{{ modules.re.compile('\\\\s+').split('a  b c') | join('|') }}").as_deref(),
            Ok("a|b|c")
        );
        assert!(
            render("{{ modules.re.sub('(?<=a)b', '', 'ab') }}")
                .is_err_and(|e| e.contains("not supported"))
        );
    }

    #[test]
    fn datetime_renders_as_python() {
        assert_eq!(
            render("{{ modules.datetime.date(1997, 9, 29) }}").as_deref(),
            Ok("1997-09-29")
        );
        assert_eq!(
            render("{{ modules.datetime.datetime(1997, 9, 29, 6, 14, 0, tzinfo=modules.pytz.timezone('UTC')) }}").as_deref(),
            Ok("1997-09-29 06:14:00+00:00")
        );
        assert_eq!(
            render("{{ modules.datetime.datetime(2024, 1, 2).strftime('%Y/%m') }} {{ modules.datetime.datetime(2024, 1, 2, 3).isoformat() }}").as_deref(),
            Ok("2024/01 2024-01-02T03:00:00")
        );
        let year = render("{{ modules.datetime.datetime.now().year }}").unwrap_or_default();
        assert!(year.parse::<i32>().is_ok_and(|year| year >= 2026), "{year}");
        assert!(
            render("{{ modules.pytz.timezone('America/Los_Angeles') }}")
                .is_err_and(|e| e.contains("only UTC"))
        );
    }
}
