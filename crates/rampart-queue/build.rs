//! Declares the `rampart_loom` cfg (loom model checks of the answer slots:
//! `RUSTFLAGS="--cfg rampart_loom" cargo test --release -p rampart-queue --lib loom`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(rampart_loom)");
}
