//! dbt Hub packages (`package: dbt-labs/dbt_utils`, `version: [">=1.0.0", "<2.0.0"]`): the
//! Hub's index names each version's git repository and tag; the package is then cloned from
//! there like a `git:` package.
//!
//! The Hub is `https://hub.getdbt.com` (`STRATA_HUB_URL` points elsewhere, such as a mirror);
//! it is read with the machine's `curl`, as git packages are cloned with its `git`.

use std::process::Command;

/// Where the Hub is unless `STRATA_HUB_URL` says otherwise.
pub const DEFAULT_HUB_URL: &str = "https://hub.getdbt.com";

/// A Hub package resolved to the repository and tag holding the chosen version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The version chosen: the highest the range allows.
    pub version: String,
    /// The git repository.
    pub git_url: String,
    /// The tag (or commit) of that version.
    pub revision: String,
}

/// Resolves `name` (`org/package`) at `range` (`1.3.3`, `>=1.0.0, <2.0.0`) through the Hub.
///
/// # Errors
/// A message saying what failed (no network, no such package, no version in the range) and
/// what to do.
pub fn resolve(hub: &str, name: &str, range: &str) -> Result<Resolved, String> {
    let index_url = format!("{}/api/v1/{name}.json", hub.trim_end_matches('/'));
    let index = fetch_json(&index_url)?;
    let versions = index
        .get("versions")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| format!("{index_url} lists no versions"))?;
    let constraints = parse_range(range)?;
    let version = versions
        .keys()
        .filter_map(|text| Some((parse_version(text)?, text)))
        .filter(|(version, _)| version.pre.is_empty() || range.contains('-'))
        .filter(|(version, _)| constraints.iter().all(|c| c.allows(version)))
        .max_by(|(a, _), (b, _)| a.cmp(b))
        .map(|(_, text)| text.clone())
        .ok_or_else(|| {
            let mut known: Vec<&String> = versions.keys().collect();
            known.sort_by_key(|text| parse_version(text));
            let latest: Vec<&str> = known.iter().rev().take(5).map(|s| s.as_str()).collect();
            format!(
                "no version of {name} satisfies '{range}'; the latest are {}",
                latest.join(", ")
            )
        })?;
    let source = match versions[&version].pointer("/_source/url") {
        Some(url) => url.clone(),
        None => {
            let url = format!("{}/api/v1/{name}/{version}.json", hub.trim_end_matches('/'));
            fetch_json(&url)?
                .pointer("/_source/url")
                .cloned()
                .ok_or_else(|| format!("{url} does not name the package's repository"))?
        }
    };
    let source = source
        .as_str()
        .ok_or_else(|| format!("the Hub's repository of {name} {version} is not a URL"))?;
    Ok(Resolved {
        git_url: repository_of(source),
        revision: version.clone(),
        version,
    })
}

/// The repository of a Hub source URL (`https://github.com/org/repo/tree/1.3.3/`).
fn repository_of(source: &str) -> String {
    let trimmed = source.trim_end_matches('/');
    match trimmed.rfind("/tree/") {
        Some(at) => trimmed[..at].to_string(),
        None => trimmed.to_string(),
    }
}

fn fetch_json(url: &str) -> Result<serde_json::Value, String> {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--location", "--max-time", "60", url])
        .output()
        .map_err(|err| {
            format!("cannot run curl ({err}) to read dbt Hub; install curl, or declare the package with `git:`")
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("404") {
            "is the package name right? It is `org/name` as on hub.getdbt.com"
        } else {
            "without network, declare the package by its git repository (`git:` and `revision:`) or copy it under `local:`"
        };
        return Err(format!("cannot read {url}: {}; {hint}", stderr.trim()));
    }
    serde_json::from_slice(&output.stdout).map_err(|err| format!("{url} is not JSON: {err}"))
}

/// A semantic version: numbers, then a pre-release tag (empty for a release, which sorts
/// after its pre-releases).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Version {
    numbers: [u64; 3],
    release: bool,
    pre: String,
}

fn parse_version(text: &str) -> Option<Version> {
    let text = text.trim().trim_start_matches('v');
    let (core, pre) = match text.split_once('-') {
        Some((core, pre)) => (core, pre.to_string()),
        None => (text, String::new()),
    };
    let mut numbers = [0; 3];
    let mut parts = core.split('.');
    for slot in &mut numbers {
        if let Some(part) = parts.next() {
            *slot = part.parse().ok()?;
        }
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Version {
        numbers,
        release: pre.is_empty(),
        pre,
    })
}

/// One constraint of a range: an operator and a version.
struct Constraint {
    operator: &'static str,
    version: Version,
}

impl Constraint {
    fn allows(&self, candidate: &Version) -> bool {
        let order = candidate.cmp(&self.version);
        match self.operator {
            ">=" => order.is_ge(),
            ">" => order.is_gt(),
            "<=" => order.is_le(),
            "<" => order.is_lt(),
            _ => order.is_eq(),
        }
    }
}

/// `1.3.3`, `=1.3.3`, `>=1.0.0, <2.0.0` (a YAML list arrives joined with commas).
fn parse_range(range: &str) -> Result<Vec<Constraint>, String> {
    range
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let operator = [">=", "<=", ">", "<", "="]
                .into_iter()
                .find(|operator| part.starts_with(operator))
                .unwrap_or("=");
            let version = parse_version(part.trim_start_matches(operator))
                .ok_or_else(|| format!("'{part}' is not a version constraint such as '>=1.0.0'"))?;
            Ok(Constraint { operator, version })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_choose_the_highest_allowed_release() {
        let versions = ["0.9.6", "1.0.0", "1.1.1", "1.3.0-b1", "1.3.0", "2.0.0"];
        let choose = |range: &str| -> Option<&str> {
            let constraints = parse_range(range).unwrap_or_default();
            versions
                .iter()
                .filter_map(|text| Some((parse_version(text)?, *text)))
                .filter(|(v, _)| v.pre.is_empty() || range.contains('-'))
                .filter(|(v, _)| constraints.iter().all(|c| c.allows(v)))
                .max_by(|(a, _), (b, _)| a.cmp(b))
                .map(|(_, text)| text)
        };
        assert_eq!(choose(">=1.0.0, <2.0.0"), Some("1.3.0"));
        assert_eq!(choose("1.1.1"), Some("1.1.1"));
        assert_eq!(choose("=0.9.6"), Some("0.9.6"));
        assert_eq!(choose(">2.0.0"), None);
        assert!(parse_range(">=one").is_err());
        assert_eq!(
            repository_of("https://github.com/dbt-labs/dbt-utils/tree/1.3.0/"),
            "https://github.com/dbt-labs/dbt-utils"
        );
    }
}
