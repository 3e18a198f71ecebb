//! `GET …/notebooks/flavors` and `GET …/notebooks/{id}/flavors`: spec §1.4.9, §2.7.
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{PROJECT_ID, TestApp, expect_error, id_of, json_of};

fn ids(list: &Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|f| f["id"].as_str().expect("id"))
        .collect()
}

async fn flavors(app: &TestApp, query: &str) -> Value {
    let path = format!("/v1/{PROJECT_ID}/notebooks/flavors{query}");
    let (status, json) = json_of(app.signed("GET", &path, None).await).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json
}

#[tokio::test]
async fn the_flavor_list_carries_data_and_flavors_with_memory_in_kib() {
    let app = TestApp::spawn().await;

    let list = flavors(&app, "").await;

    assert_eq!(list["data"], list["flavors"], "the same array twice");
    let mut listed = ids(&list);
    listed.sort_unstable();
    assert_eq!(listed, ["modelarts.vm.cpu.2u", "modelarts.vm.cpu.8u"]);
    assert_eq!(list["total"], 2);
    assert_eq!(list["current"], 0);
    assert_eq!(list["pages"], 1);
    let flavor = |id: &str| {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("no {id}"))
            .clone()
    };
    let two = &flavor("modelarts.vm.cpu.2u");
    assert_eq!(two["vcpus"], 2);
    assert_eq!(two["memory"], 8 * 1024 * 1024, "8 GiB in KiB");
    assert_eq!(two["category"], "CPU");
    assert_eq!(two["arch"], "x86_64");
    assert_eq!(two["feature"], "NOTEBOOK");
    assert_eq!(two["free"], false);
    assert_eq!(two["sold_out"], false);
    assert!(
        two["storages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "EVS"),
        "{two}"
    );
    assert_eq!(flavor("modelarts.vm.cpu.8u")["memory"], 32 * 1024 * 1024);
}

#[tokio::test]
async fn the_free_flavor_shows_only_for_feature_default() {
    let app = TestApp::spawn().await;

    let notebook = flavors(&app, "?feature=NOTEBOOK").await;
    assert!(!ids(&notebook).contains(&"modelarts.vm.cpu.free"));

    let default = flavors(&app, "?feature=default").await;
    assert_eq!(ids(&default), ["modelarts.vm.cpu.free"]);
    assert_eq!(default["data"][0]["free"], true);
    assert_eq!(default["data"][0]["feature"], "DEFAULT");
}

#[tokio::test]
async fn flavors_filter_sort_and_page() {
    let app = TestApp::spawn().await;

    assert_eq!(flavors(&app, "?category=GPU").await["total"], 0);
    assert_eq!(flavors(&app, "?category=cpu").await["total"], 2);
    assert_eq!(flavors(&app, "?type=DEDICATED").await["total"], 0);
    let desc = flavors(&app, "?sort_key=vcpus&sort_dir=DESC").await;
    assert_eq!(ids(&desc), ["modelarts.vm.cpu.8u", "modelarts.vm.cpu.2u"]);
    let second_page = flavors(&app, "?limit=1&offset=1").await;
    assert_eq!(ids(&second_page), ["modelarts.vm.cpu.8u"]);
    assert_eq!(
        (
            &second_page["current"],
            &second_page["pages"],
            &second_page["size"]
        ),
        (&Value::from(1), &Value::from(2), &Value::from(1))
    );
    let path = format!("/v1/{PROJECT_ID}/notebooks/flavors?sort_key=price");
    expect_error(app.signed("GET", &path, None).await, 400, "ModelArts.6303").await;
    let path = format!("/v1/{PROJECT_ID}/notebooks/flavors?limit=many");
    expect_error(app.signed("GET", &path, None).await, 400, "ModelArts.6332").await;
}

#[tokio::test]
async fn switchable_flavors_are_the_other_flavors_of_the_same_feature() {
    let app = TestApp::spawn().await;
    let running = app.create_running("switch").await;
    let path = format!("{}/flavors", app.notebook_path(id_of(&running)));

    let (status, list) = json_of(app.signed("GET", &path, None).await).await;

    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(ids(&list), ["modelarts.vm.cpu.8u"]);
    assert_eq!(list["data"], list["flavors"]);
}
