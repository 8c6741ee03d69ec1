//! What a process's telemetry does, from the standard OpenTelemetry variables and Strata's own.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::export::QueueSettings;

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors (`STRATA_LOG_FORMAT=json`).
    Json,
}

/// The OTLP transport (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// `grpc` (the default): the collector's gRPC port, 4317 by convention.
    #[default]
    Grpc,
    /// `http/protobuf`: the collector's HTTP port, 4318 by convention.
    HttpProtobuf,
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// The collector's endpoint (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub endpoint: String,
    /// The transport.
    pub protocol: OtlpProtocol,
    /// How long one export may take before it is abandoned (`OTEL_EXPORTER_OTLP_TIMEOUT`, in
    /// milliseconds); an unreachable collector costs at most this at shutdown.
    pub timeout: Duration,
    /// Extra resource attributes (`OTEL_RESOURCE_ATTRIBUTES`: `k=v,k=v`).
    pub resource_attributes: Vec<(String, String)>,
    /// The fraction of runs traced (`OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`):
    /// 1 for `always_on` (the default), 0 for `always_off`, the argument for the ratio
    /// samplers. A span whose parent was sampled is always sampled.
    pub sample_ratio: f64,
    /// How ended spans queue for export (`OTEL_BSP_MAX_QUEUE_SIZE`,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_SCHEDULE_DELAY` in ms).
    pub queue: QueueSettings,
}

/// Everything a process's telemetry needs.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// `service.name` (`OTEL_SERVICE_NAME`, else the role: `strata-worker`, …).
    pub service_name: String,
    /// Which log lines are written (`STRATA_LOG`, in `RUST_LOG` syntax); none when empty.
    pub log_filter: String,
    /// How log lines look (`STRATA_LOG_FORMAT`: `text` or `json`).
    pub log_format: LogFormat,
    /// Span export, when an endpoint is configured and the SDK is not disabled
    /// (`OTEL_SDK_DISABLED=true`).
    pub otlp: Option<OtlpSettings>,
}

/// The default export timeout: short, so that an absent collector never holds up an exit.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

impl TelemetrySettings {
    /// Reads the settings of a process of role `service_name` from `env`; `log_filter` is the
    /// default filter when `STRATA_LOG` is not set.
    ///
    /// # Errors
    /// A message naming the variable whose value is not understood.
    pub fn from_env(
        env: &BTreeMap<String, String>,
        service_name: &str,
        log_filter: &str,
    ) -> Result<TelemetrySettings, String> {
        let get = |name: &str| {
            env.get(name)
                .map(|value| value.trim())
                .filter(|v| !v.is_empty())
        };
        let log_format = match get("STRATA_LOG_FORMAT") {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(format!("STRATA_LOG_FORMAT is '{other}': use text or json"));
            }
        };
        let disabled = get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let endpoint =
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or(get("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let otlp = match endpoint {
            Some(endpoint) if !disabled => Some(OtlpSettings {
                endpoint: endpoint.to_string(),
                protocol: protocol(
                    get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                        .or(get("OTEL_EXPORTER_OTLP_PROTOCOL")),
                )?,
                timeout: match get("OTEL_EXPORTER_OTLP_TIMEOUT") {
                    Some(millis) => Duration::from_millis(millis.parse().map_err(|_| {
                        format!("OTEL_EXPORTER_OTLP_TIMEOUT is '{millis}': give milliseconds")
                    })?),
                    None => DEFAULT_TIMEOUT,
                },
                resource_attributes: resource_attributes(get("OTEL_RESOURCE_ATTRIBUTES"))?,
                sample_ratio: sample_ratio(
                    get("OTEL_TRACES_SAMPLER"),
                    get("OTEL_TRACES_SAMPLER_ARG"),
                )?,
                queue: queue_settings(&get)?,
            }),
            _ => None,
        };
        Ok(TelemetrySettings {
            service_name: get("OTEL_SERVICE_NAME").unwrap_or(service_name).to_string(),
            log_filter: get("STRATA_LOG").unwrap_or(log_filter).to_string(),
            log_format,
            otlp,
        })
    }
}

