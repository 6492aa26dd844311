//! `Tasks`: an app's tasks, sorted by task id in one vector.
//!
//! A map from id to task held each task in a tree node beside a second copy of its id
//! pointer, in nodes mostly half full; the vector holds the tasks end to end. Apps have
//! tens of tasks, not thousands: a lookup by binary search and an insert that shifts the
//! tail cost about what the tree did, and the walks `compile` and the zone make over every
//! task of every app read memory in order.

use super::Task;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tasks(Vec<Task>);

impl Tasks {
    fn find(&self, id: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|t| (*t.id).cmp(id))
    }

    pub fn get(&self, id: &str) -> Option<&Task> {
        self.find(id).ok().map(|i| &self.0[i])
    }

    /// The task's id is its place: change anything but the id.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Task> {
        self.find(id).ok().map(|i| &mut self.0[i])
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.find(id).is_ok()
    }

    /// Adds `task`, or replaces the task of its id (returned).
    pub fn insert(&mut self, task: Task) -> Option<Task> {
        match self.find(&task.id) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i], task)),
            Err(i) => {
                self.0.insert(i, task);
                None
            }
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<Task> {
        self.find(id).ok().map(|i| self.0.remove(i))
    }

    /// Keeps the tasks `keep` says to (it may change anything but their ids).
    pub fn retain(&mut self, keep: impl FnMut(&mut Task) -> bool) {
        self.0.retain_mut(keep);
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// In id order.
    pub fn values(&self) -> std::slice::Iter<'_, Task> {
        self.0.iter()
    }

    /// In id order; change anything but the ids.
    pub fn values_mut(&mut self) -> std::slice::IterMut<'_, Task> {
        self.0.iter_mut()
    }

    /// The ids, in order.
    pub fn keys(&self) -> impl Iterator<Item = &super::TaskId> {
        self.0.iter().map(|t| &t.id)
    }
}

/// In id order; of two tasks with one id, the later is kept (as a map's insert would).
impl FromIterator<Task> for Tasks {
    fn from_iter<I: IntoIterator<Item = Task>>(iter: I) -> Tasks {
        let mut tasks: Vec<Task> = iter.into_iter().collect();
        tasks.sort_by(|a, b| a.id.cmp(&b.id));
        tasks.dedup_by(|later, kept| {
            let same = later.id == kept.id;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        // Collected in place from a vector of larger values (a source's parsed tasks), the
        // vector would keep their allocation: held for the model's life.
        tasks.shrink_to_fit();
        Tasks(tasks)
    }
}

impl<'a> IntoIterator for &'a Tasks {
    type Item = &'a Task;
    type IntoIter = std::slice::Iter<'a, Task>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::ops::Index<&str> for Tasks {
    type Output = Task;
    fn index(&self, id: &str) -> &Task {
        self.get(id).expect("no task of that id")
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::task;
    use super::*;

    #[test]
    fn kept_in_id_order_with_one_task_per_id() {
        let mut tasks: Tasks = [task("b", 2), task("a", 1), task("b", 3)]
            .into_iter()
            .collect();
        assert_eq!(tasks.keys().map(|k| &**k).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(tasks["b"].ports[0], 3, "the later of two with one id");
        assert!(tasks.insert(task("c", 4)).is_none());
        assert_eq!(tasks.insert(task("a", 5)).map(|t| t.ports[0]), Some(1));
        assert_eq!(
            tasks.keys().map(|k| &**k).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(tasks.remove("b").map(|t| t.ports[0]), Some(3));
        assert!(tasks.remove("b").is_none());
        tasks.retain(|t| t.ports[0] != 4);
        assert_eq!(tasks.keys().map(|k| &**k).collect::<Vec<_>>(), ["a"]);
        assert!(tasks.contains_key("a") && !tasks.contains_key("c"));
    }
}
