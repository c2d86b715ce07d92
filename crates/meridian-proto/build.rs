fn main() -> Result<(), Box<dyn std::error::Error>> {
    // No system protoc on our machines: use the vendored one.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files =
        ["config.proto", "cluster.proto", "raft.proto", "agent.proto"].map(|f| root.join("meridian/v1").join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    tonic_prost_build::configure().compile_protos(&files, &[root])?;
    Ok(())
}
