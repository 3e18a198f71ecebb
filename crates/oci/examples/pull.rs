//! Resolves and pulls one image into a store, for the benchmark suite (`bench/oci_pull.sh`):
//!
//!     pull REFERENCE STORE_DIR [ARCH]
//!
//! Prints one JSON line: the image's bytes (compressed layers and config), its layers, the
//! layer blobs downloaded and the seconds from resolve to the last layer unpacked.
use std::path::Path;

use atelier_oci::{ImageStore, RegistryConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [reference, store, rest @ ..] = args.as_slice() else {
        return Err("usage: pull REFERENCE STORE_DIR [ARCH]".into());
    };
    let arch = rest.first().map_or("amd64", String::as_str);
    let began = tokio::time::Instant::now();
    let images = ImageStore::open(Path::new(store), RegistryConfig::default())?;
    let resolved = images.resolve(reference, arch).await?;
    images.pull(&resolved, &|_, _| {}).await?;
    let seconds = began.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bytes": resolved.size,
            "layers": resolved.layers.len(),
            "downloads": images.downloads(),
            "seconds": seconds,
        })
    );
    Ok(())
}
