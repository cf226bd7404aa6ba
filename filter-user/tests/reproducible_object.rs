//! The XDP object is the same bytes wherever the checkout lives, so the program CI verifies
//! (and counts, `kernel_return_traffic::zz_verifier_instruction_counts`) is the one a
//! developer measured. Without `filter-ebpf/rustc-stable-ids` the checkout's path reached the
//! code through cargo's crate hashes, and one source verified 31,001 or 45,676 instructions.

#[path = "../bpf_toolchain.rs"]
#[expect(dead_code, reason = "only the build command is needed here")]
mod bpf_toolchain;

use std::{
    fs,
    path::{Path, PathBuf},
};

/// A scratch directory removed on drop, so a failing assertion leaves nothing behind.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Copy `from` to `to` recursively, leaving out build output.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "target" {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Build the object from a copy of the sources under `scratch/<checkout>` and return it.
fn build_in(scratch: &Path, checkout: &str) -> Vec<u8> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let root = scratch.join(checkout);
    for crate_dir in ["filter-ebpf", "filter-common"] {
        copy_tree(&workspace.join(crate_dir), &root.join(crate_dir));
    }
    // filter-common inherits its package fields from the workspace manifest.
    fs::copy(workspace.join("Cargo.toml"), root.join("Cargo.toml")).unwrap();
    let toolchain = bpf_toolchain::detect()
        .expect("no BPF toolchain: run `cargo xtask setup` (the test builds the XDP object)");
    let target_dir = scratch.join(format!("{checkout}-target"));
    let status = bpf_toolchain::build_command(
        &toolchain,
        &root.join("filter-ebpf"),
        &target_dir,
        bpf_toolchain::NODEGATE_BIN,
    )
    .arg("--quiet")
    .status()
    .unwrap();
    assert!(
        status.success(),
        "building the object in {}",
        root.display()
    );
    fs::read(bpf_toolchain::built_object(
        &target_dir,
        bpf_toolchain::NODEGATE_BIN,
    ))
    .unwrap()
}

#[test]
fn the_object_does_not_depend_on_where_the_checkout_lives() {
    let scratch =
        Scratch(std::env::temp_dir().join(format!("nodegate-reproducible-{}", std::process::id())));
    let elsewhere = build_in(&scratch.0, "another-checkout-at-a-longer-path");
    // The embedded object, unless the build took a prebuilt one (NODEGATE_EBPF_OBJECT, as the
    // experiments do): then a second copy at another path is the reference.
    let reference = match option_env!("NODEGATE_EBPF_OBJECT") {
        None => filter_user::object::ebpf_object()
            .expect("the embedded object (run `cargo xtask setup`)")
            .to_vec(),
        Some(_) => build_in(&scratch.0, "x"),
    };
    assert!(
        elsewhere == reference,
        "the XDP object built in another directory differs from this checkout's ({} and {} \
         bytes): something path-dependent reaches the code; see filter-ebpf/rustc-stable-ids",
        elsewhere.len(),
        reference.len()
    );
}
