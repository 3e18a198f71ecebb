//! The notebook service: the store is the truth, and an in-memory index of every notebook
//! (built at boot, updated after each committed write) serves reads without a query.
//! All writes go through [`NotebookService::mutate`], one at a time per process; the store's
//! version check refuses a write made against a stale copy.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use atelier_domain::{
    Flavor, Image, ImageId, Notebook, NotebookEvent, NotebookId, NotebookStatus, ProjectId, UserId,
    events,
};
use atelier_store::Store;

use crate::clock::Clock;
use crate::error::ControlError;

/// Told of every committed change of a notebook.
pub type Observer = Box<dyn Fn(&Arc<Notebook>) + Send + Sync>;

type ProjectKey = (ProjectId, i64, NotebookId);

#[derive(Default)]
struct NotebookIndex {
    by_id: HashMap<NotebookId, Arc<Notebook>>,
    /// A project's notebooks in creation order.
    by_project: BTreeMap<ProjectKey, Arc<Notebook>>,
    /// How many notebooks each project has, and each user in each project: an unfiltered
    /// list reads its total here instead of counting.
    per_project: HashMap<ProjectId, usize>,
    per_owner: HashMap<(ProjectId, UserId), usize>,
}

impl NotebookIndex {
    fn insert(&mut self, notebook: Arc<Notebook>) {
        self.remove(&notebook.id);
        let key = (notebook.project_id.clone(), notebook.create_at, notebook.id);
        self.by_project.insert(key, notebook.clone());
        *self
            .per_project
            .entry(notebook.project_id.clone())
            .or_default() += 1;
        *self
            .per_owner
            .entry((notebook.project_id.clone(), notebook.user_id.clone()))
            .or_default() += 1;
        self.by_id.insert(notebook.id, notebook);
    }

    fn remove(&mut self, id: &NotebookId) {
        if let Some(old) = self.by_id.remove(id) {
            self.by_project
                .remove(&(old.project_id.clone(), old.create_at, old.id));
            if let Some(count) = self.per_project.get_mut(&old.project_id) {
                *count = count.saturating_sub(1);
            }
            if let Some(count) = self
                .per_owner
                .get_mut(&(old.project_id.clone(), old.user_id.clone()))
            {
                *count = count.saturating_sub(1);
            }
        }
    }

    fn project_range(
        &self,
        project: &ProjectId,
    ) -> impl DoubleEndedIterator<Item = &Arc<Notebook>> {
        let low = (project.clone(), i64::MIN, NotebookId::min());
        let high = (project.clone(), i64::MAX, NotebookId::max());
        self.by_project
            .range(low..=high)
            .map(|(_, notebook)| notebook)
    }
}

/// Which notebooks of a project a list shows.
pub enum ListFilter<'a, F> {
    /// All of the project's, or one owner's: the total comes from the counters.
    Owner(Option<&'a UserId>),
    /// Anything else: every notebook is tested.
    Predicate(F),
}

pub struct NotebookService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    index: RwLock<NotebookIndex>,
    write_lock: tokio::sync::Mutex<()>,
    flavors: Vec<Flavor>,
    builtin_images: Vec<Arc<Image>>,
    /// DEDICATED images (registered or saved, in any status), by id.
    images: RwLock<HashMap<ImageId, Arc<Image>>>,
    /// Called with every notebook after a committed change (lease keeper, orchestrator).
    observers: RwLock<Vec<Observer>>,
    /// Every event after its commit (progress streams).
    events: tokio::sync::broadcast::Sender<Arc<NotebookEvent>>,
}