fn queue_settings<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<QueueSettings, String> {
    let number = |name: &str, default: usize| match get(name) {
        None => Ok(default),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|number| *number > 0)
            .ok_or_else(|| format!("{name} is '{text}': give a positive whole number")),
    };
    let defaults = QueueSettings::default();
    Ok(QueueSettings {
        max_queue_size: number("OTEL_BSP_MAX_QUEUE_SIZE", defaults.max_queue_size)?,
        max_export_batch_size: number(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            defaults.max_export_batch_size,
        )?,
        schedule_delay: Duration::from_millis(number(
            "OTEL_BSP_SCHEDULE_DELAY",
            defaults.schedule_delay.as_millis() as usize,
        )? as u64),
    })
}

fn protocol(value: Option<&str>) -> Result<OtlpProtocol, String> {
    match value {
        None | Some("grpc") => Ok(OtlpProtocol::Grpc),
        Some("http/protobuf") => Ok(OtlpProtocol::HttpProtobuf),
        Some(other) => Err(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL is '{other}': use grpc or http/protobuf"
        )),
    }
}

fn resource_attributes(value: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
                .ok_or_else(|| {
                    format!("OTEL_RESOURCE_ATTRIBUTES has '{pair}': write key=value,key=value")
                })
        })
        .collect()
}

fn sample_ratio(sampler: Option<&str>, argument: Option<&str>) -> Result<f64, String> {
    let ratio = || -> Result<f64, String> {
        match argument {
            None => Ok(1.0),
            Some(text) => text
                .parse::<f64>()
                .ok()
                .filter(|ratio| (0.0..=1.0).contains(ratio))
                .ok_or_else(|| {
                    format!("OTEL_TRACES_SAMPLER_ARG is '{text}': give a ratio from 0 to 1")
                }),
        }
    };
    match sampler {
        None | Some("always_on" | "parentbased_always_on") => Ok(1.0),
        Some("always_off" | "parentbased_always_off") => Ok(0.0),
        Some("traceidratio" | "parentbased_traceidratio") => ratio(),
        Some(other) => Err(format!(
            "OTEL_TRACES_SAMPLER is '{other}': use always_on, always_off, traceidratio or their parentbased_ forms"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        let settings = TelemetrySettings::from_env(&env(&[]), "strata-worker", "info").unwrap();
        assert_eq!(settings.otlp, None);
        assert_eq!(settings.service_name, "strata-worker");
        assert_eq!(settings.log_format, LogFormat::Text);
    }

    #[test]
    fn the_standard_variables_configure_the_export() {
        let settings = TelemetrySettings::from_env(
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_SERVICE_NAME", "etl"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=prod, team=data",
                ),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("STRATA_LOG_FORMAT", "json"),
            ]),
            "strata-worker",
            "info",
        )
        .unwrap();
        let otlp = settings.otlp.unwrap();
        assert_eq!(otlp.endpoint, "http://collector:4317");
        assert_eq!(otlp.protocol, OtlpProtocol::Grpc);
        assert_eq!(otlp.sample_ratio, 0.25);
        assert_eq!(otlp.queue, QueueSettings::default());
        assert_eq!(otlp.resource_attributes[1], ("team".into(), "data".into()));
        assert_eq!(settings.service_name, "etl");
        assert_eq!(settings.log_format, LogFormat::Json);
    }

    #[test]
    fn wrong_values_name_their_variable() {
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_BSP_SCHEDULE_DELAY", "1s"),
        ] {
            let error = TelemetrySettings::from_env(
                &env(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                    (name, value),
                ]),
                "strata",
                "info",
            )
            .unwrap_err();
            assert!(error.starts_with(name), "{error}");
        }
        let disabled = TelemetrySettings::from_env(
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_SDK_DISABLED", "true"),
            ]),
            "strata",
            "info",
        )
        .unwrap();
        assert_eq!(disabled.otlp, None);
    }
}
