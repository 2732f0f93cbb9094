//! Generates the kubelet device plugin API (v1beta1) from the vendored proto.
//! Needs `protoc` (Debian/Ubuntu: `apt-get install protobuf-compiler`), or
//! `PROTOC` pointing at one.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/api.proto"], &["proto"])?;
    Ok(())
}
