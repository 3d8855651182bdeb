//! `pincer bench gateway`: the real server driven over loopback.

/// Run the gateway benchmark and print a Markdown table.
pub async fn gateway() -> anyhow::Result<()> {
    anyhow::bail!("pincer bench gateway is being written")
}
