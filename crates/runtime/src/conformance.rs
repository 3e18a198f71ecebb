//! The runtime conformance suite: what every [`Runtime`] must do, as async checks that panic
//! on a violation. Run against the placeholder (unit tests) and the local runtime
//! (`tests/local.rs`); a Kubernetes runtime runs it against a test cluster.
#![doc(hidden)]
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast::Receiver;

use atelier_domain::NotebookId;

use crate::{NoProgress, Progress, Refused, Runtime, SandboxEvent, SandboxSpec, Step};

/// Ends a notebook's sandbox from outside, as a crash would.
pub type Crash<'a, R> = Box<dyn Fn(&R, NotebookId) + Send + Sync + 'a>;

/// How the suite reaches one implementation.
pub struct Subject<'a, R: Runtime> {
    /// A new instance of the runtime on the same host state (a restarted server's).
    pub open: Box<dyn Fn() -> Arc<R> + Send + Sync + 'a>,
    /// The spec of a new notebook.
    pub spec: Box<dyn Fn(NotebookId) -> SandboxSpec + Send + Sync + 'a>,
    pub crash: Crash<'a, R>,
}

/// How long a sandbox may take to start or to be seen ending.
const PATIENCE: Duration = Duration::from_secs(120);

/// Records the steps it is told of.
#[derive(Default)]
struct Recorder(Mutex<Vec<(Step, bool)>>);

#[async_trait]
impl Progress for Recorder {
    async fn step_started(&self, step: Step) -> Result<(), Refused> {
        self.0.lock().expect("poisoned").push((step, false));
        Ok(())
    }
    async fn step_done(&self, step: Step) -> Result<(), Refused> {
        self.0.lock().expect("poisoned").push((step, true));
        Ok(())
    }
}

async fn ensure<R: Runtime>(runtime: &R, spec: &SandboxSpec) {
    tokio::time::timeout(PATIENCE, runtime.ensure(spec, &NoProgress))
        .await
        .expect("ensure finishes")
        .unwrap_or_else(|error| panic!("{} runtime: ensure failed: {error}", runtime.name()));
}

/// The next event about `id`, skipping others.
async fn next_event(events: &mut Receiver<SandboxEvent>, id: NotebookId) -> SandboxEvent {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await {
                Ok(event @ (SandboxEvent::Ready(of) | SandboxEvent::Exited { id: of, .. }))
                    if of == id =>
                {
                    return event;
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(error) => panic!("the event stream ended: {error}"),
            }
        }
    })
    .await
    .expect("an event about the notebook")
}

/// `ensure` reports the four steps in order, twice in a row, and the second (on a running
/// sandbox) changes nothing.
pub async fn ensure_is_idempotent_and_reports_every_step<R: Runtime>(subject: &Subject<'_, R>) {
    let runtime = (subject.open)();
    let id = NotebookId::new_random();
    let spec = (subject.spec)(id);
    let mut events = runtime.events();
    for _ in 0..2 {
        let recorder = Recorder::default();
        tokio::time::timeout(PATIENCE, runtime.ensure(&spec, &recorder))
            .await
            .expect("ensure finishes")
            .expect("ensure");
        let seen = recorder.0.lock().expect("poisoned").clone();
        let wanted: Vec<(Step, bool)> = Step::ALL
            .iter()
            .flat_map(|&step| [(step, false), (step, true)])
            .collect();
        assert_eq!(seen, wanted);
        assert_eq!(next_event(&mut events, id).await, SandboxEvent::Ready(id));
        assert!(runtime.endpoint(id).is_some());
    }
    runtime.delete(id).await.expect("delete");
}

/// A progress that refuses stops the start at that step with `Aborted`.
pub async fn a_refusing_progress_aborts_the_start<R: Runtime>(subject: &Subject<'_, R>) {
    struct RefuseAt(Step);
    #[async_trait]
    impl Progress for RefuseAt {
        async fn step_started(&self, step: Step) -> Result<(), Refused> {
            if step == self.0 { Err(Refused) } else { Ok(()) }
        }
        async fn step_done(&self, _step: Step) -> Result<(), Refused> {
            Ok(())
        }
    }
    let runtime = (subject.open)();
    let id = NotebookId::new_random();
    let spec = (subject.spec)(id);
    let error = runtime
        .ensure(&spec, &RefuseAt(Step::ConfigureNetwork))
        .await
        .expect_err("refused");
    assert_eq!(error.step, Step::ConfigureNetwork);
    assert!(
        matches!(error.error, crate::RuntimeError::Aborted),
        "{error}"
    );
    runtime.delete(id).await.expect("delete");
}

