//! Generates the Loki push message types from proto/loki/push.proto and the gRPC API
//! (proto/loganalyzer/v1) with its descriptor set for server reflection (prost and tonic; needs
//! `protoc`, which scripts/tools.sh installs).

fn main() {
    println!("cargo:rerun-if-changed=proto");
    prost_build::compile_protos(&["proto/loki/push.proto"], &["proto"]).expect("compiling proto/loki/push.proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    tonic_build::configure()
        .build_client(false)
        .file_descriptor_set_path(out.join("loganalyzer_descriptor.bin"))
        // The replies are read from the REST answers' JSON, whose fields they share by name.
        .type_attribute(".loganalyzer.v1", "#[derive(serde::Deserialize)] #[serde(default)]")
        .compile(&["proto/loganalyzer/v1/stats.proto", "proto/loganalyzer/v1/ingest.proto"], &["proto"])
        .expect("compiling proto/loganalyzer/v1");
}
