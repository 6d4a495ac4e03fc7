//! Generates the Loki push message types from proto/loki/push.proto and the gRPC API
//! (proto/loganalyzer/v1) with its descriptor set for server reflection (prost and tonic). protoc
//! comes with the protoc-bin-vendored crate unless `PROTOC` names another.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    if std::env::var_os("PROTOC").is_none() {
        let protoc =
            protoc_bin_vendored::protoc_bin_path().expect("protoc-bin-vendored has a protoc for this platform");
        // A build script is one thread: prost-build reads PROTOC after this.
        std::env::set_var("PROTOC", protoc);
    }
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
