//! ModelArts notebook JSON exactly as it travels on the wire (spec §2), plus Atelier's
//! extensions. Field names copy the wire; only these types (and `Config`) derive serde.
#![forbid(unsafe_code)]

pub mod error;
pub mod feature;
pub mod iam;
pub mod image;
pub mod keypair;
pub mod notebook;
pub mod storage;

pub use error::ErrorBody;
pub use feature::*;
pub use iam::*;
pub use image::*;
pub use keypair::*;
pub use notebook::*;
pub use storage::*;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The paged envelope (spec §2.9): `current` is 0-based, `offset` a record offset.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page {
    pub current: i64,
    pub pages: i64,
    pub size: i64,
    pub total: i64,
}

impl Page {
    pub fn compute(total: i64, offset: i64, size: i64) -> Page {
        let size = size.max(0);
        let pages = if size == 0 || total <= 0 {
            0
        } else {
            (total as u64).div_ceil(size as u64) as i64
        };
        let current = if size == 0 { 0 } else { offset / size };
        Page {
            current,
            pages,
            size,
            total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Page;

    #[test]
    fn pages_are_counted_without_overflow() {
        let page = Page::compute(21, 20, 10);
        assert_eq!(
            (page.current, page.pages, page.size, page.total),
            (2, 3, 10, 21)
        );
        assert_eq!(Page::compute(0, 0, 10).pages, 0);
        assert_eq!(Page::compute(5, 0, i64::MAX - 1).pages, 1);
    }
}
