//! Generates Rust types from `proto/` with `protox` (a pure-Rust protobuf
//! compiler), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files =
        ["proto/prometheus/types.proto", "proto/prometheus/remote.proto", "proto/io/prometheus/write/v2/types.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let mut config = prost_build::Config::new();
    config.bytes([".prometheus.Chunk.data"]);
    config.compile_fds(fds)?;
    Ok(())
}