impl NotebookService {
    pub async fn load(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        flavors: Vec<Flavor>,
    ) -> Result<NotebookService, ControlError> {
        let mut index = NotebookIndex::default();
        for notebook in store.list_notebooks().await? {
            index.insert(Arc::new(notebook));
        }
        let images = store
            .list_images()
            .await?
            .into_iter()
            .map(|image| (image.id, Arc::new(image)))
            .collect();
        Ok(NotebookService {
            store,
            clock,
            index: RwLock::new(index),
            write_lock: tokio::sync::Mutex::new(()),
            flavors,
            builtin_images: Image::builtin().into_iter().map(Arc::new).collect(),
            images: RwLock::new(images),
            observers: RwLock::new(Vec::new()),
            events: tokio::sync::broadcast::channel(4096).0,
        })
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn observe(&self, observer: Observer) {
        self.observers.write().expect("poisoned").push(observer);
    }

    fn notify(&self, notebook: &Arc<Notebook>) {
        for observer in self.observers.read().expect("poisoned").iter() {
            observer(notebook);
        }
    }

    pub fn flavors(&self) -> &[Flavor] {
        &self.flavors
    }

    pub fn flavor(&self, id: &str) -> Option<&Flavor> {
        self.flavors.iter().find(|f| f.id == id)
    }

    /// Images visible to a project: the built-in catalogue and the project's own.
    pub fn images(&self, project: &ProjectId) -> Vec<Arc<Image>> {
        let mut images: Vec<Arc<Image>> = self.builtin_images.clone();
        let own = self.images.read().expect("poisoned");
        let mut own: Vec<Arc<Image>> = own
            .values()
            .filter(|image| image.project_id.as_deref() == Some(project.as_str()))
            .filter(|image| image.status != "DELETED")
            .cloned()
            .collect();
        own.sort_by_key(|image| (image.create_at, image.id));
        images.extend(own);
        images
    }

    /// An image by id, including deleted ones (a notebook keeps showing the image it was
    /// created with).
    pub fn image(&self, project: &ProjectId, id: &ImageId) -> Option<Arc<Image>> {
        if let Some(image) = self.builtin_images.iter().find(|image| image.id == *id) {
            return Some(image.clone());
        }
        self.images
            .read()
            .expect("poisoned")
            .get(id)
            .filter(|image| image.project_id.as_deref() == Some(project.as_str()))
            .cloned()
    }

    pub async fn insert_image(&self, image: Image) -> Result<Arc<Image>, ControlError> {
        let _guard = self.write_lock.lock().await;
        self.store.insert_image(&image).await?;
        let image = Arc::new(image);
        self.images
            .write()
            .expect("poisoned")
            .insert(image.id, image.clone());
        Ok(image)
    }

    pub async fn update_image(&self, image: Image) -> Result<Arc<Image>, ControlError> {
        let _guard = self.write_lock.lock().await;
        self.store.update_image(&image).await?;
        let image = Arc::new(image);
        self.images
            .write()
            .expect("poisoned")
            .insert(image.id, image.clone());
        Ok(image)
    }

    pub fn get(&self, project: &ProjectId, id: &NotebookId) -> Result<Arc<Notebook>, ControlError> {
        let index = self.index.read().expect("poisoned");
        match index.by_id.get(id) {
            Some(notebook) if notebook.project_id == *project => Ok(notebook.clone()),
            _ => Err(ControlError::NotebookNotFound),
        }
    }

    pub fn get_any(&self, id: &NotebookId) -> Option<Arc<Notebook>> {
        self.index.read().expect("poisoned").by_id.get(id).cloned()
    }

    /// Every notebook (boot-time reconciliation, lease keeper rebuild).
    pub fn all(&self) -> Vec<Arc<Notebook>> {
        self.index
            .read()
            .expect("poisoned")
            .by_id
            .values()
            .cloned()
            .collect()
    }

    /// A project's notebooks passing `keep`, newest first.
    pub fn scan_project(
        &self,
        project: &ProjectId,
        mut keep: impl FnMut(&Notebook) -> bool,
    ) -> Vec<Arc<Notebook>> {
        let index = self.index.read().expect("poisoned");
        index
            .project_range(project)
            .rev()
            .filter(|notebook| keep(notebook))
            .cloned()
            .collect()
    }

    /// One page of a project's notebooks, newest first, and how many match in all; only the
    /// page is cloned out of the index.
    pub fn page_project<F: FnMut(&Notebook) -> bool>(
        &self,
        project: &ProjectId,
        filter: ListFilter<'_, F>,
        offset: usize,
        limit: usize,
    ) -> (usize, Vec<Arc<Notebook>>) {
        let index = self.index.read().expect("poisoned");
        let mut page = Vec::with_capacity(limit.min(1000));
        match filter {
            ListFilter::Owner(owner) => {
                let total = match owner {
                    None => index.per_project.get(project).copied().unwrap_or(0),
                    Some(owner) => index
                        .per_owner
                        .get(&(project.clone(), owner.clone()))
                        .copied()
                        .unwrap_or(0),
                };
                let matching = index
                    .project_range(project)
                    .rev()
                    .filter(|nb| owner.is_none_or(|owner| nb.user_id == *owner));
                page.extend(matching.skip(offset).take(limit).cloned());
                (total, page)
            }
            ListFilter::Predicate(mut keep) => {
                let mut total = 0;
                for notebook in index.project_range(project).rev() {
                    if !keep(notebook) {
                        continue;
                    }
                    if total >= offset && page.len() < limit {
                        page.push(notebook.clone());
                    }
                    total += 1;
                }
                (total, page)
            }
        }
    }

    pub fn count_user_notebooks(&self, user: &UserId, keep: impl Fn(&Notebook) -> bool) -> usize {
        self.index
            .read()
            .expect("poisoned")
            .by_id
            .values()
            .filter(|n| n.user_id == *user && keep(n))
            .count()
    }

    /// Events of every notebook as they are committed. A receiver that lags behind reads
    /// what it missed from the store ([`Store::list_events`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<NotebookEvent>> {
        self.events.subscribe()
    }

