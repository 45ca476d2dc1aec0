//! The goflow.v1 gRPC API, generated from `goflow/v1/goflow.proto`.

pub mod v1 {
    tonic::include_proto!("goflow.v1");

    /// Encoded `FileDescriptorSet` of goflow.v1, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("goflow_descriptor");
}

pub use v1::*;

/// The address `goflow standalone` listens on for gRPC, and where clients look by default.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:7070";
/// The address `goflow standalone` serves the web UI on by default.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
