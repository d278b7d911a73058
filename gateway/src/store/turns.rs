//! Taking turns at writing. SQLite lets one write transaction into a file at a time but
//! does not queue the others: a connection that finds the lock taken sleeps and tries
//! again until its busy timeout, so a writer that commits back to back starves the rest
//! (measured: housekeeping ran two rounds while ingest committed 20 000 groups), and a
//! step that waits past the timeout fails. So every connection of this process to one
//! store file takes a [`Turn`] before it writes, first come, first served.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

/// The queue of writers of one store file.
#[derive(Debug, Default)]
pub struct Turns {
    /// The next ticket to hand out, and the ticket being served.
    tickets: Mutex<(u64, u64)>,
    served: Condvar,
}

/// The right to write, until dropped.
#[derive(Debug)]
pub struct Turn {
    turns: Arc<Turns>,
}

impl Turns {
    /// The queue of the store file at `path`: one per file in this process.
    pub fn of(path: &Path) -> Arc<Turns> {
        static QUEUES: Mutex<Option<HashMap<PathBuf, Weak<Turns>>>> = Mutex::new(None);
        let key = path.canonicalize().unwrap_or_else(|_| path.to_owned());
        let mut queues = QUEUES.lock().unwrap_or_else(|p| p.into_inner());
        let queues = queues.get_or_insert_with(HashMap::new);
        queues.retain(|_, turns| turns.strong_count() > 0);
        if let Some(turns) = queues.get(&key).and_then(Weak::upgrade) {
            return turns;
        }
        let turns = Arc::new(Turns::default());
        queues.insert(key, Arc::downgrade(&turns));
        turns
    }

    /// Waits for this caller's turn.
    pub fn take(self: &Arc<Self>) -> Turn {
        let mut tickets = self.lock();
        let mine = tickets.0;
        tickets.0 += 1;
        while tickets.1 != mine {
            tickets = self.served.wait(tickets).unwrap_or_else(|p| p.into_inner());
        }
        Turn {
            turns: self.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (u64, u64)> {
        self.tickets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.turns.lock().1 += 1;
        self.turns.served.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_are_served_in_the_order_they_came() {
        let dir = tempfile::tempdir().unwrap();
        let turns = Turns::of(dir.path());
        assert!(Arc::ptr_eq(&turns, &Turns::of(dir.path())), "one per file");
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = turns.take();
        let waiting: Vec<_> = (0..4)
            .map(|i| {
                let (queue, order) = (turns.clone(), order.clone());
                let handle = std::thread::spawn(move || {
                    let _turn = queue.take();
                    order.lock().unwrap().push(i);
                });
                // Each is queued before the next comes.
                while turns.lock().0 < i + 2 {
                    std::thread::yield_now();
                }
                handle
            })
            .collect();
        drop(first);
        waiting.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
    }
}
