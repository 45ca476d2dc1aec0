use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // The descriptor set feeds server reflection, so grpcurl and friends need no .proto.
        .file_descriptor_set_path(out.join("goflow_descriptor.bin"))
        .compile_protos(&["goflow/v1/goflow.proto"], &["."])?;
    println!("cargo:rerun-if-changed=goflow/v1/goflow.proto");
    Ok(())
}
