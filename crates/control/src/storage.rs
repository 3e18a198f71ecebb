//! Dynamic storage (spec §1.4.11): which object stores and shares a project may mount, as
//! the operator granted them. A notebook only ever names a bucket and a prefix (or a share's
//! id); endpoints and credentials come from here and never reach the notebook.
use std::path::PathBuf;

use atelier_domain::storage::parse_obs_uri;
use atelier_domain::{DataVolume, ProjectId, StorageCategory};
use atelier_runtime::{ObjectStoreMount, StorageMount, StorageSource};

use crate::error::ControlError;

/// An S3-compatible object store and what of it some projects may mount.
#[derive(Clone)]
pub struct ObjectStoreGrant {
    /// `http(s)://host[:port]`.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Project ids, or `*` for every project.
    pub projects: Vec<String>,
    /// Bucket names, or `*` for every bucket the key reaches.
    pub buckets: Vec<String>,
    pub read_only: bool,
}

/// A directory of the host (an NFS export mounted there, say) offered as an EFS share.
#[derive(Clone, Debug)]
pub struct ShareGrant {
    /// The `efs_id` requests name.
    pub id: String,
    pub path: PathBuf,
    pub projects: Vec<String>,
    pub read_only: bool,
}

/// Never prints secret keys.
impl std::fmt::Debug for ObjectStoreGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreGrant")
            .field("endpoint", &self.endpoint)
            .field("projects", &self.projects)
            .field("buckets", &self.buckets)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Default)]
pub struct StorageGrants {
    pub object_stores: Vec<ObjectStoreGrant>,
    pub shares: Vec<ShareGrant>,
}

fn names(list: &[String], name: &str) -> bool {
    list.iter().any(|entry| entry == "*" || entry == name)
}

fn share_granted(share: &ShareGrant, project: &ProjectId) -> bool {
    names(&share.projects, &project.to_string())
}

impl StorageGrants {
    /// What mounting `volume` in a notebook of `project` means, or why it may not be: the
    /// same answer whether or not the bucket exists, so that nothing is learnt of buckets
    /// the project was not granted.
    pub fn resolve(
        &self,
        project: &ProjectId,
        volume: &DataVolume,
    ) -> Result<StorageMount, ControlError> {
        let project_text = project.to_string();
        let dir = volume.dir().to_owned();
        match volume.category {
            StorageCategory::Obs | StorageCategory::Obsfs => {
                let path = parse_obs_uri(&volume.uri)
                    .map_err(|_| ControlError::StorageNotGranted(volume.uri.clone()))?;
                let grant = self
                    .object_stores
                    .iter()
                    .find(|g| names(&g.projects, &project_text) && names(&g.buckets, &path.bucket))
                    .ok_or_else(|| ControlError::StorageNotGranted(volume.uri.clone()))?;
                Ok(StorageMount {
                    dir,
                    read_only: grant.read_only,
                    source: StorageSource::ObjectStore(ObjectStoreMount {
                        endpoint: grant.endpoint.clone(),
                        region: grant.region.clone(),
                        access_key_id: grant.access_key_id.clone(),
                        secret_access_key: grant.secret_access_key.clone(),
                        bucket: path.bucket,
                        prefix: path.prefix,
                    }),
                })
            }
            StorageCategory::Efs => {
                let id = volume.efs_id.clone().unwrap_or_default();
                let share = self
                    .shares
                    .iter()
                    .find(|s| s.id == id && share_granted(s, project))
                    .ok_or(ControlError::StorageNotGranted(id))?;
                Ok(StorageMount {
                    dir,
                    read_only: share.read_only,
                    source: StorageSource::Directory(share.path.clone()),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atelier_domain::MountStatus;

    fn volume(category: StorageCategory, uri: &str, efs_id: Option<&str>) -> DataVolume {
        DataVolume {
            id: "v".to_owned(),
            category,
            mount_path: "/data/x/".to_owned(),
            uri: uri.to_owned(),
            efs_id: efs_id.map(str::to_owned),
            status: MountStatus::Mounting,
            failure_reason: None,
            create_at: 0,
        }
    }

    #[test]
    fn only_granted_buckets_and_shares_resolve() {
        let mine: ProjectId = "0123456789abcdef0123456789abcdef".parse().unwrap();
        let other: ProjectId = "fedcba9876543210fedcba9876543210".parse().unwrap();
        let grants = StorageGrants {
            object_stores: vec![ObjectStoreGrant {
                endpoint: "http://127.0.0.1:3900".to_owned(),
                region: "garage".to_owned(),
                access_key_id: "GK1".to_owned(),
                secret_access_key: "secret".to_owned(),
                projects: vec![mine.to_string()],
                buckets: vec!["team".to_owned()],
                read_only: false,
            }],
            shares: vec![ShareGrant {
                id: "share".to_owned(),
                path: "/srv/share".into(),
                projects: vec!["*".to_owned()],
                read_only: true,
            }],
        };
        let obs = volume(StorageCategory::Obs, "obs://team/in/", None);
        let mount = grants.resolve(&mine, &obs).unwrap();
        assert_eq!(mount.dir, "x");
        assert!(matches!(
            &mount.source,
            StorageSource::ObjectStore(s) if s.bucket == "team" && s.prefix == "in/"
        ));
        assert!(!format!("{mount:?}").contains("secret"));
        assert!(!format!("{grants:?}").contains("secret"));
        for (project, uri) in [(&other, "obs://team/in/"), (&mine, "obs://else/in/")] {
            let refused = grants.resolve(project, &volume(StorageCategory::Obs, uri, None));
            assert!(matches!(refused, Err(ControlError::StorageNotGranted(_))));
        }
        let efs = volume(StorageCategory::Efs, "share", Some("share"));
        assert!(grants.resolve(&other, &efs).unwrap().read_only);
        let unknown = volume(StorageCategory::Efs, "x", Some("nope"));
        assert!(grants.resolve(&mine, &unknown).is_err());
    }
}
