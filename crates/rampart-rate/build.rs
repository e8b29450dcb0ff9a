//! Build script: declares the `rampart_loom` cfg of the model checks.

fn main() {
    // `--cfg rampart_loom` runs the model checks in `src/store.rs`.
    println!("cargo::rustc-check-cfg=cfg(rampart_loom)");
}
