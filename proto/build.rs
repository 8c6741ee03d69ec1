//! Generates Rust types for `strata/v1/*.proto` into OUT_DIR with the vendored protoc, so a
//! fresh machine needs no protoc install.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["strata/v1/task.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.compile_protos(&protos, &["."])?;
    Ok(())
}
