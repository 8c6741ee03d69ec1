//! The `strata` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = strata::Cli::parse();
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    // The long-running processes log to standard error (STRATA_LOG filters, as RUST_LOG does).
    if matches!(
        cli.command,
        strata::Command::Coordinator(_) | strata::Command::Worker(_)
    ) {
        let filter = env
            .get("STRATA_LOG")
            .map_or("info,lapin=warn,h2=warn,tower=warn", String::as_str);
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    match strata::execute(cli, &env) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
