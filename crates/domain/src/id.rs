//! Newtype identifiers. Raw strings are parsed into these at the edge.
use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NotebookId(Uuid);

impl NotebookId {
    pub fn new_random() -> NotebookId {
        NotebookId(Uuid::new_v4())
    }
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
    /// The smallest and largest ids, for range scans.
    pub const fn min() -> NotebookId {
        NotebookId(Uuid::nil())
    }
    pub const fn max() -> NotebookId {
        NotebookId(Uuid::max())
    }
}

impl FromStr for NotebookId {
    type Err = InvalidId;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_uuid(text).map(NotebookId)
    }
}

impl fmt::Display for NotebookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageId(Uuid);

impl ImageId {
    pub fn new_random() -> ImageId {
        ImageId(Uuid::new_v4())
    }
    pub const fn from_u128(value: u128) -> ImageId {
        ImageId(Uuid::from_u128(value))
    }
}

impl FromStr for ImageId {
    type Err = InvalidId;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_uuid(text).map(ImageId)
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Only the canonical lower-case hyphenated form is an id; anything else is "not found".
fn parse_uuid(text: &str) -> Result<Uuid, InvalidId> {
    if text.len() != 36 {
        return Err(InvalidId);
    }
    let uuid = Uuid::parse_str(text).map_err(|_| InvalidId)?;
    if uuid.hyphenated().to_string() != text {
        return Err(InvalidId);
    }
    Ok(uuid)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid identifier")]
pub struct InvalidId;

/// 32 lowercase hex characters, as Huawei/OTC project ids are.
macro_rules! hex32_id {
    ($name:ident) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn new_random() -> $name {
                $name(Uuid::new_v4().simple().to_string())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let is_hex32 = text.len() == 32
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if is_hex32 {
                    Ok($name(text.to_owned()))
                } else {
                    Err(InvalidId)
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

hex32_id!(ProjectId);
hex32_id!(UserId);

/// An access key id: 20 upper-case alphanumerics, as Huawei AKs are.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccessKeyId(String);

impl AccessKeyId {
    pub fn new_random() -> AccessKeyId {
        use rand::Rng;
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut rng = rand::rng();
        let text: String = (0..20)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        AccessKeyId(text)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AccessKeyId {
    type Err = InvalidId;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let ok = (8..=128).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(AccessKeyId(text.to_owned()))
        } else {
            Err(InvalidId)
        }
    }
}

impl fmt::Display for AccessKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notebook_id_accepts_only_canonical_form() {
        let id = NotebookId::new_random();
        assert_eq!(id.to_string().parse::<NotebookId>().unwrap(), id);
        assert!(id.to_string().to_uppercase().parse::<NotebookId>().is_err());
        assert!("not-a-uuid".parse::<NotebookId>().is_err());
        assert!(
            id.as_uuid()
                .simple()
                .to_string()
                .parse::<NotebookId>()
                .is_err()
        );
    }

    #[test]
    fn project_id_is_32_lowercase_hex() {
        let id = ProjectId::new_random();
        assert_eq!(id.as_str().len(), 32);
        assert!(id.as_str().parse::<ProjectId>().is_ok());
        assert!(
            "0123456789ABCDEF0123456789abcdef"
                .parse::<ProjectId>()
                .is_err()
        );
        assert!("0123".parse::<ProjectId>().is_err());
    }

    #[test]
    fn access_key_ids_are_20_chars() {
        let ak = AccessKeyId::new_random();
        assert_eq!(ak.as_str().len(), 20);
        assert_eq!(ak.as_str().parse::<AccessKeyId>().unwrap(), ak);
    }
}
