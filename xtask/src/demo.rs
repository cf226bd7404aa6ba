//! `cargo xtask demo`: the main job on a built-in default (filled in with the loader).

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    anyhow::bail!("the demo needs `nodegate run`, which is not built yet")
}

