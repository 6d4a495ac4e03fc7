//! Generates the Loki push message types from proto/loki/push.proto (prost; needs `protoc`, which
//! scripts/tools.sh installs).

fn main() {
    println!("cargo:rerun-if-changed=proto/loki/push.proto");
    prost_build::compile_protos(&["proto/loki/push.proto"], &["proto"]).expect("compiling proto/loki/push.proto");
}
