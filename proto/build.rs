//! Compiles the .proto files with protox (pure Rust), so a fresh machine needs no `protoc`.
//! tonic stubs are generated only with the `grpc` feature.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/kv.proto", "proto/auth.proto", "proto/rpc.proto", "proto/peer.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    compile(descriptors)
}

#[cfg(feature = "grpc")]
fn compile(descriptors: prost_types::FileDescriptorSet) -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}

#[cfg(not(feature = "grpc"))]
fn compile(descriptors: prost_types::FileDescriptorSet) -> Result<(), Box<dyn std::error::Error>> {
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
