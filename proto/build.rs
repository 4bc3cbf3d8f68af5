//! Compiles `proto/mcs/v1/*.proto` with protox, a pure-Rust protobuf
//! compiler, so the API crate (and every client of it) builds without a
//! system `protoc`. (The daemon's etcd client does need one for etcd's own
//! protos; `dev.sh` installs it.)

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/mcs/v1/mcs.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["proto"])?;

    // Encoded descriptors back gRPC server reflection, so tools like grpcurl
    // work without the .proto files.
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("mcs_v1_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
