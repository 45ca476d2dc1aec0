//! The goflow.v1 gRPC API, generated from `goflow/v1/goflow.proto`.

pub mod v1 {
    tonic::include_proto!("goflow.v1");

    /// Encoded `FileDescriptorSet` of goflow.v1, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("goflow_descriptor");
}

pub use v1::*;

/// The address `goflow standalone` listens on for gRPC, and where clients look by default.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:7070";
/// The largest DAG document an apply takes, in bytes: 32 MiB holds well over 100,000 tasks.
/// gRPC's default limit of a message, 4 MiB, refused a 9.7 MB file with tonic's raw words.
pub const MAX_DOCUMENT_BYTES: usize = 32 << 20;
/// The largest message a goflow server decodes: a maximal document with room for the rest.
pub const MAX_REQUEST_BYTES: usize = MAX_DOCUMENT_BYTES + (1 << 20);

/// `9.7 MB`: a size as people say it (decimal megabytes, one decimal).
pub fn megabytes(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

/// The address `goflow standalone` serves the web UI on by default.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
