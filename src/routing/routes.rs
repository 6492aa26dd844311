//! Routes: what one entry point (a service port, or a vhost host and path) sends traffic to.
//! A route holds one or more apps' services — apps that share a `HAPROXY_DEPLOYMENT_GROUP`, or
//! the same vhost and path — and splits requests among them by weight, exactly and
//! deterministically (smooth weighted round robin over the apps), before each app's own balancer
//! picks a backend. An app with no routable backend gives its share to the others.

use std::collections::BTreeMap;

use http::HeaderMap;
use serde::Serialize;

use super::Service;
use super::balance::SmoothWeighted;
use crate::cluster::AppId;

/// The weight of an app that has no `SWITCHYARD_{n}_WEIGHT` in a route where another has one.
pub const DEFAULT_WEIGHT: u32 = 100;

/// Runtime weight overrides, by route name, then app id.
pub type Overrides = BTreeMap<String, BTreeMap<AppId, u32>>;

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub members: Vec<Member>,
    /// Services that may take traffic (weight > 0 and a backend), in member order. Inline for
    /// one (nearly every route): no list allocated per route.
    live: crate::cluster::SmallList<usize, 1>,
    picker: SmoothWeighted,
    /// (lowercase header name, value, service): requests carrying it go to that service.
    canaries: Vec<(String, String, usize)>,
    pub overridden: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// Index into the table's services.
    #[serde(skip)]
    pub service: usize,
    pub app_id: AppId,
    pub weight: u32,
    pub weight_from: WeightSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightSource {
    /// No app of the route has a weight: traffic is spread per backend.
    Backends,
    /// `SWITCHYARD_{n}_WEIGHT`.
    Label,
    /// Another app has a weight label, this one not: [`DEFAULT_WEIGHT`].
    Default,
    /// Set at runtime through the admin API.
    Override,
}

impl WeightSource {
    pub fn as_str(self) -> &'static str {
        match self {
            WeightSource::Backends => "backends",
            WeightSource::Label => "label",
            WeightSource::Default => "default",
            WeightSource::Override => "override",
        }
    }
}

impl Route {
    /// Its apps and their weights, by app id: its split as a plan, a swap's record and the
    /// dashboard's marks compare it.
    pub fn weights(&self) -> BTreeMap<String, u32> {
        self.members
            .iter()
            .map(|m| (m.app_id.to_string(), m.weight))
            .collect()
    }

    /// Whether `other` (the route of the same name in another table) splits traffic otherwise:
    /// other apps or other weights. No map is built for members that are the same in the same
    /// order.
    pub fn split_differs(&self, other: &Route) -> bool {
        let same = self.members.len() == other.members.len()
            && self
                .members
                .iter()
                .zip(&other.members)
                .all(|(p, q)| p.app_id == q.app_id && p.weight == q.weight);
        !same && self.weights() != other.weights()
    }

    pub fn new(
        name: String,
        services: &[usize],
        all: &(impl std::ops::Index<usize, Output = std::sync::Arc<Service>> + ?Sized),
        overrides: &Overrides,
    ) -> Route {
        let overriding = overrides.get(&name);
        let labelled = services.iter().any(|&s| all[s].weight.is_some());
        let members: Vec<Member> = services
            .iter()
            .map(|&s| {
                let service = &all[s];
                let (weight, weight_from) = match (overriding, service.weight) {
                    (Some(o), _) => (
                        o.get(&service.key.app_id).copied().unwrap_or(0),
                        WeightSource::Override,
                    ),
                    (None, Some(w)) => (w, WeightSource::Label),
                    (None, None) if labelled => (DEFAULT_WEIGHT, WeightSource::Default),
                    (None, None) => (service.backends.len() as u32, WeightSource::Backends),
                };
                Member {
                    service: s,
                    app_id: service.key.app_id.clone(),
                    weight,
                    weight_from,
                }
            })
            .collect();
        let is_live = |m: &&Member| m.weight > 0 && !all[m.service].backends.is_empty();
        let live: crate::cluster::SmallList<usize, 1> = match &members[..] {
            [one] if is_live(&one) => crate::cluster::SmallList::from(&[one.service][..]),
            _ => members.iter().filter(is_live).map(|m| m.service).collect(),
        };
        // One live member (nearly every route) rotates over one, whatever its weight: no list
        // of weights made for it.
        let picker = match live.len() {
            0 | 1 => SmoothWeighted::new(&[1][..live.len()]),
            _ => {
                let weights: Vec<u32> = members.iter().filter(is_live).map(|m| m.weight).collect();
                SmoothWeighted::new(&weights)
            }
        };
        let canaries = services
            .iter()
            .filter_map(|&s| {
                all[s]
                    .canary
                    .as_ref()
                    .map(|(n, v)| (n.clone(), v.clone(), s))
            })
            .collect();
        Route {
            name,
            live,
            picker,
            members,
            canaries,
            overridden: overriding.is_some(),
        }
    }

    /// The service for one connection or request: a canary header's app when the request
    /// carries it (and the app has a backend), else the next in the weighted rotation. `None`
    /// when no app of the route can take traffic.
    pub fn pick(
        &self,
        headers: Option<&HeaderMap>,
        all: &(impl std::ops::Index<usize, Output = std::sync::Arc<Service>> + ?Sized),
    ) -> Option<usize> {
        if let Some(headers) = headers {
            for (name, value, service) in &self.canaries {
                let matched = headers
                    .get(name.as_str())
                    .is_some_and(|v| v.as_bytes() == value.as_bytes());
                if matched && !all[*service].backends.is_empty() {
                    return Some(*service);
                }
            }
        }
        if self.live.is_empty() {
            return None;
        }
        Some(self.live.as_slice()[self.picker.next()])
    }

    /// Some app of the route can be chosen by a request header.
    pub fn has_canaries(&self) -> bool {
        !self.canaries.is_empty()
    }

    /// A service to report a failure against when nothing can be picked.
    pub fn first(&self) -> usize {
        self.members[0].service
    }
}
