//! Declares the `rampart_loom` cfg (loom model checks of the semaphore:
//! `RUSTFLAGS="--cfg rampart_loom" cargo test --release -p rampart-limit --lib loom`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(rampart_loom)");
}