    fn publish(&self, events: Vec<NotebookEvent>) {
        for event in events {
            // No receiver is fine: nobody is watching.
            let _ = self.events.send(Arc::new(event));
        }
    }

    pub async fn insert(&self, mut notebook: Notebook) -> Result<Arc<Notebook>, ControlError> {
        let _guard = self.write_lock.lock().await;
        let (events, last) = events::number(
            notebook.id,
            notebook.event_seq,
            notebook.create_at,
            notebook.status,
            events::derive(None, &notebook),
        );
        notebook.event_seq = last;
        self.store.insert_notebook(&notebook, &events).await?;
        let notebook = Arc::new(notebook);
        self.index
            .write()
            .expect("poisoned")
            .insert(notebook.clone());
        self.notify(&notebook);
        self.publish(events);
        Ok(notebook)
    }

    /// Applies `change` to the current copy of the notebook and commits it. `change` returning
    /// an error leaves everything as it was.
    pub async fn mutate<T>(
        &self,
        id: &NotebookId,
        change: impl FnOnce(&mut Notebook) -> Result<T, ControlError>,
    ) -> Result<(Arc<Notebook>, T), ControlError> {
        let _guard = self.write_lock.lock().await;
        let current = self.get_any(id).ok_or(ControlError::NotebookNotFound)?;
        let mut next = (*current).clone();
        let outcome = change(&mut next)?;
        Ok((self.commit_locked(current, next).await?, outcome))
    }

    /// Starts saving a notebook as `image`, in one step: `change` (the notebook's move to
    /// SNAPSHOTTING) is admitted on the current copy, no other image of the project may be
    /// `conflicts` with it, and only then are the image and the notebook written. A refusal
    /// leaves both as they were.
    pub async fn begin_image_save(
        &self,
        id: &NotebookId,
        image: Image,
        conflicts: impl Fn(&Image) -> bool,
        change: impl FnOnce(&mut Notebook) -> Result<(), ControlError>,
    ) -> Result<(Arc<Notebook>, Arc<Image>), ControlError> {
        let _guard = self.write_lock.lock().await;
        let current = self.get_any(id).ok_or(ControlError::NotebookNotFound)?;
        let mut next = (*current).clone();
        change(&mut next)?;
        let project = current.project_id.clone();
        if let Some(taken) = self
            .images(&project)
            .iter()
            .find(|other| other.id != image.id && conflicts(other))
        {
            return Err(ControlError::ImageConflict(taken.swr_path.clone()));
        }
        self.store.insert_image(&image).await?;
        let image = Arc::new(image);
        self.images
            .write()
            .expect("poisoned")
            .insert(image.id, image.clone());
        let notebook = self.commit_locked(current, next).await?;
        Ok((notebook, image))
    }

