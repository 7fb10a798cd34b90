//! Generates Rust types (and tonic services) from `proto/` with `protox`, a
//! pure-Rust protobuf compiler, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/prometheus/types.proto",
        "proto/prometheus/remote.proto",
        "proto/io/prometheus/write/v2/types.proto",
        "proto/strata/store.proto",
        "proto/strata/raft.proto",
        "proto/io/prometheus/client/metrics.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().bytes(".prometheus.Chunk.data").bytes(".strata.raft").compile_fds(fds)?;
    Ok(())
}
