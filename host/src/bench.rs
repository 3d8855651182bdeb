//! `pincer bench`: measurements of the plugin runtime.

/// `pincer bench plugins`.
pub async fn plugins() -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
