//! The HTTP connector: a JSON API read page by page (cursor, offset, page number or `Link`
//! header), under a rate limit, with retries that honour `Retry-After`.
//!
//! The position is the next request and how many of its records are landed already: a run
//! that ended on the last page asks for that page again next time and lands only records
//! that were not there before, so an append-only feed is followed without duplicates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use strata_core::retry::Backoff;

use crate::IngestError;
use crate::connector::{Chunk, Connector};
use crate::landing::ChunkWriter;
use crate::quarantine::Reject;
use crate::spec::{HttpSpec, NestedPolicy, Pagination};
use crate::state::SourceState;

/// The next request and the records of its response already landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HttpPosition {
    url: String,
    skip: usize,
}

/// Waits between retries of a failed request when the server does not say how long.
const RETRY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));

/// Reads one API.
pub struct HttpConnector {
    spec: HttpSpec,
    client: reqwest::Client,
    headers: reqwest::header::HeaderMap,
    retries: u32,
    source_name: String,
    last_request: Option<Instant>,
}

/// One page as read: its records and the next page's URL.
struct Page {
    records: Vec<serde_json::Value>,
    next: Option<String>,
}

impl HttpConnector {
    /// A connector for `spec`; secrets in its headers are resolved now.
    ///
    /// # Errors
    /// A secret that cannot be resolved, or a header that is not valid.
    pub fn new(spec: HttpSpec, retries: u32, source_name: &str) -> Result<Self, IngestError> {
        let spec_error = |reason: String| IngestError::Connect {
            source_name: source_name.to_string(),
            reason,
        };
        let mut headers = reqwest::header::HeaderMap::new();
        let mut add = |name: &str, value: &str| -> Result<(), IngestError> {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|err| spec_error(format!("header name '{name}': {err}")))?;
            let mut value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| spec_error(format!("the value of header '{name}' is not valid")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
            Ok(())
        };
        if let Some(token) = &spec.bearer_token {
            add(
                "authorization",
                &format!("Bearer {}", token.resolve()?.expose()),
            )?;
        }
        for (name, value) in &spec.headers {
            add(name, value.resolve()?.expose())?;
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(spec.timeout_secs))
            .build()
            .map_err(|err| spec_error(err.to_string()))?;
        Ok(HttpConnector {
            spec,
            client,
            headers,
            retries,
            source_name: source_name.to_string(),
            last_request: None,
        })
    }

    /// The first request: the URL with the pagination's first parameters.
    fn first_url(&self) -> Result<String, IngestError> {
        let mut url = self.parse_url(&self.spec.url)?;
        match &self.spec.pagination {
            Pagination::Offset {
                param,
                limit_param,
                limit,
            } => {
                set_param(&mut url, param, "0");
                set_param(&mut url, limit_param, &limit.to_string());
            }
            Pagination::Page { param, start } => set_param(&mut url, param, &start.to_string()),
            Pagination::None | Pagination::Cursor { .. } | Pagination::Link => {}
        }
        Ok(url.to_string())
    }

    fn parse_url(&self, text: &str) -> Result<url::Url, IngestError> {
        url::Url::parse(text).map_err(|err| IngestError::Connect {
            source_name: self.source_name.clone(),
            reason: format!("invalid URL {text}: {err}"),
        })
    }

