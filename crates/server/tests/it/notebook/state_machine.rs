//! Random sequences of start / stop / delete / show (and injected start failures) through
//! HTTP, each answer compared with a model built from the spec §3.2 admission table. After an
//! admitted operation the test waits for the notebook to settle, so the model stays exact.
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::StatusCode;

use atelier_runtime::Step;

use crate::support::{TestApp, id_of, json_of};

const NOTEBOOKS: usize = 2;

#[derive(Debug, Clone, Copy)]
enum Op {
    Start(usize),
    Stop(usize),
    Delete(usize),
    Show(usize),
    /// Makes every later start of the notebook fail (in step 3).
    BreakStarts(usize),
}

fn any_op() -> impl Strategy<Value = Op> {
    let notebook = 0..NOTEBOOKS;
    prop_oneof![
        4 => notebook.clone().prop_map(Op::Start),
        4 => notebook.clone().prop_map(Op::Stop),
        1 => notebook.clone().prop_map(Op::Delete),
        2 => notebook.clone().prop_map(Op::Show),
        1 => notebook.prop_map(Op::BreakStarts),
    ]
}

/// Spec §3.2: start in STOPPED / START_FAILED / ERROR, stop in RUNNING / STARTING / ERROR,
/// delete in every state but DELETING.
fn admits(operation: &str, status: &str) -> bool {
    match operation {
        "start" => matches!(status, "STOPPED" | "START_FAILED" | "ERROR"),
        "stop" => matches!(status, "RUNNING" | "STARTING" | "ERROR"),
        "delete" => status != "DELETING",
        _ => unreachable!("{operation}"),
    }
}

/// What the model says a notebook is: its settled status, or `None` once deleted.
struct Model {
    id: String,
    status: Option<&'static str>,
    starts_fail: bool,
}

/// How a notebook starts a case: stopped or running, and whether its starts will fail.
#[derive(Debug, Clone, Copy)]
struct Setup {
    stopped: bool,
    starts_fail: bool,
}

fn any_setup() -> impl Strategy<Value = Setup> {
    (any::<bool>(), prop::bool::weighted(0.3)).prop_map(|(stopped, starts_fail)| Setup {
        stopped,
        starts_fail,
    })
}

fn break_starts(app: &TestApp, model: &mut Model) {
    app.runtime.fail_step(
        model.id.parse().expect("notebook id"),
        Step::ConfigureNetwork,
        "injected by the model test",
    );
    model.starts_fail = true;
}

async fn run_case(app: &TestApp, setups: &[Setup], ops: &[Op]) -> Result<(), TestCaseError> {
    let mut models = Vec::new();
    for (n, setup) in setups.iter().enumerate() {
        let name = format!("model-{n}");
        let (notebook, status) = if setup.stopped {
            (app.create_stopped(&name).await, "STOPPED")
        } else {
            (app.create_running(&name).await, "RUNNING")
        };
        let mut model = Model {
            id: id_of(&notebook).to_owned(),
            status: Some(status),
            starts_fail: false,
        };
        if setup.starts_fail {
            break_starts(app, &mut model);
        }
        models.push(model);
    }
    for op in ops {
        let (operation, index) = match *op {
            Op::Start(i) => ("start", i),
            Op::Stop(i) => ("stop", i),
            Op::Delete(i) => ("delete", i),
            Op::Show(i) => ("show", i),
            Op::BreakStarts(i) => {
                break_starts(app, &mut models[i]);
                continue;
            }
        };
        let model = &mut models[index];
        let path = app.notebook_path(&model.id);
        let response = match operation {
            "start" => app.signed("POST", &format!("{path}/start"), None).await,
            "stop" => app.signed("POST", &format!("{path}/stop"), None).await,
            "delete" => app.signed("DELETE", &path, None).await,
            _ => app.signed("GET", &path, None).await,
        };
        let (code, json) = json_of(response).await;
        let Some(status) = model.status else {
            prop_assert_eq!(
                code,
                StatusCode::NOT_FOUND,
                "{:?} on a deleted notebook: {}",
                op,
                json
            );
            prop_assert_eq!(&json["error_code"], "ModelArts.6309");
            continue;
        };
        if operation == "show" {
            prop_assert_eq!(code, StatusCode::OK, "{}", json);
            prop_assert_eq!(&json["status"], status, "{:?}", op);
            continue;
        }
        if !admits(operation, status) {
            prop_assert_eq!(
                (code, json["error_code"].as_str()),
                (StatusCode::BAD_REQUEST, Some("ModelArts.6357")),
                "{:?} in {}: {}",
                op,
                status,
                json
            );
            continue;
        }
        prop_assert_eq!(code, StatusCode::OK, "{:?} in {}: {}", op, status, json);
        let (answered, settles_in) = match operation {
            "start" if model.starts_fail => ("STARTING", Some("START_FAILED")),
            "start" => ("STARTING", Some("RUNNING")),
            "stop" => ("STOPPING", Some("STOPPED")),
            _ => ("DELETING", None),
        };
        prop_assert_eq!(&json["status"], answered, "{:?}", op);
        let settled = app.wait_settled(&model.id).await;
        prop_assert_eq!(settled.as_deref(), settles_in, "{:?} from {}", op, status);
        model.status = settles_in;
    }
    Ok(())
}

#[test]
fn start_stop_delete_and_show_follow_the_admission_table() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let app = runtime.block_on(TestApp::spawn());
    let mut runner = TestRunner::new(Config {
        cases: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let case = (
        prop::collection::vec(any_setup(), NOTEBOOKS),
        prop::collection::vec(any_op(), 1..=12),
    );
    let outcome = runner.run(&case, |(setups, ops)| {
        runtime.block_on(run_case(&app, &setups, &ops))
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    drop(app);
}
