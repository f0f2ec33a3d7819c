//! `squall`: the node binary (serve, admin and audit CLI).

fn main() -> anyhow::Result<()> {
    println!("squall: not yet implemented");
    Ok(())
}
