//! Generates Rust types for `strata/v1/*.proto` into OUT_DIR with the vendored protoc, so a
//! fresh machine needs no protoc install: messages for every file, gRPC client and server for
//! `PipelineService`, and a file descriptor set the coordinator serves through gRPC reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["strata/v1/task.proto", "strata/v1/pipeline.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("strata_descriptor.bin"))
        .compile_with_config(config, &protos, &["."])?;
    Ok(())
}
