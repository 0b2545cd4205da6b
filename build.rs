//! Compiles `proto/` into Rust (tonic + prost) and writes the descriptor set that gRPC
//! reflection serves. protoc comes vendored, so building needs no system packages.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "proto/voicesearch/v1/search.proto",
        "proto/voicesearch/v1/catalog.proto",
        "proto/voicesearch/v1/voice_search.proto",
        "proto/voicesearch/v1/monitor.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("voicesearch_descriptor.bin"))
        .compile_protos(
            &protos.map(std::path::PathBuf::from),
            &[
                std::path::PathBuf::from("proto"),
                protoc_bin_vendored::include_path()?,
            ],
        )?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
