//! One suite every `Store` implementation must pass.
use atelier_domain::{
    AccessKeyId, Credential, Feature, Image, Lease, LeaseRun, Notebook, NotebookId, NotebookStatus,
    Project, ProjectId, StepStatus, Tag, User, UserId, Volume, VolumeCategory, VolumeOwnership,
};

use crate::{SqliteStore, Store, StoreError};

fn user(name: &str) -> User {
    User {
        id: UserId::new_random(),
        name: name.to_owned(),
        domain_id: UserId::new_random().to_string(),
        domain_name: "atelier".to_owned(),
        is_admin: true,
        create_at: 1,
    }
}

fn notebook(project: &ProjectId, owner: &User, create_at: i64) -> Notebook {
    let mut nb = Notebook {
        id: NotebookId::new_random(),
        project_id: project.clone(),
        user_id: owner.id.clone(),
        user_name: owner.name.clone(),
        name: "nb".to_owned(),
        description: String::new(),
        feature: Feature::Notebook,
        flavor: "modelarts.vm.cpu.2u".to_owned(),
        image_id: atelier_domain::BUILTIN_JUPYTERLAB_IMAGE_ID,
        status: NotebookStatus::Init,
        fail_reason: None,
        workspace_id: "0".to_owned(),
        pool_id: None,
        volume: Volume {
            category: VolumeCategory::Evs,
            ownership: VolumeOwnership::Managed,
            capacity_gb: 5,
            uri: None,
            id: None,
        },
        endpoints: vec![],
        hooks_json: Some("{\"container_hooks\":{}}".to_owned()),
        tags: vec![Tag {
            key: "k".to_owned(),
            value: "v".to_owned(),
        }],
        // Every field set, so a round trip shows none is lost.
        data_volumes: vec![atelier_domain::DataVolume {
            id: "5d1c1a4e-0000-4000-8000-000000000001".to_owned(),
            category: atelier_domain::StorageCategory::Obsfs,
            mount_path: "/data/in/".to_owned(),
            uri: "obs://bucket/in/".to_owned(),
            efs_id: Some("efs".to_owned()),
            status: atelier_domain::MountStatus::MountFailed,
            failure_reason: Some("why".to_owned()),
            create_at,
        }],
        lease: Lease::new(create_at, LeaseRun::default_timing()),
        token: Some("t".to_owned()),
        action_progress: vec![],
        stop_reason: None,
        has_run: false,
        event_seq: 0,
        create_at,
        update_at: create_at,
        version: 1,
    };
    nb.reset_progress();
    nb
}

