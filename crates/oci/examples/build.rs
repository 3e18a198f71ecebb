//! Builds an image in a store from directories, one layer each (for trying the built-in
//! image's layers and timing `build_local`):
//!
//!     build REFERENCE STORE_DIR DIR...
//!
//! Prints one JSON line: the manifest digest, the layers' compressed bytes and the seconds.
use std::path::{Path, PathBuf};

use atelier_oci::{ImageStore, RegistryConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [reference, store, dirs @ ..] = args.as_slice() else {
        return Err("usage: build REFERENCE STORE_DIR DIR...".into());
    };
    let began = tokio::time::Instant::now();
    let images = ImageStore::open(Path::new(store), RegistryConfig::default())?;
    let dirs: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
    let built = images
        .build_local(
            reference,
            None,
            &dirs,
            "amd64",
            serde_json::json!({"User": "1000:100", "WorkingDir": "/home/ma-user/work"}),
            "atelier: examples/build",
        )
        .await?;
    println!(
        "{}",
        serde_json::json!({
            "digest": built.digest,
            "bytes": built.size,
            "layers": built.layers.len(),
            "seconds": began.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}
