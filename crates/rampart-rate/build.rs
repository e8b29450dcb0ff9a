//! Build script: declares the `loom` cfg of the model checks.

fn main() {
    // `--cfg loom` runs the model checks in `src/store.rs`.
    println!("cargo::rustc-check-cfg=cfg(loom)");
}