    /// Changes an image if `change` says so (returns true), under the write lock: a change
    /// decided on the current copy (a save ending only if its image is still being saved).
    pub async fn change_image(
        &self,
        id: &ImageId,
        change: impl FnOnce(&mut Image) -> bool,
    ) -> Result<Option<Arc<Image>>, ControlError> {
        let _guard = self.write_lock.lock().await;
        let Some(current) = self.images.read().expect("poisoned").get(id).cloned() else {
            return Ok(None);
        };
        let mut next = (*current).clone();
        if !change(&mut next) {
            return Ok(None);
        }
        next.update_at = self.clock.now_ms().max(current.update_at);
        self.store.update_image(&next).await?;
        let next = Arc::new(next);
        self.images
            .write()
            .expect("poisoned")
            .insert(next.id, next.clone());
        Ok(Some(next))
    }

    /// Every project's own images (boot-time reconciliation).
    pub fn all_images(&self) -> Vec<Arc<Image>> {
        self.images
            .read()
            .expect("poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Commits `next`, a changed copy of `current`, with the events the change makes. The
    /// caller holds the write lock.
    async fn commit_locked(
        &self,
        current: Arc<Notebook>,
        mut next: Notebook,
    ) -> Result<Arc<Notebook>, ControlError> {
        if next == *current {
            return Ok(current);
        }
        next.update_at = self.clock.now_ms().max(current.update_at);
        let (events, last) = events::number(
            next.id,
            current.event_seq,
            next.update_at,
            next.status,
            events::derive(Some(&current), &next),
        );
        next.event_seq = last;
        next.version = self.store.update_notebook(&next, &events).await?;
        let next = Arc::new(next);
        self.index.write().expect("poisoned").insert(next.clone());
        self.notify(&next);
        self.publish(events);
        Ok(next)
    }

    /// Adds events that no change of the record makes (what a hook did), after the
    /// notebook's last, with its current status. Nothing else of the record changes.
    pub async fn record_events(
        &self,
        id: &NotebookId,
        drafts: Vec<events::EventDraft>,
    ) -> Result<(), ControlError> {
        let _guard = self.write_lock.lock().await;
        let current = self.get_any(id).ok_or(ControlError::NotebookNotFound)?;
        let mut next = (*current).clone();
        let (events, last) = events::number(
            next.id,
            current.event_seq,
            self.clock.now_ms().max(current.update_at),
            next.status,
            drafts,
        );
        next.event_seq = last;
        next.version = self.store.update_notebook(&next, &events).await?;
        self.index.write().expect("poisoned").insert(Arc::new(next));
        self.publish(events);
        Ok(())
    }

    /// Removes a deleted notebook for good.
    pub async fn remove(&self, id: &NotebookId) -> Result<(), ControlError> {
        let _guard = self.write_lock.lock().await;
        self.store.delete_notebook(id).await?;
        let removed = {
            let mut index = self.index.write().expect("poisoned");
            let removed = index.by_id.get(id).cloned();
            index.remove(id);
            removed
        };
        if let Some(removed) = removed {
            let mut gone = (*removed).clone();
            gone.status = NotebookStatus::Deleted;
            // The last event is not stored (the events go with the notebook): only streams
            // watching now see it.
            let (events, last) = events::number(
                gone.id,
                gone.event_seq,
                self.clock.now_ms(),
                gone.status,
                events::derive(Some(&removed), &gone),
            );
            gone.event_seq = last;
            self.notify(&Arc::new(gone));
            self.publish(events);
        }
        Ok(())
    }
}