    /// Waits for the rate limit, then sends; retries transient failures.
    async fn get(&mut self, url: &str) -> Result<reqwest::Response, IngestError> {
        let mut attempt = 0;
        loop {
            self.pace().await;
            let sent = self
                .client
                .get(url)
                .headers(self.headers.clone())
                .send()
                .await;
            let (reason, wait) = match sent {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let transient = status.as_u16() == 429 || status.is_server_error();
                    if !transient {
                        return Err(IngestError::Read {
                            source_name: self.source_name.clone(),
                            position: url.to_string(),
                            reason: format!("the server answered {status}"),
                        });
                    }
                    (
                        format!("the server answered {status}"),
                        retry_after(&response),
                    )
                }
                Err(err) => (format!("request failed: {}", without_url(&err)), None),
            };
            attempt += 1;
            if attempt > self.retries {
                return Err(IngestError::Connect {
                    source_name: self.source_name.clone(),
                    reason: format!("{reason} at {url}, after {} retries", self.retries),
                });
            }
            let wait = wait.unwrap_or_else(|| RETRY_BACKOFF.delay(attempt));
            tracing::info!(source = %self.source_name, %url, %reason, wait_ms = wait.as_millis() as u64, "retrying request");
            tokio::time::sleep(wait).await;
        }
    }

    async fn pace(&mut self) {
        if self.spec.requests_per_second > 0.0 {
            let interval = Duration::from_secs_f64(1.0 / self.spec.requests_per_second);
            if let Some(last) = self.last_request {
                let due = last + interval;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        self.last_request = Some(Instant::now());
    }

    /// Requests one page; a body that is not JSON is retried, then returned as an error
    /// string for quarantine.
    async fn page(&mut self, url: &str) -> Result<Result<Page, String>, IngestError> {
        let response = self.get(url).await?;
        let link_next = next_link(response.headers());
        let body = response.bytes().await.map_err(|err| IngestError::Read {
            source_name: self.source_name.clone(),
            position: url.to_string(),
            reason: without_url(&err),
        })?;
        let document: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(document) => document,
            Err(err) => return Ok(Err(format!("the response is not JSON: {err}"))),
        };
        let Some(records) = at_path(&document, &self.spec.records) else {
            return Ok(Err(format!(
                "the response has no list at `{}`",
                self.spec.records
            )));
        };
        let records = records.clone();
        let next = self.next_url(url, &document, records.len(), link_next)?;
        Ok(Ok(Page { records, next }))
    }

    fn next_url(
        &self,
        url: &str,
        document: &serde_json::Value,
        records: usize,
        link_next: Option<String>,
    ) -> Result<Option<String>, IngestError> {
        let mut next = self.parse_url(url)?;
        match &self.spec.pagination {
            Pagination::None => return Ok(None),
            Pagination::Link => return Ok(link_next),
            Pagination::Cursor { cursor_path, param } => {
                let cursor = match path_value(document, cursor_path) {
                    Some(serde_json::Value::String(text)) if !text.is_empty() => text.clone(),
                    Some(serde_json::Value::Number(number)) => number.to_string(),
                    _ => return Ok(None),
                };
                set_param(&mut next, param, &cursor);
            }
            Pagination::Offset { param, limit, .. } => {
                if (records as u64) < *limit {
                    return Ok(None);
                }
                let offset: u64 = query_param(&next, param).unwrap_or(0);
                set_param(&mut next, param, &(offset + records as u64).to_string());
            }
            Pagination::Page { param, start } => {
                if records == 0 {
                    return Ok(None);
                }
                let page: u64 = query_param(&next, param).unwrap_or(*start);
                set_param(&mut next, param, &(page + 1).to_string());
            }
        }
        Ok(Some(next.to_string()))
    }
}

#[async_trait::async_trait]
impl Connector for HttpConnector {
    async fn read_chunk(
        &mut self,
        state: &SourceState,
        mut chunk: ChunkWriter,
    ) -> Result<Option<Chunk>, IngestError> {
        let resumed: Option<HttpPosition> =
            state.position_as().map_err(|reason| IngestError::State {
                table: self.source_name.clone(),
                reason,
            })?;
        // Without pagination every run reads the whole response again.
        let mut position = match resumed {
            Some(position) if !matches!(self.spec.pagination, Pagination::None) => position,
            _ => HttpPosition {
                url: self.first_url()?,
                skip: 0,
            },
        };
        let mut landed_any = false;
        for _ in 0..self.spec.pages_per_commit {
            let url = position.url.clone();
            let page = match self.page(&url).await? {
                Ok(page) => page,
                Err(reason) => {
                    chunk.reject(Reject::new(url.clone(), reason, None))?;
                    // Without the page the next one is unknown: stop here and ask for it
                    // again next run.
                    return Ok(Some(Chunk {
                        parts: vec![chunk],
                        position: to_json(&position)?,
                        last: true,
                    }));
                }
            };
            let fresh = page.records.len().saturating_sub(position.skip);
            if fresh > 0 {
                let records: Vec<(usize, serde_json::Value)> = page
                    .records
                    .into_iter()
                    .enumerate()
                    .skip(position.skip)
                    .map(|(index, record)| (index, nested(record, self.spec.nested)))
                    .collect();
                land_records(&records, |index| format!("{url}#{index}"), &mut chunk).await?;
                landed_any = true;
            }
            // A server that names the same page as the next one has no more pages.
            match page.next.filter(|next| *next != url) {
                Some(next) => {
                    position = HttpPosition { url: next, skip: 0 };
                }
                None => {
                    let skip = position.skip + fresh;
                    if !landed_any && !matches!(self.spec.pagination, Pagination::None) {
                        return Ok(None);
                    }
                    return Ok(Some(Chunk {
                        parts: vec![chunk],
                        position: to_json(&HttpPosition { url, skip })?,
                        last: true,
                    }));
                }
            }
        }
        Ok(Some(Chunk {
            parts: vec![chunk],
            position: to_json(&position)?,
            last: false,
        }))
    }
}

fn to_json(position: &HttpPosition) -> Result<serde_json::Value, IngestError> {
    serde_json::to_value(position).map_err(|err| IngestError::Internal(err.to_string()))
}

