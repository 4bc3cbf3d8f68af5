//! The `mcs.v1` gRPC API of mcsd.
//!
//! Generated from `proto/mcs/v1/mcs.proto` at build time. The daemon's
//! service layer and the client library are the only users; mcsd's domain
//! code never sees these types.

/// Version 1 of the API: messages, the `Labels` client and server stubs.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("mcs.v1");

    /// Encoded `FileDescriptorSet` of the API, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/mcs_v1_descriptor.bin"));
}
