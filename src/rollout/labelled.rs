//! Rollouts declared as labels: `SWITCHYARD_{n}_ROLLOUT` on a canary app starts its plan once
//! per deployment, and a running label rollout whose label left its route is aborted (the
//! group-wide way to stop one through Marathon). Run on every controller pass over the live
//! table (`Rollouts::tick` in `mod.rs`).

use std::collections::BTreeMap;

use super::{Origin, Rollout, Rollouts, State, candidates, gate, unix_ms};
use crate::routing::RoutingTable;

impl Rollouts {
    /// Starts the plans of `SWITCHYARD_{n}_ROLLOUT` labels not started yet (each deployment's
    /// plan once; a running rollout is never replaced by one); true when the book changed.
    pub(super) fn labels(
        &self,
        table: &RoutingTable,
        book: &mut BTreeMap<String, Rollout>,
    ) -> bool {
        let mut changed = false;
        let mut labelled = BTreeMap::new();
        for route in &table.routes {
            let Some((plan, started_at)) = route.members.iter().find_map(|m| {
                let s = &table.services[m.service];
                Some((s.rollout.clone()?, s.deployment.started_at.clone()))
            }) else {
                continue;
            };
            let resolved = gate::resolve(&plan, &candidates(table, route));
            let canary = resolved
                .as_ref()
                .map(|(c, _)| c.to_string())
                .unwrap_or_default();
            let key = format!(
                "{canary}\n{}\n{}",
                started_at.unwrap_or_default(),
                plan.written()
            );
            labelled.insert(route.name.clone(), key.clone());
            let existing = book.get(&route.name);
            if existing.is_some_and(|r| r.state == State::Running) {
                continue;
            }
            if existing.is_some_and(|r| r.label_key.as_deref() == Some(key.as_str())) {
                continue;
            }
            let r = match resolved {
                Ok((canary, baseline)) => self.begin(
                    &route.name,
                    plan,
                    Origin::Label,
                    canary,
                    baseline,
                    Some(key),
                ),
                Err(why) => {
                    self.event(&route.name, "refused", format!("rollout label: {why}"));
                    Rollout {
                        route: route.name.clone(),
                        state: State::Refused,
                        origin: Origin::Label,
                        canary: None,
                        baseline: None,
                        step: 0,
                        steps: plan.steps.len(),
                        share: 0,
                        plan,
                        started_unix_ms: 0,
                        step_started_unix_ms: 0,
                        finished_unix_ms: None,
                        last_verdict: None,
                        reason: Some(why),
                        released: false,
                        label_key: Some(key),
                        window: None,
                        measured_since_unix_ms: 0,
                    }
                }
            };
            book.insert(route.name.clone(), r);
            changed = true;
        }
        // The label is the plan: a running label rollout whose label left its route (removed,
        // changed, or the canary app deleted) is aborted — the group-wide way to stop one
        // through Marathon. A route not in the table (before the first sync) is left alone.
        let now = unix_ms();
        for (route, r) in book.iter_mut() {
            let gone = r.origin == Origin::Label
                && r.state == State::Running
                && table.routes.iter().any(|x| x.name == *route)
                && labelled.get(route) != r.label_key.as_ref();
            if gone {
                r.state = State::Aborted;
                r.share = 0;
                r.finished_unix_ms = Some(now);
                r.reason = Some("the plan label was removed or changed".into());
                let canary = r.canary.clone().map(|c| c.to_string()).unwrap_or_default();
                self.event(
                    route,
                    "aborted",
                    format!("label gone: {canary} back to 0 %"),
                );
                changed = true;
            }
        }
        // A refused label that is gone (fixed or removed) is forgotten.
        let before = book.len();
        book.retain(|route, r| r.state != State::Refused || labelled.contains_key(route));
        changed | (book.len() != before)
    }
}
