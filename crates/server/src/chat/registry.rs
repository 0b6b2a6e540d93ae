//! The answers in progress, by session: at most one per session, and a way to stop it.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;

struct Running {
    stop: watch::Sender<bool>,
    finished: watch::Receiver<bool>,
}

/// Session id → the answer streaming into it.
#[derive(Clone, Default)]
pub struct ActiveAnswers(Arc<Mutex<HashMap<i32, Running>>>);

/// The right to stream into one session, held by the answer task until its answer is saved.
pub struct Claim {
    session_id: i32,
    registry: ActiveAnswers,
    stop: watch::Receiver<bool>,
    finished: watch::Sender<bool>,
}

impl ActiveAnswers {
    /// `None` while another answer is streaming into the session.
    pub fn claim(&self, session_id: i32) -> Option<Claim> {
        let mut map = self.0.lock().expect("registry lock");
        if map.contains_key(&session_id) {
            return None;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let (finished_tx, finished_rx) = watch::channel(false);
        map.insert(session_id, Running { stop: stop_tx, finished: finished_rx });
        Some(Claim { session_id, registry: self.clone(), stop: stop_rx, finished: finished_tx })
    }

    pub fn is_running(&self, session_id: i32) -> bool {
        self.0.lock().expect("registry lock").contains_key(&session_id)
    }

    /// Stops the session's answer, if any, and returns once it has been saved. False when
    /// nothing was streaming.
    pub async fn stop(&self, session_id: i32) -> bool {
        let finished = {
            let map = self.0.lock().expect("registry lock");
            let Some(running) = map.get(&session_id) else { return false };
            running.stop.send_replace(true);
            running.finished.clone()
        };
        let mut finished = finished;
        // An error means the task is gone (it dropped its claim): finished too.
        let _ = finished.wait_for(|done| *done).await;
        true
    }
}

impl Claim {
    /// Resolves when a stop is requested.
    pub async fn stopped(&mut self) {
        let _ = self.stop.wait_for(|stop| *stop).await;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.registry.0.lock().expect("registry lock").remove(&self.session_id);
        self.finished.send_replace(true);
    }
}
