//! Declares the `rampart_loom` cfg (loom model checks of the shutdown's
//! waiter slab: `RUSTFLAGS="--cfg rampart_loom" cargo test --release -p rampart-cancel --lib loom`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(rampart_loom)");
}
