//! Dynamic storage (spec §1.4.11, §2.8): an object-store prefix (`obs://bucket/dir/`) or an
//! operator's share mounted under `/data/` of a running notebook.
use std::fmt;
use std::str::FromStr;

use crate::EpochMillis;
use crate::notebook::UnknownValue;

macro_rules! storage_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                $(if text.eq_ignore_ascii_case($text) { return Ok($name::$variant); })+
                Err(UnknownValue)
            }
        }
    };
}

storage_enum!(StorageCategory { Obs => "OBS", Obsfs => "OBSFS", Efs => "EFS" });

storage_enum!(MountStatus {
    Mounting => "MOUNTING",
    Mounted => "MOUNTED",
    MountFailed => "MOUNT_FAILED",
    Unmounting => "UNMOUNTING",
    Unmounted => "UNMOUNTED",
    UnmountFailed => "UNMOUNT_FAILED",
});

/// One dynamic mount of a notebook, kept in its record across stops and restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataVolume {
    /// A UUID.
    pub id: String,
    pub category: StorageCategory,
    /// `/data/{dir}/`, as sent.
    pub mount_path: String,
    /// `obs://bucket/dir/`, or the share's `uri` for EFS.
    pub uri: String,
    pub efs_id: Option<String>,
    pub status: MountStatus,
    pub failure_reason: Option<String>,
    pub create_at: EpochMillis,
}

impl DataVolume {
    /// `dir` of `/data/{dir}/`.
    pub fn dir(&self) -> &str {
        mount_dir(&self.mount_path).unwrap_or_default()
    }
}

/// The most dynamic mounts one notebook may have.
pub const MAX_DATA_VOLUMES: usize = 10;

/// Why a `DataVolumesReq` field is refused, with the spec's code in mind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageFieldError {
    /// `mount_path` is not `/data/{dir}/` with `dir` of letters, digits, `_` and `-`.
    MountPath,
    /// The OBS path does not end with `/` (ModelArts.6318).
    NoTrailingSlash,
    /// The OBS path is a bucket's root (ModelArts.6358).
    BucketRoot,
    /// Not `obs://bucket/dir/` (a bucket name per S3's rules, no `..`, `//` or controls).
    Uri,
}

/// `dir` of a valid `/data/{dir}/` (TF's rule `^/data/[a-zA-Z0-9_-]*/$`, not empty, at most
/// 64 characters): one plain name, so nothing can reach outside `/data/`.
pub fn mount_dir(mount_path: &str) -> Option<&str> {
    let dir = mount_path.strip_prefix("/data/")?.strip_suffix('/')?;
    let plain = !dir.is_empty()
        && dir.len() <= 64
        && dir
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    plain.then_some(dir)
}

/// An object-store location: a bucket and a prefix that ends with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObsPath {
    pub bucket: String,
    /// `dir/` or `dir/sub/`: never empty, never starting with `/`.
    pub prefix: String,
}

/// Parses `obs://bucket/dir/` (also `s3://`), refusing what could name something else.
pub fn parse_obs_uri(uri: &str) -> Result<ObsPath, StorageFieldError> {
    let rest = uri
        .strip_prefix("obs://")
        .or_else(|| uri.strip_prefix("s3://"))
        .ok_or(StorageFieldError::Uri)?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if !bucket_ok {
        return Err(StorageFieldError::Uri);
    }
    if prefix.is_empty() {
        return Err(StorageFieldError::BucketRoot);
    }
    if !prefix.ends_with('/') {
        return Err(StorageFieldError::NoTrailingSlash);
    }
    let segments_ok = prefix.trim_end_matches('/').split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment.len() <= 255
            && !segment.chars().any(char::is_control)
    });
    if !segments_ok || uri.len() > 256 {
        return Err(StorageFieldError::Uri);
    }
    Ok(ObsPath {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_one_plain_directory_under_data() {
        assert_eq!(mount_dir("/data/abc_1-2/"), Some("abc_1-2"));
        for bad in [
            "/data/",
            "/data/a",
            "/data/a/b/",
            "/data/../",
            "/data/./",
            "/data/a b/",
            "/home/ma-user/work/",
            "data/a/",
            "/data//",
        ] {
            assert_eq!(mount_dir(bad), None, "{bad}");
        }
        assert_eq!(mount_dir(&format!("/data/{}/", "a".repeat(65))), None);
    }

    #[test]
    fn obs_uris_name_a_prefix_of_a_bucket() {
        let path = parse_obs_uri("obs://my-bucket/dir/sub/").unwrap();
        assert_eq!(path.bucket, "my-bucket");
        assert_eq!(path.prefix, "dir/sub/");
        assert_eq!(
            parse_obs_uri("obs://my-bucket/dir"),
            Err(StorageFieldError::NoTrailingSlash)
        );
        assert_eq!(
            parse_obs_uri("obs://my-bucket/"),
            Err(StorageFieldError::BucketRoot)
        );
        assert_eq!(
            parse_obs_uri("obs://my-bucket"),
            Err(StorageFieldError::BucketRoot)
        );
        for bad in [
            "http://b/dir/",
            "obs://UPPER/dir/",
            "obs://b/dir/",
            "obs://bucket/../x/",
            "obs://bucket//x/",
            "obs://bucket/a/./",
            "obs://bucket/a\n/",
            "obs://-bucket/a/",
        ] {
            assert_eq!(parse_obs_uri(bad), Err(StorageFieldError::Uri), "{bad}");
        }
    }
}
