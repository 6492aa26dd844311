//! One app's names in the zone, added by a build's pass over the apps ([`AppPass`]): its
//! tasks' A/AAAA and SRV records under Mesos-DNS's names, its agents' labels, its share of the
//! route splits, and what it adds to the listing and the problems ([`AppShare`]).

use super::*;

/// One app's share of the zone besides its records (those go to the builder).
#[derive(Debug, Default)]
pub(super) struct AppShare {
    pub(super) listed: Option<Listed>,
    pub(super) problems: Vec<crate::routing::Problem>,
    pub(super) fail_static: bool,
}

/// What a build reads, and reuses from one app to the next, while it adds the apps' names.
pub(super) struct AppPass<'a> {
    pub(super) cluster: &'a Cluster,
    pub(super) config: &'a ZoneConfig,
    pub(super) verdicts: &'a Verdicts,
    pub(super) slave: Option<NameId>,
    pub(super) tcp: Option<NameId>,
    pub(super) udp: Option<NameId>,
    pub(super) split_targets: splits::Targets,
    /// Agents' labels, per agent rather than per task (an index in `host_list`).
    pub(super) host_labels: rustc_hash::FxHashMap<&'a str, u32>,
    pub(super) host_list: Vec<String>,
    /// Per running task of the app at hand: its tag and its agent's label.
    pub(super) pre: Vec<([u8; 5], u32, Option<IpAddr>)>,
    pub(super) pre_ids: Vec<crate::cluster::TaskId>,
    /// The running tasks of the app at hand, walked once in the model's map.
    pub(super) run: Vec<&'a Task>,
    pub(super) dcos: mesos::MarathonDcos,
}