/// Lands JSON records: their columns inferred from them, a record whose values do not fit
/// the columns (or that is not an object) quarantined with `position(index)`.
pub(crate) async fn land_records(
    records: &[(usize, serde_json::Value)],
    position: impl Fn(usize) -> String,
    chunk: &mut ChunkWriter,
) -> Result<(), IngestError> {
    let mut objects = Vec::with_capacity(records.len());
    for (index, record) in records {
        if record.is_object() {
            objects.push((*index, record));
        } else {
            chunk.reject(Reject::new(
                position(*index),
                "the record is not a JSON object",
                Some(&record.to_string()),
            ))?;
        }
    }
    if objects.is_empty() {
        return Ok(());
    }
    let inferred = arrow::json::reader::infer_json_schema_from_iterator(
        objects.iter().map(|(_, record)| Ok((*record).clone())),
    )
    .map_err(|err| IngestError::Internal(err.to_string()))?;
    let schema = held_schema(&inferred, chunk.data_schema());
    let decode = |values: &[&serde_json::Value]| {
        let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(&schema))
            .with_coerce_primitive(true)
            .build_decoder()?;
        decoder.serialize(values)?;
        decoder.flush()
    };
    let all: Vec<&serde_json::Value> = objects.iter().map(|(_, record)| *record).collect();
    if let Ok(Some(batch)) = decode(&all) {
        return chunk.write(batch).await;
    }
    // Some record does not fit: find which, land the others.
    let mut fitting = Vec::with_capacity(objects.len());
    for (index, record) in &objects {
        match decode(&[*record]) {
            Ok(_) => fitting.push(*record),
            Err(err) => chunk.reject(Reject::new(
                position(*index),
                format!("the record does not fit the table's columns: {err}"),
                Some(&record.to_string()),
            ))?,
        }
    }
    if let Ok(Some(batch)) = decode(&fitting) {
        chunk.write(batch).await?;
    }
    Ok(())
}

/// The columns records are read with: those the table has keep its types (the schema is
/// held); new ones take the inferred type.
fn held_schema(inferred: &Schema, table: Option<&SchemaRef>) -> SchemaRef {
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|field| {
            table
                .and_then(|table| table.field_with_name(field.name()).ok())
                .map_or_else(|| field.as_ref().clone(), Clone::clone)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Under `nested: json`, an object's nested objects and lists become JSON text.
fn nested(record: serde_json::Value, policy: NestedPolicy) -> serde_json::Value {
    match (policy, record) {
        (NestedPolicy::Json, serde_json::Value::Object(fields)) => serde_json::Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| {
                    let value = if value.is_object() || value.is_array() {
                        serde_json::Value::String(value.to_string())
                    } else {
                        value
                    };
                    (key, value)
                })
                .collect(),
        ),
        (_, record) => record,
    }
}

/// The list at a dotted path (`data.items`; empty: the document itself).
fn at_path<'a>(document: &'a serde_json::Value, path: &str) -> Option<&'a Vec<serde_json::Value>> {
    path_value(document, path)?.as_array()
}

fn path_value<'a>(document: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.')
        .filter(|part| !part.is_empty())
        .try_fold(document, |value, part| value.get(part))
}

fn set_param(url: &mut url::Url, name: &str, value: &str) {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| key != name)
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(name, value);
}

fn query_param(url: &url::Url, name: &str) -> Option<u64> {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .and_then(|(_, value)| value.parse().ok())
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find(|link| {
            link.split(';')
                .skip(1)
                .any(|param| matches!(param.trim(), "rel=\"next\"" | "rel=next"))
        })
        .and_then(|link| {
            let target = link.split(';').next()?.trim();
            Some(target.strip_prefix('<')?.strip_suffix('>')?.to_string())
        })
}

/// The longest `Retry-After` honoured: a server asking for more is asked again sooner.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// `Retry-After`, when the server sent it.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    retry_after_delay(value, chrono::Utc::now())
}

/// The wait a `Retry-After` value asks for at `now`: seconds, or an HTTP date (a date in the
/// past asks for none); at most [`MAX_RETRY_AFTER`].
fn retry_after_delay(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            (date.with_timezone(&chrono::Utc) - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// A request error without its URL (which may carry a token in its query).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_an_http_date_and_is_bounded() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(retry_after_delay(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after_delay("Thu, 03 Dec 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after_delay("Thu, 03 Dec 2026 09:59:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after_delay("86400", now), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after_delay("soon", now), None);
    }

    #[test]
    fn the_link_header_gives_the_next_page() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::LINK,
            "<https://api/x?page=1>; rel=\"prev\", <https://api/x?page=3>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(next_link(&headers).as_deref(), Some("https://api/x?page=3"));
        headers.clear();
        assert_eq!(next_link(&headers), None);
    }

    #[test]
    fn parameters_are_replaced_and_nested_values_become_text() {
        let mut url = url::Url::parse("http://api/items?limit=10&offset=0").unwrap();
        set_param(&mut url, "offset", "10");
        assert_eq!(url.as_str(), "http://api/items?limit=10&offset=10");
        let record = serde_json::json!({"id": 1, "tags": ["a"], "owner": {"n": 1}});
        assert_eq!(
            nested(record, NestedPolicy::Json),
            serde_json::json!({"id": 1, "tags": "[\"a\"]", "owner": "{\"n\":1}"})
        );
        let document = serde_json::json!({"data": {"items": [1, 2]}});
        assert_eq!(at_path(&document, "data.items").map(Vec::len), Some(2));
    }
}
