//! The `strata` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = strata::Cli::parse();
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    match strata::execute(cli, &env) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