impl<'a> AppPass<'a> {
    /// The names of `app` (Marathon task name `name`, its label `task_label`, not empty)
    /// under `framework` (`marathon.{domain}.`).
    pub(super) fn add(
        &mut self,
        b: &mut Builder,
        app: &'a App,
        framework: NameId,
        name: String,
        task_label: &str,
    ) -> AppShare {
        let (cluster, config, verdicts) = (self.cluster, self.config, self.verdicts);
        let (slave, tcp, udp) = (self.slave, self.tcp, self.udp);
        let mut share = AppShare::default();
        let run = &mut self.run;
        run.clear();
        run.extend(app.tasks.values().filter(|t| t.state == TaskState::Running));
        // What each task's own name is made of, read first in a short loop of its own (before
        // any name of the app is made): the model keeps a task's id, host, ports and addresses
        // each behind a pointer, and reading them one task after another in the long loops
        // below waits on memory for each in turn; here the reads overlap.
        let (host_labels, host_list, pre) =
            (&mut self.host_labels, &mut self.host_list, &mut self.pre);
        pre.clear();
        for &task in run.iter() {
            let host = *host_labels.entry(&task.host).or_insert_with(|| {
                host_list.push(label(&task.host, LabelRule::Rfc1123));
                host_list.len() as u32 - 1
            });
            pre.push((
                tag_bytes(&task.id),
                host,
                task.host.resolve(&cluster.agents),
            ));
            std::hint::black_box((
                task.ports.first().copied(),
                task.ip_addresses.first().copied(),
            ));
        }
        // The ids' reference counts too, now that their memory has just been read: an atomic
        // increment waits for every write before it, which in the long loop is many.
        let pre_ids = &mut self.pre_ids;
        pre_ids.clear();
        pre_ids.extend(run.iter().map(|task| task.id.clone()));
        // DC/OS's names, while the tasks' memory is in cache (not in a pass of their own).
        self.dcos.add_app(b, cluster, app, task_label, run);
        let Some(task_fqdn) = b.names.child(task_label.as_bytes(), framework) else {
            return share;
        };
        let slave_fqdn = slave.and_then(|s| b.names.child(task_label.as_bytes(), s));
        let problems = &mut share.problems;
        // `_` + a 63-character label is one too many: cut to fit, and said (never dropped).
        let mut renamed = |label: &str, service: &str, port_index: Option<usize>| {
            problems.push(crate::routing::Problem {
                app_id: app.id.clone(),
                port_index,
                severity: crate::routing::Severity::Renamed,
                reason: format!(
                    "DNS: `_{label}` is longer than 63 characters: its SRV records are under `{service}`"
                ),
            });
        };
        let (service, cut) = service_label(task_label);
        if cut {
            renamed(task_label, &service, None);
        }
        let port_labels: Vec<Option<String>> = app
            .ports
            .iter()
            .enumerate()
            .map(|(n, port)| {
                let p = label(port.name.as_deref()?, config.label_rule);
                if p.is_empty() {
                    return None;
                }
                let (l, cut) = service_label(&p);
                if cut {
                    renamed(&p, &l, Some(n));
                }
                Some(l)
            })
            .collect();
        let mut this = Listed {
            name,
            label: task_label.to_string(),
            services: Vec::new(),
            tasks: Vec::with_capacity(run.len()),
        };
        // The app's SRV owners per port and protocol: `_{task}._tcp…` and
        // `_{port}._{task}._tcp…`, made (and listed) the first time a task has the port.
        let mut owner_cache: Vec<[Option<[Option<NameId>; 2]>; 2]> =
            vec![[None, None]; app.ports.len()];
        let mut owners = |b: &mut Builder,
                          this: &mut Listed,
                          udp_proto: bool,
                          n: usize|
         -> [Option<NameId>; 2] {
            let slot = &mut owner_cache[n][udp_proto as usize];
            if let Some(owners) = *slot {
                return owners;
            }
            let proto = if udp_proto { udp } else { tcp };
            let made = match proto.and_then(|p| b.names.child(service.as_bytes(), p)) {
                None => [None, None],
                Some(app_owner) => {
                    let port_owner = port_labels[n]
                        .as_ref()
                        .and_then(|l| b.names.child(l.as_bytes(), app_owner));
                    [Some(app_owner), port_owner]
                }
            };
            for owner in made.into_iter().flatten() {
                if !this.services.contains(&owner) {
                    this.services.push(owner);
                }
            }
            *slot = Some(made);
            made
        };
        let running = || run.iter().copied();
        let follows_health = healthy_only(app, config);
        let healthy = |task: &Task| {
            task.is_routable(app.health_checks) && !verdicts.unavailable.contains(&task.id)
        };
        let everyone = follows_health && running().next().is_some() && !running().any(healthy);
        share.fail_static = everyone;
        let ttl = if follows_health {
            config.healthy.ttl
        } else {
            config.ttl
        };
        let split_targets = &mut self.split_targets;
        let tasks = running().zip(pre.iter()).zip(pre_ids.drain(..));
        for ((task, &(tag, host, agent)), id) in tasks {
            // Listed under the app's names (A/AAAA/SRV); its own name resolves either way.
            let answered = !follows_health || everyone || healthy(task);
            let addrs = task_addrs(cluster, app, task, &config.ip_sources);
            let addrs = addrs.as_slice();
            if answered {
                for &ip in addrs {
                    b.add_addr(task_fqdn, ip, ttl);
                }
                if let Some(slave_fqdn) = slave_fqdn {
                    let agent = task_addrs(cluster, app, task, &[IpSource::Host]);
                    for &ip in agent.as_slice() {
                        b.add_addr(slave_fqdn, ip, ttl);
                    }
                }
            }
            if addrs.is_empty() {
                continue;
            }
            // One name per task, so that an SRV target resolves to exactly that task:
            // `{task}-{tag}-{agent}`.
            let host = &host_list[host as usize];
            let host = &host.as_bytes()[..host.len().min(20)];
            let room = 63 - tag.len() - 1 - if host.is_empty() { 0 } else { host.len() + 1 };
            let base = task_label[..task_label.len().min(room)].trim_end_matches('-');
            let parts: [&[u8]; 5] = if host.is_empty() {
                [base.as_bytes(), b"-", &tag, b"", b""]
            } else {
                [base.as_bytes(), b"-", &tag, b"-", host]
            };
            let Some(target) = b.names.child_joined_lower(&parts, framework) else {
                continue;
            };
            for &ip in addrs {
                b.add_addr(target, ip, ttl);
            }
            this.tasks.push(ListedTask { id, target, agent });
            for (n, port) in app.ports.iter().enumerate() {
                let number = match app.networking {
                    Networking::Container => port
                        .container_port
                        .filter(|&p| p != 0)
                        .or(task.ports.get(n).copied()),
                    Networking::Host => task.ports.get(n).copied(),
                };
                let Some(number) = number else { continue };
                if !answered {
                    continue;
                }
                let protocols: &'static [&'static str] = match port.protocol {
                    Protocol::Tcp => &["_tcp"],
                    Protocol::Udp => &["_udp"],
                    Protocol::TcpUdp => &["_tcp", "_udp"],
                };
                if !split_targets.is_empty()
                    && let Some(t) = split_targets.get_mut(&(app.id.clone(), n))
                {
                    t.push(splits::Target {
                        port: number,
                        target,
                        protocols,
                        ttl,
                    });
                }
                for proto in protocols {
                    let owners = owners(b, &mut this, *proto != "_tcp", n);
                    for owner in owners.into_iter().flatten() {
                        b.add_srv(owner, 1, number, target, ttl, false);
                    }
                }
            }
        }
        share.listed = Some(this);
        share
    }
}
