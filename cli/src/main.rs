//! The `strata` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = strata::Cli::parse();
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    // The long-running processes log to standard error (STRATA_LOG filters, as RUST_LOG
    // does); every process exports spans when OTEL_EXPORTER_OTLP_ENDPOINT says where.
    let (service, log_filter) = match cli.command {
        strata::Command::Coordinator(_) => ("strata-coordinator", LONG_RUNNING_LOGS),
        strata::Command::Worker(_) => ("strata-worker", LONG_RUNNING_LOGS),
        _ => ("strata", ""),
    };
    let telemetry = match strata_telemetry::TelemetrySettings::from_env(&env, service, log_filter)
        .map_err(anyhow::Error::msg)
        .and_then(|settings| Ok(strata_telemetry::init(&settings)?))
    {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let code = match strata::execute(cli, &env) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    };
    // Exports the spans still queued (bounded by the export timeout).
    telemetry.shutdown();
    code
}

/// What the coordinator and workers log unless STRATA_LOG says otherwise.
const LONG_RUNNING_LOGS: &str =
    "info,lapin=warn,h2=warn,tower=warn,buoyant_kernel=warn,delta_kernel=warn,deltalake=warn";