/// A stopped sandbox has no endpoint and leaves the inventory; a start brings it back.
pub async fn stop_removes_the_endpoint_and_the_inventory_entry<R: Runtime>(
    subject: &Subject<'_, R>,
) {
    let runtime = (subject.open)();
    let id = NotebookId::new_random();
    let spec = (subject.spec)(id);
    ensure(&*runtime, &spec).await;
    assert!(runtime.endpoint(id).is_some());
    assert!(runtime.inventory().await.contains(&id));
    runtime.stop(id).await.expect("stop");
    assert_eq!(runtime.endpoint(id), None);
    assert!(!runtime.inventory().await.contains(&id));
    runtime.stop(id).await.expect("a second stop is fine");
    ensure(&*runtime, &spec).await;
    assert!(runtime.endpoint(id).is_some());
    runtime.delete(id).await.expect("delete");
    assert_eq!(runtime.endpoint(id), None);
    assert!(!runtime.inventory().await.contains(&id));
    assert!(!runtime.adopt(&spec).await, "nothing left to adopt");
    runtime.delete(id).await.expect("a second delete is fine");
}

/// A sandbox that dies by itself is reported once as `Exited`, and has no endpoint after.
pub async fn an_unexpected_exit_is_an_event<R: Runtime>(subject: &Subject<'_, R>) {
    let runtime = (subject.open)();
    let id = NotebookId::new_random();
    let spec = (subject.spec)(id);
    let mut events = runtime.events();
    ensure(&*runtime, &spec).await;
    assert_eq!(next_event(&mut events, id).await, SandboxEvent::Ready(id));
    (subject.crash)(&runtime, id);
    match next_event(&mut events, id).await {
        SandboxEvent::Exited { id: of, .. } => assert_eq!(of, id),
        other => panic!("expected an exit, got {other:?}"),
    }
    assert_eq!(runtime.endpoint(id), None);
    runtime.delete(id).await.expect("delete");
}

/// A stop is not an unexpected exit: no event.
pub async fn a_stop_sends_no_exit_event<R: Runtime>(subject: &Subject<'_, R>) {
    let runtime = (subject.open)();
    let id = NotebookId::new_random();
    let spec = (subject.spec)(id);
    ensure(&*runtime, &spec).await;
    let mut events = runtime.events();
    runtime.stop(id).await.expect("stop");
    tokio::time::sleep(Duration::from_millis(700)).await;
    loop {
        match events.try_recv() {
            Ok(SandboxEvent::Exited { id: of, reason }) if of == id => {
                panic!("a stop reported as an exit: {reason}")
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    runtime.delete(id).await.expect("delete");
}

/// A new instance (a restarted server) lists the live sandbox, adopts it, serves its
/// endpoint and reports its unexpected end like a launched one's.
pub async fn a_new_instance_adopts_and_supervises_a_live_sandbox<R: Runtime>(
    subject: &Subject<'_, R>,
) {
    let first = (subject.open)();
    let id = NotebookId::new_random();
    let spec = (subject.spec)(id);
    ensure(&*first, &spec).await;
    let second = (subject.open)();
    assert!(second.inventory().await.contains(&id));
    let mut events = second.events();
    assert!(second.adopt(&spec).await, "the live sandbox is adopted");
    assert!(second.endpoint(id).is_some());
    (subject.crash)(&second, id);
    match next_event(&mut events, id).await {
        SandboxEvent::Exited { id: of, .. } => assert_eq!(of, id),
        other => panic!("expected an exit, got {other:?}"),
    }
    second.delete(id).await.expect("delete");
    drop(first);
}

/// Everything above, in order.
pub async fn run_all<R: Runtime>(subject: &Subject<'_, R>) {
    ensure_is_idempotent_and_reports_every_step(subject).await;
    a_refusing_progress_aborts_the_start(subject).await;
    stop_removes_the_endpoint_and_the_inventory_entry(subject).await;
    an_unexpected_exit_is_an_event(subject).await;
    a_stop_sends_no_exit_event(subject).await;
    a_new_instance_adopts_and_supervises_a_live_sandbox(subject).await;
}