async fn suite(store: &dyn Store) {
    let alice = user("alice");
    store.create_user(&alice).await.unwrap();
    assert!(matches!(
        store.create_user(&alice).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.find_user(&alice.id).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.find_user_by_name("alice").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.count_users().await.unwrap(), 1);

    let project = Project {
        id: ProjectId::new_random(),
        name: "default".to_owned(),
        create_at: 2,
    };
    store.create_project(&project).await.unwrap();
    store
        .add_project_member(&project.id, &alice.id)
        .await
        .unwrap();
    store
        .add_project_member(&project.id, &alice.id)
        .await
        .unwrap();
    assert_eq!(
        store.project_members().await.unwrap(),
        vec![(project.id.clone(), alice.id.clone())]
    );

    let credential = Credential {
        access_key: AccessKeyId::new_random(),
        secret_key: "secret".to_owned(),
        user_id: alice.id.clone(),
        description: String::new(),
        create_at: 3,
    };
    store.create_credential(&credential).await.unwrap();
    assert_eq!(
        store.find_credential(&credential.access_key).await.unwrap(),
        Some(credential.clone())
    );
    assert!(
        store
            .delete_credential(&credential.access_key)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_credential(&credential.access_key)
            .await
            .unwrap()
    );

    let mut nb = notebook(&project.id, &alice, 10);
    let nb_id = nb.id;
    let event = |seq: i64, reason: &str| atelier_domain::NotebookEvent {
        notebook_id: nb_id,
        seq,
        at: 10 + seq,
        level: atelier_domain::EventLevel::Normal,
        reason: reason.to_owned(),
        message: format!("{reason} happened"),
        status: NotebookStatus::Creating,
        step: (seq > 1).then_some(1),
        step_status: (seq > 1).then_some(StepStatus::Processing),
    };
    store
        .insert_notebook(&nb, &[event(1, "Created")])
        .await
        .unwrap();
    assert_eq!(store.find_notebook(&nb.id).await.unwrap(), Some(nb.clone()));
    nb.status = NotebookStatus::Creating;
    nb.set_step(1, StepStatus::Processing);
    nb.set_step_detail(1, "Pulling the image: 1.0 of 2.0 MiB.");
    let version = store
        .update_notebook(&nb, &[event(2, "PreparingStorage")])
        .await
        .unwrap();
    assert_eq!(version, 2);
    // Writing against the old version again is refused, and writes no event.
    assert!(matches!(
        store.update_notebook(&nb, &[event(3, "Stale")]).await,
        Err(StoreError::StaleVersion)
    ));
    let events = store.list_events(&nb.id, 0, 100).await.unwrap();
    assert_eq!(
        events,
        vec![event(1, "Created"), event(2, "PreparingStorage")]
    );
    assert_eq!(
        store.list_events(&nb.id, 1, 100).await.unwrap(),
        vec![event(2, "PreparingStorage")]
    );
    assert_eq!(store.list_events(&nb.id, 0, 1).await.unwrap().len(), 1);
    nb.version = version;
    assert_eq!(store.find_notebook(&nb.id).await.unwrap(), Some(nb.clone()));
    assert_eq!(store.list_notebooks().await.unwrap().len(), 1);
    store.delete_notebook(&nb.id).await.unwrap();
    assert_eq!(store.find_notebook(&nb.id).await.unwrap(), None);
    assert!(store.list_events(&nb.id, 0, 100).await.unwrap().is_empty());

    let mut image = Image::builtin().remove(0);
    image.id = atelier_domain::ImageId::new_random();
    image.project_id = Some(project.id.to_string());
    store.insert_image(&image).await.unwrap();
    image.status = "DELETED".to_owned();
    store.update_image(&image).await.unwrap();
    assert_eq!(
        store.find_image(&image.id).await.unwrap(),
        Some(image.clone())
    );
    assert_eq!(store.list_images().await.unwrap(), vec![image]);

    let other = Project {
        id: ProjectId::new_random(),
        name: "other".to_owned(),
        create_at: 4,
    };
    store.create_project(&other).await.unwrap();
    let keypair = |project: &ProjectId, name: &str| atelier_domain::KeyPair {
        project_id: project.clone(),
        name: name.to_owned(),
        public_key: format!("ssh-ed25519 AAAA {name}"),
        fingerprint: format!("SHA256:{name}"),
        algorithm: "ssh-ed25519".to_owned(),
        create_at: 5,
    };
    store
        .insert_keypair(&keypair(&project.id, "b"))
        .await
        .unwrap();
    store
        .insert_keypair(&keypair(&project.id, "a"))
        .await
        .unwrap();
    // Names are unique per project, not globally.
    store
        .insert_keypair(&keypair(&other.id, "a"))
        .await
        .unwrap();
    assert!(matches!(
        store.insert_keypair(&keypair(&project.id, "a")).await,
        Err(StoreError::Conflict(_))
    ));
    let names: Vec<String> = store
        .list_keypairs(&project.id)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        store.find_keypair(&project.id, "b").await.unwrap(),
        Some(keypair(&project.id, "b"))
    );
    assert!(store.delete_keypair(&project.id, "a").await.unwrap());
    assert!(!store.delete_keypair(&project.id, "a").await.unwrap());
    assert_eq!(store.find_keypair(&project.id, "a").await.unwrap(), None);
    assert!(store.find_keypair(&other.id, "a").await.unwrap().is_some());
}

#[tokio::test]
async fn sqlite_in_memory_passes_the_suite() {
    suite(&SqliteStore::open_in_memory().await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_file_passes_the_suite_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atelier.db");
    suite(&SqliteStore::open(&path).await.unwrap()).await;
    let reopened = SqliteStore::open(&path).await.unwrap();
    assert_eq!(reopened.count_users().await.unwrap(), 1);
}

#[test]
fn records_without_step_details_still_read_and_details_round_trip() {
    use crate::record::NotebookRecord;
    let mut nb = notebook(&ProjectId::new_random(), &user("u"), 1);
    nb.set_step(2, StepStatus::Processing);
    // Without a detail the body is what older servers wrote: no `step_details`.
    let body = serde_json::to_value(NotebookRecord::from_domain(&nb)).unwrap();
    assert!(body.get("step_details").is_none(), "{body}");
    let back: NotebookRecord = serde_json::from_value(body).unwrap();
    assert_eq!(back.into_domain(nb.version).unwrap(), nb);
    nb.set_step_detail(2, "Unpacking the image (2.0 MiB pulled).");
    let body = serde_json::to_string(&NotebookRecord::from_domain(&nb)).unwrap();
    let back: NotebookRecord = serde_json::from_str(&body).unwrap();
    assert_eq!(back.into_domain(nb.version).unwrap(), nb);
}
