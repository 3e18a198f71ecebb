//! `GET …/notebooks` and `…/notebooks/all`: spec §1.4.2, §2.9, §3.7.
use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use atelier_server::clock::ManualClock;

use crate::support::{
    JUPYTERLAB_IMAGE_ID, SETTLE, TestApp, expect_error, id_of, json_of, notebook_body,
    wall_clock_ms,
};

/// 25 RUNNING notebooks `page-00` … `page-24`, created one second apart (so `create_at`
/// orders them), three of them (`page-00`, `-01`, `-02`) stopped, plus one free CodeLab
/// notebook `codelab` created last.
async fn twenty_five_notebooks() -> (TestApp, Vec<String>, String) {
    let app = TestApp::builder()
        .clock(ManualClock::new(wall_clock_ms()))
        .spawn()
        .await;
    let mut ids = Vec::new();
    for n in 0..25 {
        let created = app
            .create_notebook(&notebook_body(&format!("page-{n:02}")))
            .await;
        ids.push(id_of(&created).to_owned());
        app.advance(Duration::from_secs(1));
    }
    for id in &ids {
        app.wait_status(id, "RUNNING", SETTLE).await;
    }
    for id in &ids[..3] {
        app.stop(id).await;
        app.wait_status(id, "STOPPED", SETTLE).await;
    }
    let codelab = app
        .create_notebook(&json!({
            "name": "codelab",
            "feature": "DEFAULT",
            "flavor": "modelarts.vm.cpu.free",
            "image_id": JUPYTERLAB_IMAGE_ID,
            "volume": {"category": "EFS"}
        }))
        .await;
    let codelab_id = id_of(&codelab).to_owned();
    app.wait_status(&codelab_id, "RUNNING", SETTLE).await;
    (app, ids, codelab_id)
}

fn names(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|nb| nb["name"].as_str().expect("name").to_owned())
        .collect()
}

fn paging(list: &Value) -> (i64, i64, i64, i64, usize) {
    (
        list["current"].as_i64().unwrap(),
        list["pages"].as_i64().unwrap(),
        list["size"].as_i64().unwrap(),
        list["total"].as_i64().unwrap(),
        list["data"].as_array().unwrap().len(),
    )
}

#[tokio::test]
async fn paging_uses_record_offsets_and_a_zero_based_current_page() {
    let (app, ids, _) = twenty_five_notebooks().await;

    let mut seen = HashSet::new();
    let mut answers = Vec::new();
    for offset in [0, 10, 20] {
        let list = app
            .list(&format!("feature=NOTEBOOK&limit=10&offset={offset}"))
            .await;
        answers.push(paging(&list));
        for notebook in list["data"].as_array().unwrap() {
            assert!(seen.insert(id_of(notebook).to_owned()), "seen twice");
        }
    }

    assert_eq!(
        answers,
        vec![(0, 3, 10, 25, 10), (1, 3, 10, 25, 10), (2, 3, 10, 25, 5)]
    );
    assert_eq!(seen, ids.into_iter().collect::<HashSet<_>>());
    // Past the end: an empty page, same totals.
    let beyond = app.list("feature=NOTEBOOK&limit=10&offset=30").await;
    assert_eq!(paging(&beyond), (3, 3, 10, 25, 0));
    // Terraform pages with limit 50; the default page size is 10.
    assert_eq!(paging(&app.list("limit=50").await), (0, 1, 50, 26, 26));
    assert_eq!(paging(&app.list("").await), (0, 3, 10, 26, 10));
}

#[tokio::test]
async fn the_default_order_is_newest_first_and_sort_key_and_sort_dir_apply() {
    let (app, _, _) = twenty_five_notebooks().await;

    let newest_first = names(&app.list("feature=NOTEBOOK&limit=3").await);
    assert_eq!(newest_first, ["page-24", "page-23", "page-22"]);

    let by_name_asc = names(
        &app.list("feature=NOTEBOOK&limit=50&sort_key=name&sort_dir=ASC")
            .await,
    );
    let mut expected: Vec<String> = (0..25).map(|n| format!("page-{n:02}")).collect();
    assert_eq!(by_name_asc, expected);

    let by_name_desc = names(
        &app.list("feature=NOTEBOOK&limit=5&sort_key=name&sort_dir=desc")
            .await,
    );
    expected.reverse();
    assert_eq!(by_name_desc, expected[..5]);

    let oldest_first = names(
        &app.list("feature=NOTEBOOK&limit=2&sort_key=create_at&sort_dir=ASC")
            .await,
    );
    assert_eq!(oldest_first, ["page-00", "page-01"]);

    // Several keys: status first (RUNNING < STOPPED), then name.
    let by_status = names(
        &app.list("feature=NOTEBOOK&limit=50&sort_key=status,name&sort_dir=ASC")
            .await,
    );
    assert_eq!(by_status[..2], ["page-03", "page-04"]);
    assert_eq!(by_status[22..], ["page-00", "page-01", "page-02"]);
}

#[tokio::test]
async fn filters_narrow_the_list() {
    let (app, ids, codelab_id) = twenty_five_notebooks().await;
    let total = |list: Value| list["total"].as_i64().unwrap();

    // name is a case-insensitive substring match.
    assert_eq!(total(app.list("name=PAGE-1").await), 10);
    assert_eq!(total(app.list("name=page-2").await), 5);
    assert_eq!(total(app.list("name=nothing-like-it").await), 0);
    // status, in any case.
    assert_eq!(total(app.list("status=STOPPED").await), 3);
    assert_eq!(total(app.list("status=running").await), 23);
    // id is exact.
    let by_id = app.list(&format!("id={}", ids[7])).await;
    assert_eq!(names(&by_id), ["page-07"]);
    // feature: absent lists every feature (Atelier decision 8).
    assert_eq!(total(app.list("").await), 26);
    assert_eq!(total(app.list("feature=NOTEBOOK").await), 25);
    let codelab = app.list("feature=DEFAULT").await;
    assert_eq!(codelab["total"], 1);
    assert_eq!(codelab["data"][0]["id"], codelab_id.as_str());
    // Filters combine.
    assert_eq!(total(app.list("name=page-0&status=STOPPED").await), 3);
    assert_eq!(total(app.list("flavor=cpu.free").await), 1);
    // The caller's own list and the project's list agree for a single user.
    let own = json_of(
        app.signed("GET", &format!("{}?limit=50", app.notebooks_path()), None)
            .await,
    )
    .await
    .1;
    assert_eq!(own["total"], 26);
}

#[tokio::test]
async fn bad_list_parameters_are_refused_with_their_codes() {
    let app = TestApp::spawn().await;
    app.create_notebook(&notebook_body("one")).await;
    let list_path = |query: &str| format!("{}?{query}", app.notebooks_path());

    for query in ["sort_key=color", "sort_key=name,color"] {
        let response = app.signed("GET", &list_path(query), None).await;
        expect_error(response, 400, "ModelArts.6303").await;
    }
    for query in ["limit=abc", "offset=x1"] {
        let response = app.signed("GET", &list_path(query), None).await;
        expect_error(response, 400, "ModelArts.6332").await;
    }
    for query in [
        "limit=0",
        "offset=-1",
        "sort_dir=sideways",
        "status=NAPPING",
    ] {
        let response = app.signed("GET", &list_path(query), None).await;
        expect_error(response, 400, "ModelArts.6336").await;
    }
    let response = app
        .signed(
            "GET",
            &format!("{}/all?limit=abc", app.notebooks_path()),
            None,
        )
        .await;
    expect_error(response, 400, "ModelArts.6332").await;
}
